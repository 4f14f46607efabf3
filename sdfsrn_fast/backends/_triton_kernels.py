"""The triton backend's kernels (CUDA; the CPU under ``TRITON_INTERPRET=1`` for tests). Importing this module imports
triton; :mod:`.triton` (host code, tile policy) imports it on the backend's first use.

- :func:`_render_fwd_kernel`: one program takes ``BLOCK_R`` rays of one shape and walks their samples in chunks of
  ``BLOCK_S`` (``BLOCK_M = BLOCK_R * BLOCK_S`` points a tile): the points from (origin, direction, near, far,
  jitter), the latent share of layers 1 and 3 (``W_z z + b``, per shape, from the host) plus the xyz parts as three
  FMAs, the three H x H layers as ``tl.dot`` on ``HT``-wide tiles of the hidden dimension (a tuple of
  ``[BLOCK_M, HT]`` tiles, ``out_j = sum_i h_i W_ij``), the output layer as a row sum, and an online logsumexp per
  ray (FlashAttention's pattern). It writes the per-sample SDF, the per-ray logsumexp and the silhouette; no hidden
  activation reaches global memory.
- :func:`_crossing_kernel` (``surface=True``): each ray's first crossing from the SDF values the forward stored.
- :func:`_keep_kernel`: the backward's sample selection, as :func:`~.fused.kept_indices`, in two launches.
- :func:`_render_bwd_kernel`: at the kept samples, the decoder recomputed and ``g = dL/ds`` backpropagated by hand
  (``d_l = (d_{l+1} W_{l+1}) * act'(h_l)``), writing per sample ``h_0..h_3``, ``d_0..d_3`` (one ``[n, 8 H]``
  buffer in the dot dtype) and a row ``[one-hot of its shape | x | y | z | g]``; the sums over samples (weight,
  bias and latent gradients) are cuBLAS matmuls of those tiles on the host (tiny-cuda-nn's split: at H = 256 the
  weight gradients do not fit on chip, docs/performance.md).

Precision (``DOT``, :func:`_operand`): IEEE float32/float64 dots (the interpreter only: on CUDA they spill), tf32
rounded to nearest (``tl.dot``'s tf32 drops the low bits, which made silhouettes err 4.8x the cuBLAS-tf32
reference's on an H200), bfloat16, float16, and bfloat16 emulated in float32 for the interpreter (whose bfloat16
``tl.dot`` is wrong, triton #11584). Accumulators, the xyz FMAs, the output layer and the soft minimum are in the
accumulator dtype ``ACC``. The register and spill figures quoted below are ``python -m sdfsrn_fast.bench
--gpu-compile``'s (cubins compiled for sm_90 and sm_80 without a GPU, triton 3.9, 2026-11-29).
"""

import triton
import triton.language as tl


@triton.jit
def _act(x, ACT: tl.constexpr, BETA):
    """ReLU (ACT 0), softplus(x, beta) with torch's threshold (beta x > 20: x; ACT 1) or smoothrelu (ACT 2:
    (x + k)^2 / (4k) on |x| < k = 2 / beta, ReLU outside), numbered as models.ACTIVATIONS."""
    if ACT == 0:
        return tl.maximum(x, 0.0)
    elif ACT == 2:
        k = 2.0 / tl.cast(BETA, x.dtype)  # in x's dtype: float64 runs exact to its round-off
        c = tl.minimum(tl.maximum(x + k, 0.0), 2.0 * k)
        return c * c * (0.25 / k) + tl.maximum(x - k, 0.0)
    else:
        bx = x * BETA
        e = tl.exp(tl.minimum(bx, 20.0))
        log1p = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))  # log1p, accurate for small e
        return tl.where(bx > 20.0, x, log1p / BETA)


@triton.jit
def _act_grad(h, ACT: tl.constexpr, BETA):
    """act'(a) read off h = act(a): ReLU 1[h > 0]; softplus sigmoid(beta a) = 1 - exp(-beta h); smoothrelu
    min(sqrt(h / k), 1)."""
    if ACT == 0:
        return (h > 0).to(h.dtype)
    elif ACT == 2:
        return tl.minimum(tl.sqrt(tl.maximum(h, 0.0) * (0.5 * tl.cast(BETA, h.dtype))), 1.0)
    else:
        return 1.0 - tl.exp(-BETA * h)


@triton.jit
def _round_bf16(x):
    """x (float32) rounded to the nearest bfloat16 value, ties to even, kept in float32 (the emulation)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _operand(x, DOT: tl.constexpr):
    """A dot operand in the dot's precision. DOT: 0 IEEE (the interpreter), in the input's dtype; 1 tf32 (rounded
    to nearest, kept in float32); 2 bfloat16, 3 float16, 4 bfloat16 emulated in float32 (the interpreter)."""
    if DOT == 2:
        return x.to(tl.bfloat16)
    elif DOT == 3:
        return x.to(tl.float16)
    elif DOT == 4:
        return _round_bf16(x.to(tl.float32))
    elif DOT == 1:  # tl.dot's tf32 drops the low mantissa bits (triton #4574): round them as cuBLAS does
        return tl.inline_asm_elementwise("cvt.rna.tf32.f32 $0, $1;", "=r, r", [x], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return x


@triton.jit
def _dot(a, b, acc, DOT: tl.constexpr):
    if DOT == 1:
        return tl.dot(a, b, acc, input_precision="tf32")
    elif DOT == 0 or DOT == 4:  # out_dtype: float64 accumulators (triton 3.6 assumed float32 without it)
        return tl.dot(a, b, acc, input_precision="ieee", out_dtype=acc.dtype)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def _share(C, W_P, b, px, py, pz, cols, H: tl.constexpr):
    """[BLOCK_M, HT] pre-activation of a layer's latent + xyz part for hidden columns ``cols``:
    ``C[b, cols] + p . W_P[cols, :]`` (C: per-shape ``W_z z + bias`` [B, H]; W_P: the xyz columns [H, 3]).
    A program's points all belong to shape ``b`` (see the kernels): the share is one row, broadcast
    (a per-point gather of it cost 76 more registers and a spill at H = 128, sm_90 bf16)."""
    cm = cols < H
    share = tl.load(C + b * H + cols, mask=cm, other=0.0)[None, :]
    wx = tl.load(W_P + cols * 3 + 0, mask=cm, other=0.0)
    wy = tl.load(W_P + cols * 3 + 1, mask=cm, other=0.0)
    wz = tl.load(W_P + cols * 3 + 2, mask=cm, other=0.0)
    return share + px[:, None] * wx[None, :] + py[:, None] * wy[None, :] + pz[:, None] * wz[None, :]


@triton.jit
def _weights(W, k0, K: tl.constexpr, j, HT: tl.constexpr, H: tl.constexpr, TRANSPOSE: tl.constexpr,
             MASK: tl.constexpr):
    """Rows [k0, k0 + K) of column block j (HT wide) of W (TRANSPOSE) or of W^T (W[out, in] read as [in, out]):
    [K, HT], zero past H (MASK: whether rows or columns may pass H)."""
    in_r = k0 + tl.arange(0, K)
    out_c = j * HT + tl.arange(0, HT)
    if TRANSPOSE:
        ptr = W + in_r[:, None] * H + out_c[None, :]
    else:
        ptr = W + out_c[None, :] * H + in_r[:, None]
    if MASK:
        w = tl.load(ptr, mask=(in_r[:, None] < H) & (out_c[None, :] < H), other=0.0)
    else:
        w = tl.load(ptr)
    return w


@triton.jit
def _weight_tile(W, i, j, HT: tl.constexpr, H: tl.constexpr, TRANSPOSE: tl.constexpr):
    """Tile [i, j] [HT, HT] of W (TRANSPOSE) or of W^T."""
    return _weights(W, i * HT, HT, j, HT, H, TRANSPOSE, H % HT != 0)


@triton.jit
def _joined_block(W, j, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr, TRANSPOSE: tl.constexpr):
    """Column block j of W (TRANSPOSE) or of W^T for the joined operand of :func:`_cat`: [KP, HT], KP = NT HT
    with 3 tiles padded to 4 (zero rows past H)."""
    return _weights(W, 0, (4 if NT == 3 else NT) * HT, j, HT, H, TRANSPOSE, True)


@triton.jit
def _cat(h, NT: tl.constexpr):
    """The NT [M, HT] tiles of h side by side: [M, NT HT] (NT 1, 2 or 4)."""
    if NT == 1:
        out = h[0]
    elif NT == 2:
        t = tl.permute(tl.join(h[0], h[1]), (0, 2, 1))
        out = tl.reshape(t, (t.shape[0], 2 * t.shape[2]))
    else:
        h3 = h[3] if NT == 4 else tl.zeros_like(h[0])  # NT 3: a zero tile (the weight block is zero there too)
        t = tl.permute(tl.join(tl.join(h[0], h[1]), tl.join(h[2], h3)), (0, 3, 2, 1))
        out = tl.reshape(t, (t.shape[0], 4 * t.shape[3]))
    return out


@triton.jit
def _layer(h, W, j, ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, HT: tl.constexpr,
           NT: tl.constexpr, H: tl.constexpr, TRANSPOSE: tl.constexpr, LOADS: tl.constexpr):
    """Output tile j [BLOCK_M, HT] of ``h @ W^T`` (TRANSPOSE False; forward) or ``h @ W`` (True; backward),
    W [H, H] row-major, h a tuple of NT input tiles already in the dot's precision (zero-padded past H).

    LOADS, how the weights reach the dots (sm_90 SASS of the H = 256 forward, ``--gpu-compile``): 0, tile by tile:
    load a tile, store it to shared memory, run its dot, wait, NT times in turn, each load's latency from L2
    (hundreds of cycles) before a dot of about 256 cycles; 1, grouped: the NT tiles loaded first, then NT dots,
    each still waited for; 2, joined: h side by side as one [BLOCK_M, NT HT] operand (NT <= 4) and one dot with
    the [NT HT, HT] weight block: one load latency and one wait per output tile. Spill at H = 256 on sm_90 in
    bfloat16, forward / backward: 224 / 80 B, 232 / 64 B, 120 / 96 B. ``kernel_config`` picks."""
    acc = tl.zeros([BLOCK_M, HT], dtype=ACC)
    if LOADS == 2:
        acc = _dot(_cat(h, NT), _operand(_joined_block(W, j, HT, NT, H, TRANSPOSE), DOT), acc, DOT)
    else:
        ws = ()
        if LOADS == 1:
            for i in tl.static_range(NT):
                ws = ws + (_operand(_weight_tile(W, i, j, HT, H, TRANSPOSE), DOT),)
        for i in tl.static_range(NT):
            if LOADS == 1:
                w = ws[i]
            else:
                w = _operand(_weight_tile(W, i, j, HT, H, TRANSPOSE), DOT)
            acc = _dot(h[i], w, acc, DOT)
    return acc


@triton.jit
def _bias(B, cols, H: tl.constexpr):
    return tl.load(B + cols, mask=cols < H, other=0.0)[None, :]


@triton.jit
def _store_tiles(BUF, first, end, tiles, BLOCK_M: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr,
                 H: tl.constexpr, LD: tl.constexpr):
    """Rows [first, end) of BUF [n, H] (row stride LD) from the NT tiles (rows past ``end``: the next program's)."""
    rows = first + tl.arange(0, BLOCK_M)
    r = tl.arange(0, HT)
    for j in tl.static_range(NT):
        cols = j * HT + r
        tl.store(BUF + rows[:, None] * LD + cols[None, :], tiles[j].to(BUF.dtype.element_ty),
                 mask=(rows < end)[:, None] & (cols[None, :] < H))

# Layer 1's pre-activation has no dot of its own: left alone, triton computed it in a blocked layout where each
# thread held 32 of the 128 rows, and every per-point vector (origin, direction, near, step, jitter) three times
# over: 255 registers and 900 B of spill at H = 64 (sm_90, bf16). Adding a [BLOCK_M, 16] x [16, HT] dot of
# zeros (one tiny wgmma) puts it in the accumulators' layout: 140 registers, no spill.


@triton.jit
def _layer0(b, px, py, pz, C0, W0P, ACT: tl.constexpr, BETA, ACC: tl.constexpr, DOT: tl.constexpr,
            BLOCK_M: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr):
    """h0, the first hidden layer (no dot of its own: the latent share plus the xyz FMAs), as NT dot operands."""
    r = tl.arange(0, HT)
    h0 = ()
    for j in tl.static_range(NT):
        a0 = _share(C0, W0P, b, px, py, pz, j * HT + r, H)
        if ACC == tl.float32:  # a dot of zeros into it: lays a0 out as the dots' accumulators are (see above)
            a0 = tl.dot(tl.zeros([BLOCK_M, 16], dtype=tl.bfloat16), tl.zeros([16, HT], dtype=tl.bfloat16), a0)
        h0 = h0 + (_operand(_act(a0, ACT, BETA).to(ACC), DOT),)
    return h0


@triton.jit
def _decoder_tiles(b, px, py, pz, C0, C2, W0P, W2P, W1, B1, W2H, ACT: tl.constexpr, BETA,
                   ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr, HT: tl.constexpr,
                   NT: tl.constexpr, H: tl.constexpr, STORE: tl.constexpr, H0, H1, H2, first, end,
                   LD: tl.constexpr, LOADS: tl.constexpr):
    """The first three hidden layers at BLOCK_M points; returns h2 (a tuple of NT [BLOCK_M, HT] dot operands; the
    last layer is :func:`_layer3`'s, tile by tile). h0, h1 live only until the next layer has used them;
    with STORE (the backward) each is written to rows [first, end) of H0..H2 [n, H] (row stride LD) right away."""
    r = tl.arange(0, HT)
    h0 = _layer0(b, px, py, pz, C0, W0P, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H)
    if STORE:
        _store_tiles(H0, first, end, h0, BLOCK_M, HT, NT, H, LD)
    h1 = ()
    for j in tl.static_range(NT):
        a = _layer(h0, W1, j, ACC, DOT, BLOCK_M, HT, NT, H, False, LOADS) + _bias(B1, j * HT + r, H)
        h1 = h1 + (_operand(_act(a, ACT, BETA), DOT),)
    if STORE:
        _store_tiles(H1, first, end, h1, BLOCK_M, HT, NT, H, LD)
    h2 = ()
    for j in tl.static_range(NT):
        a = (_layer(h1, W2H, j, ACC, DOT, BLOCK_M, HT, NT, H, False, LOADS)
             + _share(C2, W2P, b, px, py, pz, j * HT + r, H))
        h2 = h2 + (_operand(_act(a, ACT, BETA), DOT),)
    if STORE:
        _store_tiles(H2, first, end, h2, BLOCK_M, HT, NT, H, LD)
    return h2


@triton.jit
def _layer3(h2, W3, B3, j, ACT: tl.constexpr, BETA, ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr,
            HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr, LOADS: tl.constexpr):
    """Tile j of h3 (accumulator dtype)."""
    a = _layer(h2, W3, j, ACC, DOT, BLOCK_M, HT, NT, H, False, LOADS) + _bias(B3, j * HT + tl.arange(0, HT), H)
    return _act(a, ACT, BETA)


@triton.jit
def _crossing(sdf, t, ok, s0, S, t0_i, hit_i, prev_s, prev_t, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr):
    """One chunk of samples [BLOCK_R rays, BLOCK_S samples] (``sdf``, ``t`` flat, ``ok``: real samples) into each
    ray's first crossing so far (docs/contract.md, Surface): the chunk's first negative sample k of a ray not yet
    hit gives ``t0`` by one secant step from sample k-1 (this chunk's, or the chunk before's last, ``prev``), or
    ``t_0`` for the ray's first sample. Picking one column of a row is a masked sum: exact."""
    s2 = tl.reshape(tl.where(ok, sdf, 1.0), [BLOCK_R, BLOCK_S])  # samples that are not real never cross
    t2 = tl.reshape(t, [BLOCK_R, BLOCK_S])
    c = tl.reshape(tl.arange(0, BLOCK_R * BLOCK_S) % BLOCK_S, [BLOCK_R, BLOCK_S])
    first = tl.min(tl.where(s2 < 0, c, BLOCK_S), axis=1)  # BLOCK_S where the chunk has none
    s_k = tl.sum(tl.where(c == first[:, None], s2, 0.0), axis=1)
    t_k = tl.sum(tl.where(c == first[:, None], t2, 0.0), axis=1)
    s_p = tl.where(first == 0, prev_s, tl.sum(tl.where(c == first[:, None] - 1, s2, 0.0), axis=1))
    t_p = tl.where(first == 0, prev_t, tl.sum(tl.where(c == first[:, None] - 1, t2, 0.0), axis=1))
    at_start = (first == 0) & (s0 == 0)
    cross = tl.where(at_start, t_k, t_p + s_p * (t_k - t_p) / tl.where(at_start, 1.0, s_p - s_k))
    new = (first < BLOCK_S) & (hit_i == 0)
    last = c == tl.minimum(S - s0, BLOCK_S) - 1
    return (tl.where(new, cross, t0_i), tl.where(new, 1, hit_i), tl.sum(tl.where(last, s2, 0.0), axis=1),
            tl.sum(tl.where(last, t2, 0.0), axis=1))


@triton.jit
def _render_fwd_kernel(
    O, D, NEAR, FAR, JIT, VALID,  # rays [B*R, 3] / [B*R]  # noqa: E741 (O: origins)
    C0, C2, W0P, W2P, W1, B1, W2H, W3, B3, W4, B4,  # shares [B, H]; xyz columns [H, 3]; H x H layers; output
    SDF, LSE, SIL,  # out: [B*R, S], [B*R], [B*R]; zeros on invalid rays
    R, S, inv_tau_min, tau_min_over_tau, BETA,
    ACT: tl.constexpr, HAS_JIT: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr,
    LOADS: tl.constexpr,
):
    """Program ``tile = b cdiv(R, BLOCK_R) + j`` takes rays ``[j BLOCK_R, (j + 1) BLOCK_R)`` of shape ``b``: no
    table of valid rays, hence no ``nonzero`` and no sync on the host. A tile whose rays are all invalid only writes
    their zeros."""
    tile = tl.program_id(0)
    BLOCK_M: tl.constexpr = BLOCK_R * BLOCK_S
    per_shape = tl.cdiv(R, BLOCK_R)
    b = (tile // per_shape).to(tl.int64)
    first = b * R + (tile % per_shape) * BLOCK_R
    end = b * R + R
    m = tl.arange(0, BLOCK_M)
    ray = first + m // BLOCK_S
    in_range = ray < end
    ray_ok = in_range & (tl.load(VALID + ray, mask=in_range, other=0) != 0)
    if tl.max(ray_ok.to(tl.int32), axis=0) == 0:  # no valid ray: zeros, and no other work
        for s0 in range(0, S, BLOCK_S):
            k = s0 + m % BLOCK_S
            tl.store(SDF + ray * S + k, tl.zeros([BLOCK_M], dtype=SDF.dtype.element_ty), mask=in_range & (k < S))
        ray_r = first + tl.arange(0, BLOCK_R)
        tl.store(LSE + ray_r, tl.zeros([BLOCK_R], dtype=LSE.dtype.element_ty), mask=ray_r < end)
        tl.store(SIL + ray_r, tl.zeros([BLOCK_R], dtype=SIL.dtype.element_ty), mask=ray_r < end)
    else:
        ox = tl.load(O + ray * 3 + 0, mask=ray_ok, other=0.0).to(ACC)
        oy = tl.load(O + ray * 3 + 1, mask=ray_ok, other=0.0).to(ACC)
        oz = tl.load(O + ray * 3 + 2, mask=ray_ok, other=0.0).to(ACC)
        dx = tl.load(D + ray * 3 + 0, mask=ray_ok, other=0.0).to(ACC)
        dy = tl.load(D + ray * 3 + 1, mask=ray_ok, other=0.0).to(ACC)
        dz = tl.load(D + ray * 3 + 2, mask=ray_ok, other=0.0).to(ACC)
        near = tl.load(NEAR + ray, mask=ray_ok, other=0.0).to(ACC)
        step = (tl.load(FAR + ray, mask=ray_ok, other=0.0).to(ACC) - near) / S
        if HAS_JIT:
            jit = tl.load(JIT + ray, mask=ray_ok, other=0.0).to(ACC)
        r = tl.arange(0, HT)
        b4 = tl.load(B4).to(ACC)
        m_i = tl.full([BLOCK_R], float("-inf"), dtype=ACC)
        l_i = tl.zeros([BLOCK_R], dtype=ACC)
        for s0 in range(0, S, BLOCK_S):
            k = s0 + m % BLOCK_S
            ok = ray_ok & (k < S)
            kf = k.to(ACC) + 0.5
            if HAS_JIT:
                kf = kf + jit
            t = near + kf * step  # as sample_points_at: near + k (far - near) / S
            px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
            h2 = _decoder_tiles(b, px, py, pz, C0, C2, W0P, W2P, W1, B1, W2H, ACT, BETA, ACC, DOT,
                                BLOCK_M, HT, NT, H, False, SDF, SDF, SDF, 0, 0, H, LOADS)
            sdf = tl.zeros([BLOCK_M], dtype=ACC) + b4
            for j in tl.static_range(NT):  # h3 tile by tile into the output layer: one float32 tile at a time
                w4 = tl.load(W4 + j * HT + r, mask=j * HT + r < H, other=0.0).to(ACC)
                h3 = _layer3(h2, W3, B3, j, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H, LOADS)
                sdf += tl.sum(h3 * w4[None, :], axis=1)
            tl.store(SDF + ray * S + k, tl.where(ok, sdf, 0.0).to(SDF.dtype.element_ty), mask=in_range & (k < S))
            x = tl.reshape(tl.where(ok, -sdf * inv_tau_min, float("-inf")), [BLOCK_R, BLOCK_S])
            m_new = tl.maximum(m_i, tl.max(x, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(x - m_safe[:, None]), axis=1)
            m_i = m_new
        ray_r = first + tl.arange(0, BLOCK_R)
        in_r = ray_r < end
        ok_r = in_r & (tl.load(VALID + ray_r, mask=in_r, other=0) != 0)
        lse = tl.where(ok_r, m_i + tl.log(tl.where(ok_r, l_i, 1.0)), 0.0)
        tl.store(LSE + ray_r, lse.to(LSE.dtype.element_ty), mask=in_r)
        # sigmoid(-m / tau), m = -tau_min lse
        sil = tl.where(ok_r, 1.0 / (1.0 + tl.exp(-lse * tau_min_over_tau)), 0.0)
        tl.store(SIL + ray_r, sil.to(SIL.dtype.element_ty), mask=in_r)


@triton.jit
def _crossing_kernel(
    SDF, NEAR, FAR, JIT, VALID,  # the forward's SDF [n, S]; rays [n]
    T0, HIT,  # out: [n] each, the first crossing (0 / False where there is none)
    n, S, HAS_JIT: tl.constexpr, ACC: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """Each ray's first crossing (docs/contract.md, Surface) from the SDF values the forward kernel stored, BLOCK_R
    rays a program, BLOCK_S samples at a time (:func:`_crossing`). A launch of its own: inside the forward's march
    its few registers would be live beside the decoder's tiles (8 B of spill in sm_90's tf32 forward at H = 128,
    ``python -m sdfsrn_fast.bench --gpu-compile``)."""
    m = tl.arange(0, BLOCK_R * BLOCK_S)
    ray = tl.program_id(0).to(tl.int64) * BLOCK_R + m // BLOCK_S
    ray_ok = (ray < n) & (tl.load(VALID + ray, mask=ray < n, other=0) != 0)
    near = tl.load(NEAR + ray, mask=ray_ok, other=0.0).to(ACC)
    step = (tl.load(FAR + ray, mask=ray_ok, other=0.0).to(ACC) - near) / S
    if HAS_JIT:
        jit = tl.load(JIT + ray, mask=ray_ok, other=0.0).to(ACC)
    t0_i = tl.zeros([BLOCK_R], dtype=ACC)
    hit_i = tl.zeros([BLOCK_R], dtype=tl.int32)
    prev_s = tl.zeros([BLOCK_R], dtype=ACC)
    prev_t = tl.zeros([BLOCK_R], dtype=ACC)
    for s0 in range(0, S, BLOCK_S):
        k = s0 + m % BLOCK_S
        ok = ray_ok & (k < S)
        kf = k.to(ACC) + 0.5  # as the forward kernel and sample_points_at: near + (k + 0.5 [+ jitter]) (far - near) / S
        if HAS_JIT:
            kf = kf + jit
        sdf = tl.load(SDF + ray * S + k, mask=ok, other=1.0).to(ACC)
        t0_i, hit_i, prev_s, prev_t = _crossing(sdf, near + kf * step, ok, s0, S, t0_i, hit_i, prev_s, prev_t,
                                                BLOCK_R, BLOCK_S)
    ray_r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    tl.store(T0 + ray_r, tl.where(hit_i != 0, t0_i, 0.0).to(T0.dtype.element_ty), mask=ray_r < n)
    tl.store(HIT + ray_r, hit_i != 0, mask=ray_r < n)


@triton.jit
def _backprop(d, W, HBUF, first, end, ACT: tl.constexpr, BETA, ACC: tl.constexpr, DOT: tl.constexpr,
              BLOCK_M: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr, LD: tl.constexpr,
              LOADS: tl.constexpr):
    """``(d @ W) * act'(h)`` tile by tile (d: tuple of dot operands; h read back from the activations this
    program stored in rows [first, end) of HBUF, row stride LD): the pre-activation gradient of the layer
    below, as dot operands. (Reading d back from global memory tile by tile instead spilled more: 112 B against
    0 at H = 128, sm_90 bf16; so did summing each tile's columns here for the biases and the latent shares:
    128-224 B at H = 128, hence the sums over samples are cuBLAS's, from the stored tiles.)"""
    rows = first + tl.arange(0, BLOCK_M)
    r = tl.arange(0, HT)
    out = ()
    for j in tl.static_range(NT):
        cols = j * HT + r
        h = tl.load(HBUF + rows[:, None] * LD + cols[None, :], mask=(rows < end)[:, None] & (cols[None, :] < H),
                    other=0.0)
        a = _layer(d, W, j, ACC, DOT, BLOCK_M, HT, NT, H, True, LOADS) * _act_grad(h.to(ACC), ACT, BETA)
        out = out + (_operand(a, DOT),)
    return out


@triton.jit
def _render_bwd_kernel(
    O, D, NEAR, FAR, JIT, IDX, G,  # kept samples: IDX [n] into the B*R*S samples (sorted), G [n] dL/ds  # noqa: E741
    SHAPE_START, NB,  # SHAPE_START [NB + 1]: the first kept sample of each shape (and n)
    C0, C2, W0P, W2P, W1, B1, W2H, W3, B3, W4,
    H0, H1, H2, D1, D3, D2, D0, H3,  # out: [n, H] each (row stride LD), in the dot operands' dtype
    AT, KA,  # out: [n, KA] (KA = NB + 4): per sample a one-hot of its shape, then x, y, z and g
    S, BETA,
    HAS_JIT: tl.constexpr, ACT: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_B: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr,
    LD: tl.constexpr, LOADS: tl.constexpr,
):
    """Program ``pid`` takes up to BLOCK_M kept samples of one shape: the shapes' program ranges are prefix
    sums of ``cdiv(samples of the shape, BLOCK_M)``, computed here from SHAPE_START, so the host builds no
    table. The grid is ``cdiv(n, BLOCK_M) + NB`` (a bound the host knows without a sync); programs past the
    last one have no rows and write nothing."""
    pid = tl.program_id(0)
    ib = tl.arange(0, BLOCK_B)
    lo = tl.load(SHAPE_START + ib, mask=ib < NB, other=0)
    hi = tl.load(SHAPE_START + ib + 1, mask=ib < NB, other=0)
    programs = (hi - lo + BLOCK_M - 1) // BLOCK_M
    starts = tl.cumsum(programs, axis=0) - programs  # each shape's first program
    b = tl.sum((starts + programs <= pid).to(tl.int32), axis=0)  # shapes wholly before this program: its shape
    at_b = ib == b  # (b >= NB past the last program)
    first = tl.sum(tl.where(at_b, lo + (pid - starts) * BLOCK_M, 0), axis=0)
    end = tl.sum(tl.where(at_b, hi, 0), axis=0)  # 0 past the last program: no rows
    # int32 row offsets (the host keeps chunk x H below 2^31): int64 ones, with the [BLOCK_M, HT] address tiles
    # built from them, spilled 200-328 B more at H = 128 (sm_90, bf16)
    first, end = first.to(tl.int32), end.to(tl.int32)
    rows = first + tl.arange(0, BLOCK_M)
    ok = rows < end
    idx = tl.load(IDX + rows, mask=ok, other=0).to(tl.int64)
    ray = idx // S
    koff = (idx % S).to(ACC) + 0.5  # as kept_samples: index + 0.5, plus the jitter
    if HAS_JIT:
        koff = koff + tl.load(JIT + ray, mask=ok, other=0.0).to(ACC)
    near = tl.load(NEAR + ray, mask=ok, other=0.0).to(ACC)
    t = near + koff * ((tl.load(FAR + ray, mask=ok, other=0.0).to(ACC) - near) / S)
    px = tl.load(O + ray * 3 + 0, mask=ok, other=0.0).to(ACC) + t * tl.load(D + ray * 3, mask=ok, other=0.0).to(ACC)
    py = (tl.load(O + ray * 3 + 1, mask=ok, other=0.0).to(ACC)
          + t * tl.load(D + ray * 3 + 1, mask=ok, other=0.0).to(ACC))
    pz = (tl.load(O + ray * 3 + 2, mask=ok, other=0.0).to(ACC)
          + t * tl.load(D + ray * 3 + 2, mask=ok, other=0.0).to(ACC))
    g = tl.load(G + rows, mask=ok, other=0.0).to(ACC)  # 0 on masked rows: every d below is 0 there
    bs = tl.minimum(b, NB - 1).to(tl.int64)
    # AT's row [one-hot of b | x | y | z | g], stored now: as one [BLOCK_M, NB + 4] tile built from px..g it
    # spilled 232 B at H = 128 (sm_90 bf16); the one-hot tile depends on b only, the rest are 1-D stores
    tl.store(AT + rows * KA + NB, px.to(AT.dtype.element_ty), mask=ok)
    tl.store(AT + rows * KA + NB + 1, py.to(AT.dtype.element_ty), mask=ok)
    tl.store(AT + rows * KA + NB + 2, pz.to(AT.dtype.element_ty), mask=ok)
    tl.store(AT + rows * KA + NB + 3, g.to(AT.dtype.element_ty), mask=ok)
    ca = tl.arange(0, BLOCK_B)[None, :]
    tl.store(AT + rows[:, None] * KA + ca, tl.where(ca == b, 1.0, 0.0).to(AT.dtype.element_ty),
             mask=ok[:, None] & (ca < NB))
    h2 = _decoder_tiles(bs, px, py, pz, C0, C2, W0P, W2P, W1, B1, W2H, ACT, BETA, ACC, DOT, BLOCK_M, HT,
                        NT, H, True, H0, H1, H2, first, end, LD, LOADS)
    h3 = ()
    for j in tl.static_range(NT):
        h3 = h3 + (_layer3(h2, W3, B3, j, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H, LOADS),)
    _store_tiles(H3, first, end, h3, BLOCK_M, HT, NT, H, LD)
    r = tl.arange(0, HT)
    d3 = ()
    for j in tl.static_range(NT):
        w4 = tl.load(W4 + j * HT + r, mask=j * HT + r < H, other=0.0).to(ACC)
        d3 = d3 + (_operand(g[:, None] * w4[None, :] * _act_grad(h3[j], ACT, BETA), DOT),)
    _store_tiles(D3, first, end, d3, BLOCK_M, HT, NT, H, LD)
    tl.debug_barrier()  # this program's h tiles, stored above, are read back by other threads below
    d2 = _backprop(d3, W3, H2, first, end, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H, LD, LOADS)
    _store_tiles(D2, first, end, d2, BLOCK_M, HT, NT, H, LD)
    d1 = _backprop(d2, W2H, H1, first, end, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H, LD, LOADS)
    _store_tiles(D1, first, end, d1, BLOCK_M, HT, NT, H, LD)
    d0 = _backprop(d1, W1, H0, first, end, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H, LD, LOADS)
    _store_tiles(D0, first, end, d0, BLOCK_M, HT, NT, H, LD)


@triton.jit
def _keep_kernel(GRAD, SIL, VALID, SDF, LSE, LARGEST, KEEP, DS, n, S, tau, tau_min, grad_eps,
                 EXACT: tl.constexpr, FINAL: tl.constexpr, BLOCK: tl.constexpr):
    """:func:`~sdfsrn_fast.backends.fused.kept_indices` over BLOCK of the B*R*S samples, in its operations and
    their order. First pass (FINAL False): LARGEST[pid] = this block's largest |dL/dm| (or |ds| when EXACT);
    second pass: with LARGEST[0] the largest of all, KEEP and DS = dL/ds per sample."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = i < n
    ray = i // S
    v = ok & (tl.load(VALID + ray, mask=ok, other=0) != 0)
    s = tl.load(SIL + ray, mask=ok, other=0.0)
    dm = tl.where(v, -(1.0 / tau) * s * (1 - s) * tl.load(GRAD + ray, mask=ok, other=0.0), 0.0)
    w = tl.exp(-tl.load(SDF + i, mask=ok, other=0.0) / tau_min - tl.load(LSE + ray, mask=ok, other=0.0))
    ds = dm * w
    if not FINAL:
        tl.store(LARGEST + tl.program_id(0), tl.max(tl.where(ok, tl.abs(ds if EXACT else dm), 0.0), axis=0))
    else:
        largest = tl.load(LARGEST)
        if EXACT:
            keep = tl.abs(ds) > largest * 2.0**-80
        else:
            keep = (w >= grad_eps) & v & (tl.abs(dm) >= grad_eps * largest)
        tl.store(KEEP + i, keep & ok, mask=ok)
        tl.store(DS + i, ds, mask=ok)

