"""Backend ``triton``: the decoder + ray march + soft minimum as fused Triton kernels (CUDA; the CPU under
``TRITON_INTERPRET=1`` for tests), registered as the custom ops ``sdfsrn_fast::triton_render`` and
``sdfsrn_fast::triton_render_backward`` (:mod:`._ops`).

Forward (:func:`_render_fwd_kernel`): one program takes ``BLOCK_R`` rays of one shape and walks their samples in chunks
of ``BLOCK_S`` (``BLOCK_M = BLOCK_R * BLOCK_S`` points a tile). It computes the points from (origin, direction,
near, far, jitter), gathers each point's latent share of layers 1 and 3 (``W_z z + b``, computed once per shape
on the host), adds the xyz parts of layers 1 and 3 as three FMAs, runs the three H x H layers as ``tl.dot`` on
64-wide tiles of the hidden dimension (a tuple of ``[BLOCK_M, 64]`` tiles, ``out_j = sum_i h_i W_ij``), the
output layer as a row reduction, and keeps an online logsumexp per ray (FlashAttention's pattern), so any S
works. It writes only the per-sample SDF, the per-ray logsumexp and the silhouette; no hidden activation reaches
global memory. A program whose rays are all invalid writes their zeros and does no other work; the grid is fixed by
(B, R), so the host issues no ``nonzero`` and no sync: the forward is the latent shares, the weights' casts and
one launch.

Backward: :func:`_keep_kernel` picks the kept samples exactly as the compiled backend does
(:func:`~sdfsrn_fast.backends.fused.kept_indices`, in two launches; then one ``nonzero``, the backward's only sync);
:func:`_render_bwd_kernel` finds its shape's samples from the per-shape boundaries (no program table), recomputes
the decoder there, backpropagates ``g = dL/ds`` through it (``d_l = (d_{l+1} W_{l+1}) * act'(h_l)``, with ``act'``
read off the activations) and writes, per kept sample, ``h_0..h_3`` and ``d_0..d_3`` in the dot operands' dtype
(one [n, 8 H] buffer) and a row ``[one-hot of its shape | x | y | z | g]``. The three H x H weight gradients
``D_l^T H_{l-1}`` are then cuBLAS matmuls (tiny-cuda-nn's split), and everything narrower is one more:
``A^T [d_1 d_3 d_2 d_0 h_3]`` gives the latent shares of ``d_0`` and ``d_2`` per shape, the xyz columns ``d^T p``,
``dW4 = g^T h_3`` and (summed over shapes) the biases: deterministic, no atomics. Why the split and not in-kernel
per-program partials: at H = 256 keeping the three ``dW`` tiles of a program on chip needs 256-450 KB of shared
memory and spills 5.5-17 KB of registers (``shared/TRITON_NOTES.md``, backward probe, sm_90 bf16), and even the
column sums of each tile (for the biases and latent shares) spilled 128-224 B at H = 128; the split moves 16 H
bytes per kept sample in bfloat16, and the backward touches only the few per cent of samples whose soft-min
weight is at least ``grad_eps``.

Precision (``shared/SPEC.md``): on CUDA tf32 operands when ``torch.get_float32_matmul_precision() != "highest"``
(rounded to nearest by ``cvt.rna.tf32.f32`` first: ``tl.dot``'s tf32 drops the low bits, which made the
silhouettes err 4.8x the cuBLAS-tf32 reference's on an H200),
and bfloat16/float16 operands under ``torch.autocast``; float64 and float32 with IEEE ``tl.dot`` in the interpreter
(the tests' float64 and gradcheck), not on CUDA (IEEE dots compile to FMA loops that spill: see the block sizes
below). Exact float32 on CUDA (``"highest"``) is the compiled backend's bfloat16 screen (:func:`_refined`): the
forward kernel runs with bfloat16 operands over every sample, the samples that could move a silhouette by more
than float32's round-off (those near each ray's soft minimum) are recomputed in float32 by plain torch, and each
ray's logsumexp and silhouette are formed from the refined values; the backward is the compiled backend's, run
eagerly (float32 cuBLAS at the kept samples). Accumulation, the xyz FMAs,
the latent shares, the output layer and the soft minimum are in the accumulator dtype (float32, or float64). The
interpreter's bfloat16 ``tl.dot`` is wrong (triton #11584) and its float32->bfloat16 cast truncates: under
``TRITON_INTERPRET=1`` bfloat16 runs as an exact emulation, operands rounded to nearest-even bfloat16 by bit
arithmetic and multiplied in IEEE float32, which is what the tensor cores compute. The backward's sums over samples
(weight, bias and latent gradients) are cuBLAS matmuls of those dot-dtype tiles with float32 output, as the
reference's autocast backward takes bfloat16 gradients into its matmuls.

Cost on paper, per sample at hidden width H (study: H = 256; latent shares computed once per shape, so the latent
width does not enter): forward ``2 (3H + 3H + 3 H^2 + H) = 6 H^2 + 14 H`` FLOP = 396 kFLOP at H = 256; it reads
per tile the three ``H x H`` weight matrices (``3 H^2 x 2`` bytes in bf16, 393 KB at H = 256, from L2, shared by
the ``BLOCK_M`` points of a tile: 3 KB per point at ``BLOCK_M = 128``) and writes 4 bytes (its SDF): arithmetic
intensity about 130 FLOP/B against L2 at ``BLOCK_M = 128``, and above 10^5 FLOP/B against HBM (the weights stay in
L2; per sample only 4 bytes go out). H100/H200 dense peaks (SXM): bf16/fp16 989 TFLOP/s, tf32 495, fp32 (no tensor
cores) 67; HBM 3.35 TB/s (H100) / 4.8 TB/s (H200), ridge points near 300 / 200 FLOP/B for bf16: against HBM the
forward is compute-bound in every precision, and its ceiling would be the tensor-core rate (about 2.5 G samples/s
in bf16 at H = 256; the study shape's forward, 0.72 M samples, would take 0.3 ms there; 40% of peak, the issue's
target, is 0.7 ms). Against L2 it is not clearly so: every program reads all 393 KB of weights for its 128
points, 2.2 GB from L2 at the study shape, BLOCK_M FLOP per weight byte in bf16. NVIDIA publishes no L2
bandwidth; at 5 or 10 TB/s those reads take 0.44 or 0.22 ms against the dots' 0.37 ms at the 781 TFLOP/s matmul
rate the H200 run measured (ridge 156 or 78 FLOP/B), so the forward sits near the L2 ridge, and a kernel that
waits for each weight block before its dots adds the two: 0.6-0.8 ms of the 1.07 ms the H200 measured. More
points per weight read (activations in shared memory as wgmma's A operand, or weight blocks multicast to a
cluster of two SMs by TMA: both beyond what this kernel's ``tl`` code controls) or loads issued ahead of the dots
(a pipelined loop) are what would raise it; ``gpu_check.sh``'s ``ncu_forward`` step reads the L2 throughput.
Backward per kept sample: the recompute (396 kFLOP) plus ``d @ W`` for three layers (``6 H^2``) in the kernel,
writing ``8 H`` values (h0..h3, d0..d3) and the sample's row of A (shape one-hot, x, y, z, g):
8 x 256 x 2 = 4 KB in bf16 for 790 kFLOP, about 190 FLOP/B, near the H200's HBM ridge; then ``D^T H`` in cuBLAS
(``6 H^2`` FLOP, reading the same tiles) and ``A^T [d1 d3 d2 d0 h3]`` (``10 H (B + 4)`` FLOP). Against L2 the
backward kernel is further below its ridge than the forward: a 32-point program reads the weights six times
(three layers forward, three back: 786 KB at H = 256), 32 FLOP per weight byte; at the H200 run's 22k kept samples
about 540 MB, 0.05-0.1 ms at 5-10 TB/s, against 0.03 ms of dots: most of the 0.22 ms it measured is waiting.

Block sizes (:func:`kernel_config`, per architecture), chosen with ``python -m sdfsrn_fast.bench --gpu-compile``
(compiled for sm_90 and sm_80 without a GPU, as a launch specializes them, registers and spills read off the
cubins; table in docs/performance.md): no kernel spills at H <= 128 on either. sm_90: bfloat16/float16 forward 128
points a tile (2 rays x 64 samples at S = 64), backward 32 points, 64-wide hidden tiles, 8 warps (HGMMA in the
forward, HMMA in the backward); 120 B (forward) and 64 B (backward) of spill at H = 256. tf32: 32-wide hidden
tiles and 64 points (the forward above H = 64: bfloat16's tiles), 8 warps; at H = 256 it spills 752 B (forward) and
1064 B (backward), and ``backend="auto"`` leaves tf32 at H > 128 to the compiled backend. sm_80 (mma.sync: both
operands in registers) takes smaller tiles above H = 64: forward 32 points and 4 warps (bfloat16/float16; 0 B
forward, 16-32 B backward at H = 256), tf32 16 points and 4 warps (160 B forward, 120 B backward at H = 256). Other
architectures take the tiles of their kind of tensor core (:func:`_async_mma`): sm_100 sm_90's, sm_86, sm_89 and
sm_120 sm_80's (compiled for sm_100 and sm_120: no spill at H <= 128 either). In
bfloat16/float16 each output tile's weights arrive in one load before its dots (:func:`_layer`: in sm_90's forward
the hidden tiles joined into one dot per output tile, elsewhere the weight loads grouped), not one tile at a time.
IEEE float32/float64 dots are not compiled for CUDA (FMA loops that spilled everything at H = 128): float64 is the
compiled backend's there, exact float32 the screen above, and ``backend="auto"`` takes the compiled backend for
both until the screen is timed on a GPU.

Measured on an NVIDIA H200 (torch 2.11.0+cu130, triton 3.6.0, 2026-11-28; docs/performance.md has the tables and
commands): study shape, bfloat16, forward 2.7-3.2 ms against the compiled backend's 8.3 ms (11-14% of the 781 TFLOP/s
bf16 matmul rate measured in the same run; the kernel alone 1.07 ms, about 34%); forward+backward 6.6 ms (one
backward chunk) against 13.7 ms, with 117 MB peak (8192-sample chunks) against 554 MB. That run's host side (sample
selection, program tables, about 70 small ops a backward chunk, five syncs of the eager NaN checks) took more time
than the GPU did; since then (not yet timed on a GPU) the host issues no sync in the forward and one in the
backward (``render`` reads its value checks once the work is queued), and 19 + 85 aten calls a forward+backward
instead of 49 + 167, 8 + 31 of them not views instead of 34 + 123 (``python -m sdfsrn_fast.bench --host-ops
--shapes tiny``, one backward chunk, AMD EPYC, 2026-11-29); the backward holds one chunk buffer, not two.
"""

from __future__ import annotations

import os

import torch

from . import triton_version
from ._ops import define_render_ops
from .fused import STATS, decoder_weights

try:  # the module is imported only when the backend is asked for (render's dispatch imports it lazily)
    import triton
    import triton.language as tl

    _IMPORT_ERROR = None
except ImportError as err:  # pragma: no cover - exercised where triton is absent
    triton = tl = None
    _IMPORT_ERROR = err

__all__ = ["render_triton", "triton_render", "kernel_config", "KERNELS", "interpreting"]


def interpreting() -> bool:
    """Whether triton runs its kernels in its CPU interpreter (TRITON_INTERPRET=1, set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


if triton is not None:

    @triton.jit
    def _act(x, ACT: tl.constexpr, BETA):
        """ReLU (ACT 0) or softplus(x, beta) with torch's threshold (beta x > 20: x)."""
        if ACT == 0:
            return tl.maximum(x, 0.0)
        else:
            bx = x * BETA
            e = tl.exp(tl.minimum(bx, 20.0))
            log1p = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))  # log1p, accurate for small e
            return tl.where(bx > 20.0, x, log1p / BETA)

    @triton.jit
    def _act_grad(h, ACT: tl.constexpr, BETA):
        """act'(a) read off h = act(a): ReLU 1[h > 0]; softplus sigmoid(beta a) = 1 - exp(-beta h)."""
        if ACT == 0:
            return (h > 0).to(h.dtype)
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
               NT: tl.constexpr, H: tl.constexpr, TRANSPOSE: tl.constexpr, LOADS: tl.constexpr, WB=None):
        """Output tile j [BLOCK_M, HT] of ``h @ W^T`` (TRANSPOSE False; forward) or ``h @ W`` (True; backward),
        W [H, H] row-major, h a tuple of NT input tiles already in the dot's precision (zero-padded past H).

        LOADS, how the weights reach the dots (sm_90 SASS of the H = 256 forward, ``--gpu-compile``): 0, tile by tile:
        load a tile, store it to shared memory, run its dot, wait, NT times in turn, each load's latency from L2
        (hundreds of cycles) before a dot of about 256 cycles; 1, grouped: the NT tiles loaded first, then NT dots,
        each still waited for; 2, joined: h side by side as one [BLOCK_M, NT HT] operand (NT <= 4) and one dot with
        the [NT HT, HT] weight block: one load latency and one wait per output tile. Spill at H = 256 on sm_90 in
        bfloat16, forward / backward: 224 / 80 B, 232 / 64 B, 120 / 96 B. :func:`kernel_config` picks. 4: joined,
        the blocks given, loaded before (WB, the persistent forward's, from :func:`_weight_blocks`)."""
        acc = tl.zeros([BLOCK_M, HT], dtype=ACC)
        if LOADS == 2:
            acc = _dot(_cat(h, NT), _operand(_joined_block(W, j, HT, NT, H, TRANSPOSE), DOT), acc, DOT)
        elif LOADS == 4:
            acc = _dot(_cat(h, NT), WB[j], acc, DOT)
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
                       LD: tl.constexpr, LOADS: tl.constexpr, W1B=None, W2B=None):
        """The first three hidden layers at BLOCK_M points; returns h2 (a tuple of NT [BLOCK_M, HT] dot operands; the
        last layer is :func:`_layer3`'s, tile by tile). h0, h1 live only until the next layer has used them;
        with STORE (the backward) each is written to rows [first, end) of H0..H2 [n, H] (row stride LD) right away."""
        r = tl.arange(0, HT)
        h0 = _layer0(b, px, py, pz, C0, W0P, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H)
        if STORE:
            _store_tiles(H0, first, end, h0, BLOCK_M, HT, NT, H, LD)
        h1 = ()
        for j in tl.static_range(NT):
            a = _layer(h0, W1, j, ACC, DOT, BLOCK_M, HT, NT, H, False, LOADS, W1B) + _bias(B1, j * HT + r, H)
            h1 = h1 + (_operand(_act(a, ACT, BETA), DOT),)
        if STORE:
            _store_tiles(H1, first, end, h1, BLOCK_M, HT, NT, H, LD)
        h2 = ()
        for j in tl.static_range(NT):
            a = (_layer(h1, W2H, j, ACC, DOT, BLOCK_M, HT, NT, H, False, LOADS, W2B)
                 + _share(C2, W2P, b, px, py, pz, j * HT + r, H))
            h2 = h2 + (_operand(_act(a, ACT, BETA), DOT),)
        if STORE:
            _store_tiles(H2, first, end, h2, BLOCK_M, HT, NT, H, LD)
        return h2

    @triton.jit
    def _layer3(h2, W3, B3, j, ACT: tl.constexpr, BETA, ACC: tl.constexpr, DOT: tl.constexpr, BLOCK_M: tl.constexpr,
                HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr, LOADS: tl.constexpr, W3B=None):
        """Tile j of h3 (accumulator dtype)."""
        a = _layer(h2, W3, j, ACC, DOT, BLOCK_M, HT, NT, H, False, LOADS, W3B) + _bias(B3, j * HT + tl.arange(0, HT), H)
        return _act(a, ACT, BETA)

    # LOADS 3 (the forward only): each hidden layer a loop over its output tiles, which triton software-pipelines
    # (num_stages 3: the weight blocks of the next two tiles copied to shared memory by cp.async while this tile's
    # dots run), where the other modes' unrolled tiles wait for each block's load before its dots. The loop cannot
    # append to a tuple, so each output tile is placed into the full-width [BLOCK_M, NT HT] operand with a select.
    @triton.jit
    def _looped_layer(hcat, W, B, C, W_P, b, px, py, pz, ACT: tl.constexpr, BETA, ACC: tl.constexpr,
                      DOT: tl.constexpr, BLOCK_M: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr,
                      SHARE: tl.constexpr):
        """``act(hcat @ W^T + bias)`` (SHARE: plus the latent and xyz share instead of a bias) as one
        [BLOCK_M, NT HT] dot operand (NT 3 padded to 4, as :func:`_cat`), from hcat joined the same way."""
        KP: tl.constexpr = (4 if NT == 3 else NT) * HT
        cols = tl.arange(0, KP)
        r = tl.arange(0, HT)
        out = tl.zeros([BLOCK_M, KP], dtype=hcat.dtype)
        for j in tl.range(0, NT, num_stages=3):
            acc = _dot(hcat, _operand(_joined_block(W, j, HT, NT, H, False), DOT), tl.zeros([BLOCK_M, HT], dtype=ACC),
                       DOT)
            if SHARE:
                acc = acc + _share(C, W_P, b, px, py, pz, j * HT + r, H)
            else:
                acc = acc + _bias(B, j * HT + r, H)
            a = _operand(_act(acc, ACT, BETA), DOT)
            wide = tl.reshape(tl.broadcast_to(a[:, None, :], [BLOCK_M, KP // HT, HT]), [BLOCK_M, KP])
            out = tl.where((cols // HT == j)[None, :], wide, out)
        return out

    @triton.jit
    def _looped_sdf(hcat, W3, B3, W4, b4, ACT: tl.constexpr, BETA, ACC: tl.constexpr, DOT: tl.constexpr,
                    BLOCK_M: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr):
        """The last hidden layer from hcat (joined) in a pipelined loop, each tile straight into the output layer."""
        r = tl.arange(0, HT)
        sdf = tl.zeros([BLOCK_M], dtype=ACC) + b4
        for j in tl.range(0, NT, num_stages=3):
            acc = _dot(hcat, _operand(_joined_block(W3, j, HT, NT, H, False), DOT), tl.zeros([BLOCK_M, HT], dtype=ACC),
                       DOT) + _bias(B3, j * HT + r, H)
            w4 = tl.load(W4 + j * HT + r, mask=j * HT + r < H, other=0.0).to(ACC)
            sdf += tl.sum(_act(acc, ACT, BETA) * w4[None, :], axis=1)
        return sdf

    @triton.jit
    def _weight_blocks(W, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr, DOT: tl.constexpr):
        """The NT joined weight blocks of ``h @ W^T`` (:func:`_joined_block`) as dot operands."""
        ws = ()
        for j in tl.static_range(NT):
            ws = ws + (_operand(_joined_block(W, j, HT, NT, H, False), DOT),)
        return ws

    @triton.jit
    def _forward_tile(
        tile, O, D, NEAR, FAR, JIT, VALID, C0, C2, W0P, W2P, W1, B1, W2H, W3, B3, W4, B4, SDF, LSE, SIL,  # noqa: E741
        R, S, inv_tau_min, tau_min_over_tau, BETA, W1B, W2B, W3B,
        ACT: tl.constexpr, HAS_JIT: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr,
        LOADS: tl.constexpr, HOIST: tl.constexpr,
    ):
        """Tile ``tile = b cdiv(R, BLOCK_R) + j``: rays ``[j BLOCK_R, (j + 1) BLOCK_R)`` of shape ``b``. A tile
        whose rays are all invalid only writes their zeros. HOIST 1: layer 3's weight blocks are W3B's (joined, as
        :func:`_weight_blocks` makes them); 3: every layer's (W1B, W2B, W3B); 0: the weights are read here."""
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
                if LOADS == 3:  # the hidden layers as pipelined loops (above)
                    h0 = _cat(_layer0(b, px, py, pz, C0, W0P, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H), NT)
                    h1 = _looped_layer(h0, W1, B1, C2, W2P, b, px, py, pz, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H,
                                       False)
                    h2 = _looped_layer(h1, W2H, B1, C2, W2P, b, px, py, pz, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H,
                                       True)
                    sdf = _looped_sdf(h2, W3, B3, W4, b4, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H)
                else:  # HOIST: the weight blocks given (load mode 4 of _layer) for layer 3, or for every layer
                    h2 = _decoder_tiles(b, px, py, pz, C0, C2, W0P, W2P, W1, B1, W2H, ACT, BETA, ACC, DOT,
                                        BLOCK_M, HT, NT, H, False, SDF, SDF, SDF, 0, 0, H, 4 if HOIST == 3 else LOADS,
                                        W1B, W2B)
                    sdf = tl.zeros([BLOCK_M], dtype=ACC) + b4
                    for j in tl.static_range(NT):  # h3 tile by tile into the output layer: one float32 tile at a time
                        w4 = tl.load(W4 + j * HT + r, mask=j * HT + r < H, other=0.0).to(ACC)
                        h3 = _layer3(h2, W3, B3, j, ACT, BETA, ACC, DOT, BLOCK_M, HT, NT, H, 4 if HOIST > 0 else LOADS,
                                     W3B)
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
    def _render_fwd_kernel(
        O, D, NEAR, FAR, JIT, VALID,  # rays [B*R, 3] / [B*R]  # noqa: E741 (O: origins)
        C0, C2, W0P, W2P, W1, B1, W2H, W3, B3, W4, B4,  # shares [B, H]; xyz columns [H, 3]; H x H layers; output
        SDF, LSE, SIL,  # out: [B*R, S], [B*R], [B*R]; zeros on invalid rays
        R, S, inv_tau_min, tau_min_over_tau, BETA, N_TILES, NPROG,
        ACT: tl.constexpr, HAS_JIT: tl.constexpr, ACC: tl.constexpr, DOT: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, HT: tl.constexpr, NT: tl.constexpr, H: tl.constexpr,
        LOADS: tl.constexpr, PERSIST: tl.constexpr,
    ):
        """One tile a program (:func:`_forward_tile`), no table of valid rays, hence no ``nonzero`` and no sync on
        the host; PERSIST: NPROG programs over all N_TILES tiles, each loading weight blocks once: layer 3's, and
        up to two hidden tiles (H <= 128 in 64-wide tiles: 96 KB in bfloat16) every layer's."""
        if PERSIST:
            HOIST: tl.constexpr = 3 if NT <= 2 else 1
            w3b = _weight_blocks(W3, HT, NT, H, DOT)
            if HOIST == 3:
                w1b, w2b = _weight_blocks(W1, HT, NT, H, DOT), _weight_blocks(W2H, HT, NT, H, DOT)
            else:
                w1b, w2b = (W1,), (W2H,)
            for tile in range(tl.program_id(0), N_TILES, NPROG):
                _forward_tile(tile, O, D, NEAR, FAR, JIT, VALID, C0, C2, W0P, W2P, W1, B1, W2H, W3, B3, W4, B4, SDF,
                              LSE, SIL, R, S, inv_tau_min, tau_min_over_tau, BETA, w1b, w2b, w3b, ACT, HAS_JIT, ACC,
                              DOT, BLOCK_R, BLOCK_S, HT, NT, H, 2, HOIST)
        else:
            _forward_tile(tl.program_id(0), O, D, NEAR, FAR, JIT, VALID, C0, C2, W0P, W2P, W1, B1, W2H, W3, B3, W4,
                          B4, SDF, LSE, SIL, R, S, inv_tau_min, tau_min_over_tau, BETA, (W1,), (W2H,), (W3,), ACT,
                          HAS_JIT, ACC, DOT, BLOCK_R, BLOCK_S, HT, NT, H, LOADS, 0)

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


def _kept_indices(grad_sil, sil, sdf, lse, valid, num_samples: int, tau: float, tau_min: float, grad_eps: float):
    """:func:`~sdfsrn_fast.backends.fused.kept_indices` in two launches of :func:`_keep_kernel` (about 17 aten calls
    there): ``(idx [n], g [n])``, with its one ``nonzero``."""
    n = sdf.numel()
    block = 1024
    grid = (max(_cdiv(n, block), 1),)
    largest = sdf.new_empty(grid[0])
    keep = torch.empty(n, dtype=torch.bool, device=sdf.device)
    ds = sdf.new_empty(n)
    args = (grad_sil.contiguous(), sil.contiguous(), valid.contiguous(), sdf.contiguous(), lse.contiguous())
    scalars = (n, num_samples, float(tau), float(tau_min), float(grad_eps))
    _keep_kernel[grid](*args, largest, keep, ds, *scalars, EXACT=grad_eps == 0, FINAL=False, BLOCK=block)
    _keep_kernel[grid](*args, largest.max().reshape(1), keep, ds, *scalars, EXACT=grad_eps == 0, FINAL=True,
                       BLOCK=block)
    idx = keep.nonzero().squeeze(1)
    return idx, ds[idx]


# ------------------------------------------------------------------------------------------------- host side

# The compiled kernel of the last launch per (kernel, width, DOT mode): its n_regs / n_spills on a GPU.
LAUNCHED: dict = {}

# Kept samples per backward launch: bounds the h / d buffer ([CHUNK, 8 H] in the dot dtype: 4 KB a sample at
# H = 256 in bfloat16, 32 MB a chunk, allocated once). A chunk costs about 8 host-side calls (searchsorted, the
# launch, two matmuls, views), so the study shape's about 31k kept samples take four chunks for about 15 more calls
# that launch work than one would, against about 100 MB more memory. (Before, each chunk cost about 70 calls, and
# one chunk of 65536 took the H200's bf16 forward+backward from 9.30 to 6.63 ms: NVIDIA H200, triton 3.6,
# 2026-11-28.)
# SDFSRN_TRITON_CHUNK overrides it.
BACKWARD_CHUNK = 8192


def _backward_chunk() -> int:
    return int(os.environ.get("SDFSRN_TRITON_CHUNK", BACKWARD_CHUNK))


def _precision(dtype: torch.dtype, compute_dtype, device: torch.device):
    """(DOT mode of the kernels, their accumulator dtype, the dtype of dot operands and the stored h / d tiles)."""
    if dtype == torch.float64:
        return 0, tl.float64, torch.float64
    if compute_dtype == torch.bfloat16:
        return (4, tl.float32, torch.float32) if interpreting() else (2, tl.float32, torch.bfloat16)
    if compute_dtype == torch.float16:
        return 3, tl.float32, torch.float16
    if device.type == "cuda":  # dispatch sends float32 here only where tf32 is allowed (see the module docstring)
        return 1, tl.float32, torch.float32
    return 0, tl.float32, torch.float32


def _cdiv(a: int, b: int) -> int:  # plain Python: triton.cdiv is a jit function, about 6 us a call from Python
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def kernel_config(hidden: int, dot: int, num_samples: int = 64, kernel: str = "forward", arch: int = 90) -> dict:
    """Tile sizes and warps for sm_``arch``, chosen with ``--gpu-compile`` (the fewest spilled bytes; module docstring).

    sm_90: bfloat16/float16 take 64-wide hidden tiles, 128 points a forward tile and 32 a backward tile, 8 warps; tf32,
    whose operands are twice as wide, 32-wide hidden tiles and 64 points, 8 warps, except the forward above H = 64
    (the bfloat16 tiles: 0 B of spill against 8 B at H = 128). Tiles are 16 wide at least (tl.dot). The backward's
    32 points compile to mma.sync (HMMA) on sm_90, not wgmma (which needs 64 rows a warpgroup): at 64 points it sat
    at 255 registers and spilled 0-96 B at H = 128 with every small change of its code (triton 3.9), at 32 it spills
    nothing at H <= 128 on sm_80 and sm_90; the backward kernel is a small part of a step (0.22 ms of 6.6 on the
    H200), so its tensor-core instruction matters less than not spilling.
    Below sm_90 (mma.sync: both operands of every dot in registers, where wgmma reads the weights from shared memory)
    the same tiles spilled at H = 128 (forward 104-120 B, tf32 backward 40 B) and everything at H = 256 in tf32, so
    above H = 64 the forward takes 32 points and 4 warps in bfloat16/float16 (0 B at H = 128 and 256), and tf32
    16 points, 4 warps and 64-wide tiles (0 B at H = 128; 160 B forward, 120 B backward at 256).
    The other architectures take the tiles of their kind of tensor-core instruction (:func:`_async_mma`), compiled
    here, not run: sm_100 (tcgen05, accumulators in tensor memory) sm_90's, no spill at H <= 128 (72 B forward,
    56 B backward at H = 256 in bfloat16); sm_86, sm_89 and sm_120 (mma.sync) sm_80's: on sm_120 sm_90's tiles
    spilled at H = 128 in tf32 (272 B forward, 72 B backward) and 1672 / 2616 B at 256, sm_80's none at H = 128
    and 72 / 112 B at 256.
    LOADS (:func:`_layer`): in bfloat16/float16 the forward on sm_90 (and in the interpreter) joins the hidden tiles
    into one dot per output tile (wgmma: one wait per output tile; 120 B of spill at H = 256 against 224 tile by
    tile); the backward (mma.sync on 32 points, no wgmma to wait for) and sm_80 group the weight loads (joined, sm_80's
    forward spilled 16 B at H = 128 and 1264 B at 256, grouped 0 B; sm_90's backward 96 B at 256, grouped 64 B);
    tf32 loads tile by tile (grouped or joined it spilled at H = 128: its tiles are twice the bytes). Joining takes at
    most 4 hidden tiles, grouping beyond. LOADS 3, set only by SDFSRN_TRITON_LOADS until a GPU times it: the forward's
    hidden layers as loops that triton pipelines (:func:`_looped_layer`; sm_90 bfloat16: every weight block copied
    ahead by cp.async, 328 B of spill at H = 256 against 120, 0 B at 128; under triton 3.6 968 B, and at 128 32 B
    with 64-wide tiles, 104 B with the 32-wide ones 3.6 takes there, below).
    PERSIST, set only by SDFSRN_TRITON_PERSIST=1 until a GPU times it (any dot but tf32, NT <= 4, sm_90 and up): one
    program per SM loops over the tiles and loads weight blocks once, into shared memory, where the default reads
    every weight for every 128 points: layer 3's at H = 256 (a third less weight traffic from L2; sm_90 bfloat16:
    352 B of spill against 120, 162 KB of shared memory; triton 3.6: 1024 B), every layer's at two hidden tiles or
    fewer (H <= 128: no weight read left in the tile loop; 0 B, 98 KB at 128; triton 3.6: 120 B, and 8 B with the
    four 32-wide tiles it takes at 128, layer 3's hoisted only); on sm_80 it
    spilled at 128 and did not fit at 256, hence async-MMA architectures only.
    Triton before 3.9 (the lent H200 had 3.6) spilled with sm_90's tiles at H = 128 (forward 8 B in bfloat16 and
    float16, 56 B in tf32; tf32 backward 16 B): there the forward takes 32-wide tiles (and 64 points in tf32), the tf32
    backward 32 points and 64-wide tiles, none of which spills under 3.6 (under 3.9 the 32-wide bfloat16 forward spills
    none either; the tf32 ones spill 8 and 16 B, hence by version).
    SDFSRN_TRITON_HT / _BLOCK_M / _WARPS / _STAGES / _LOADS (0, 1, 2, 3) override, for such experiments."""
    wide = 32 if dot == 1 and hidden <= 128 else 64  # tf32 at 256: 32-wide tiles took minutes to compile
    block_m = (128 if kernel == "forward" else 32) if dot in (2, 3) else 64
    warps = 8
    if _async_mma(arch) and dot == 1 and kernel == "forward" and hidden > 64:
        block_m, wide = 128, 64  # spill: 0 B at H = 128, 752 B at 256; 64 points spilled 8 B and 2744 B
    if not _async_mma(arch) and hidden > 64:
        if dot == 1:
            block_m, warps, wide = 16, 4, 64
        elif kernel == "forward":
            block_m, warps = 32, 4
    if arch == 90 and 64 < hidden <= 128 and triton_version() < (3, 9):
        # triton before 3.9 (the lent H200's 3.6) allocates registers differently: the tiles above spilled there
        # (forward 8 B in bfloat16, 56 B in tf32; tf32 backward 16 B), these compile to none (sm_90, triton 3.6)
        if kernel == "forward":
            block_m, wide = (64 if dot == 1 else block_m), 32
        elif dot == 1:
            block_m, wide = 32, 64
    ht = min(wide, max(16, _pow2(hidden)))
    env = os.environ.get
    ht = int(env("SDFSRN_TRITON_HT", ht))
    block_m = int(env("SDFSRN_TRITON_BLOCK_M", block_m))
    block_s = min(block_m, max(16, _pow2(num_samples)))
    nt = _cdiv(hidden, ht)
    loads = 0 if dot == 1 else (2 if _async_mma(arch) and kernel == "forward" else 1)
    loads = int(env("SDFSRN_TRITON_LOADS", loads))
    if loads == 3 and kernel != "forward":
        loads = 1  # the backward has no looped mode
    if loads >= 2 and nt > 4:
        loads = 1
    persist = (kernel == "forward" and dot != 1 and nt <= 4 and _async_mma(arch)
               and env("SDFSRN_TRITON_PERSIST", "0") == "1")
    return dict(HT=ht, NT=nt, H=hidden, BLOCK_M=block_m, BLOCK_S=block_s, PERSIST=persist,
                BLOCK_R=block_m // block_s, num_warps=int(env("SDFSRN_TRITON_WARPS", warps)),
                num_stages=int(env("SDFSRN_TRITON_STAGES", "1")), LOADS=loads)


def _async_mma(arch: int) -> bool:
    """Whether sm_``arch``'s tensor cores take a dot's operands from shared memory asynchronously (sm_90's wgmma,
    sm_100's tcgen05, up to sm_11x) rather than from registers (mma.sync: sm_80 to sm_89, and sm_120's GeForce and
    workstation Blackwell)."""
    return 90 <= arch < 120


_ARCH: dict = {}


def _arch(device: torch.device) -> int:
    """The compute capability of a CUDA device as 80, 90...; 90 elsewhere (the interpreter)."""
    if device.type != "cuda":
        return 90
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _ARCH:
        major, minor = torch.cuda.get_device_capability(index)
        _ARCH[index] = 10 * major + minor
    return _ARCH[index]


def _kernel_weights(z, weights, op_dtype):
    """Latent shares [B, H] (with the biases of layers 1 and 3), the xyz columns [H, 3] of layers 1 and 3, the
    H x H matrices in the dot operands' dtype, the other biases and the output layer: contiguous."""
    W0, b0, W1, b1, W2, b2, W3, b3, W4, b4 = weights
    L, H = z.shape[1], W1.shape[0]
    c0 = torch.addmm(b0, z, W0[:, :L].t())
    c2 = torch.addmm(b2, z, W2[:, H : H + L].t())
    mats = [w.to(op_dtype).contiguous() for w in (W1, W2[:, :H], W3)]
    return dict(C0=c0.contiguous(), C2=c2.contiguous(), W0P=W0[:, L:].contiguous(), W2P=W2[:, H + L :].contiguous(),
                W1=mats[0], B1=b1.contiguous(), W2H=mats[1], W3=mats[2], B3=b3.contiguous(),
                W4=W4.reshape(-1).contiguous(), B4=b4.contiguous())


def screens(dtype: torch.dtype, compute_dtype, device: torch.device) -> bool:
    """Whether a call runs exact float32 as a bfloat16 screen plus a float32 refinement (:func:`_refined`): float32
    without autocast where tf32 is not allowed (``torch.get_float32_matmul_precision() == "highest"``) on CUDA; in
    the interpreter only with SDFSRN_TRITON_SCREEN=1 (the tests'), as IEEE float32 dots run there."""
    if dtype != torch.float32 or compute_dtype is not None:
        return False
    if device.type == "cuda":
        return torch.get_float32_matmul_precision() == "highest"
    return os.environ.get("SDFSRN_TRITON_SCREEN", "0") == "1"


@torch.no_grad()
def triton_forward(z, origins, directions, near, far, valid, jitter, weights, num_samples: int, tau: float,
                   tau_min: float, activation: str, beta: float, compute_dtype=None):
    """``(sil [B, R], sdf [B, R, S], lse [B, R])`` as :func:`~sdfsrn_fast.backends.fused.fused_forward`."""
    if screens(z.dtype, compute_dtype, z.device):
        sil, sdf, lse = _forward_kernel(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau,
                                        tau_min, activation, beta, torch.bfloat16)
        return _refined(sdf, z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min,
                        activation, beta)
    return _forward_kernel(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min,
                           activation, beta, compute_dtype)


def _exact_kernels(device: torch.device):
    """The compiled backend's chunk kernels, run eagerly, at its chunk size: exact float32's refinement and backward."""
    from .fused import Kernels, chunk_size, mlp_backward, mlp_forward_gather

    return Kernels(mlp_forward_gather, mlp_backward, chunk_size(device))


def _refined(sdf, z, origins, directions, near, far, valid, jitter, weights, S: int, tau: float, tau_min: float,
             activation: str, beta: float):
    """Exact float32 from the kernel's bfloat16 screen ``sdf``: the samples that could move a silhouette by more than
    float32's round-off (those near each ray's soft minimum) recomputed in float32 by the compiled backend's
    algorithm, eagerly (:func:`~sdfsrn_fast.backends.fused.refine_screened`, the compiled backend's screen on CPUs
    with AMX), then each ray's logsumexp and silhouette from the refined values."""
    from .fused import _evaluate, _latent_share, refine_screened, sample_offsets, sample_points_at

    B, R = valid.shape
    kernels = _exact_kernels(z.device)
    c0, c2, kernel_weights = _latent_share(z, *weights)
    v = valid.reshape(-1)

    def exact_at(idx):
        rays, k = sample_offsets(idx, jitter, S, z.dtype)
        p = sample_points_at(origins.reshape(-1, 3)[rays], directions.reshape(-1, 3)[rays], near.reshape(-1)[rays],
                             far.reshape(-1)[rays], k, S)
        return _evaluate(kernels.forward, kernels.chunk, p, torch.div(rays, R, rounding_mode="floor"),
                         (c0, c2, *kernel_weights), activation, beta, z.dtype)

    s = refine_screened(sdf.reshape(-1, S), tau, tau_min, exact_at, rows=v)
    lse = torch.where(v, torch.logsumexp(-s / tau_min, dim=-1), 0.0)
    sil = torch.where(v, torch.sigmoid(lse * (tau_min / tau)), 0.0)  # as fused_forward
    return sil.view(B, R), s.view(B, R, S), lse.view(B, R)


def _forward_kernel(z, origins, directions, near, far, valid, jitter, weights, num_samples: int, tau: float,
                    tau_min: float, activation: str, beta: float, compute_dtype=None):
    B, R, _ = origins.shape
    S, H = num_samples, weights[2].shape[0]
    dot, acc, op_dtype = _precision(z.dtype, compute_dtype, z.device)
    cfg = kernel_config(H, dot, S, "forward", _arch(z.device))
    w = _kernel_weights(z, weights, op_dtype)
    sdf = z.new_empty(B * R, S)  # the kernel writes every element: zeros on invalid rays
    lse = z.new_empty(B * R)
    sil = z.new_empty(B * R)
    # the decoder runs at every sample of the valid rays (and of invalid ones sharing a program with one); counted
    # only when read, so that no sync is needed here
    STATS.update(forward_points=lambda: int(valid.sum()) * S, refined_points=0, screened_points=0, screen_error=0.0)
    if B * R:
        n_tiles = B * _cdiv(R, cfg["BLOCK_R"])
        nprog = min(n_tiles, _programs(z.device)) if cfg["PERSIST"] else n_tiles
        LAUNCHED[("forward", H, dot)] = _render_fwd_kernel[(nprog,)](
            origins.contiguous(), directions.contiguous(), near.contiguous(), far.contiguous(),
            jitter.contiguous() if jitter is not None else near, valid.contiguous(),
            w["C0"], w["C2"], w["W0P"], w["W2P"], w["W1"], w["B1"], w["W2H"], w["W3"], w["B3"], w["W4"], w["B4"],
            sdf, lse, sil, R, S, 1.0 / tau_min, tau_min / tau, float(beta), n_tiles, nprog,
            ACT=0 if activation == "relu" else 1, HAS_JIT=jitter is not None, ACC=acc, DOT=dot,
            BLOCK_R=cfg["BLOCK_R"], BLOCK_S=cfg["BLOCK_S"], HT=cfg["HT"], NT=cfg["NT"], H=H, LOADS=cfg["LOADS"],
            PERSIST=cfg["PERSIST"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return sil.view(B, R), sdf.view(B, R, S), lse.view(B, R)


def _programs(device: torch.device) -> int:
    """Programs of a persistent launch: one per SM on CUDA; 3 in the interpreter (several tiles each in tests)."""
    if device.type != "cuda":
        return 3
    return torch.cuda.get_device_properties(device).multi_processor_count


_OUT_DTYPE = {}  # per matmul: whether this torch's CUDA version takes out_dtype (found out on its first call)


def _mm(a, b, f, acc=None):
    """``acc + a @ b`` (``acc`` None: ``a @ b``) in ``f`` for operands in the kernels' dot dtype (strided views
    welcome), 2-D or batched 3-D: one cuBLAS call on a GPU."""
    op = (torch.baddbmm if acc is not None else torch.bmm) if a.dim() == 3 else (
        torch.addmm if acc is not None else torch.mm)
    if a.dtype != f and a.is_cuda and _OUT_DTYPE.get(op, True):
        try:  # bfloat16/float16 operands, float32 output (torch >= 2.8 on CUDA): no conversion pass
            return op(a, b, out_dtype=f) if acc is None else op(acc, a, b, out_dtype=f)
        except (RuntimeError, TypeError):
            _OUT_DTYPE[op] = False
    a, b = a.to(f), b.to(f)
    return op(a, b) if acc is None else op(acc, a, b)


@torch.no_grad()
def triton_backward(grad_sil, sil, sdf, lse, z, origins, directions, near, far, valid, jitter, weights,
                    num_samples: int, tau: float, tau_min: float, grad_eps: float, activation: str, beta: float,
                    compute_dtype=None) -> list:
    """Gradients ``[dz, dW0, db0, ..., dW4, db4]`` as :func:`~sdfsrn_fast.backends.fused.fused_backward`.

    Host work: the kept samples (one ``nonzero``, the only sync), then per chunk of them one kernel launch and two
    matmuls, each accumulating over the chunks: the three H x H weight gradients ``d_l^T h_{l-1}`` as one batch
    (the buffer's column blocks are ordered so that the three pairs are equally strided), and ``A^T [d1 d3 d2 d0 h3]``
    whose rows (the kernel's per-sample one-hot of the shape, x, y, z and g) give the latent shares per shape, the
    xyz columns, dW4 and (summed over the shapes) the biases at once."""
    from .fused import assemble_grads, fused_backward

    if screens(z.dtype, compute_dtype, z.device):  # exact float32: the compiled backend's backward, run eagerly
        return fused_backward(_exact_kernels(z.device), grad_sil, sil, sdf, lse, z, origins, directions, near, far,
                              valid, jitter, weights, num_samples, tau, tau_min, grad_eps, activation, beta)
    B, R, _ = origins.shape
    S, H = num_samples, weights[2].shape[0]
    dot, acc, op_dtype = _precision(z.dtype, compute_dtype, z.device)
    cfg = kernel_config(H, dot, S, "backward", _arch(z.device))
    w = _kernel_weights(z, weights, op_dtype)
    idx, g = _kept_indices(grad_sil, sil, sdf, lse, valid, S, tau, tau_min, grad_eps)
    n = idx.numel()
    STATS["backward_points"] = n
    f = z.dtype
    bounds = torch.arange(0, (B + 1) * R * S, R * S, device=z.device)  # the first sample index of each shape
    o, d, nr, fr = origins.contiguous(), directions.contiguous(), near.contiguous(), far.contiguous()
    chunk = _backward_chunk()
    per = mats = None
    # one buffer for every chunk (the launches and matmuls run in stream order): a new one a chunk held two at once
    # while the next was allocated (64 MB at the study shape in bfloat16, against 32)
    hd_all = torch.empty(min(max(n, 1), chunk), 8 * H, dtype=op_dtype, device=z.device)
    at_all = torch.empty(hd_all.shape[0], B + 4, dtype=op_dtype, device=z.device)
    for start in range(0, max(n, 1), chunk):
        ii, gg = idx[start : start + chunk], g[start : start + chunk]
        m = ii.numel()
        hd, at = hd_all[:m], at_all[:m]  # per sample: h0 h2 h1 d1 d3 d2 d0 h3, and [one-hot | x | y | z | g]
        col = [hd[:, i * H : (i + 1) * H] for i in range(8)]
        LAUNCHED[("backward", H, dot)] = _render_bwd_kernel[(_cdiv(m, cfg["BLOCK_M"]) + B,)](
            o, d, nr, fr, jitter.contiguous() if jitter is not None else nr, ii, gg,
            torch.searchsorted(ii, bounds), B,
            w["C0"], w["C2"], w["W0P"], w["W2P"], w["W1"], w["B1"], w["W2H"], w["W3"], w["B3"], w["W4"],
            col[0], col[2], col[1], *col[3:], at, B + 4, S, float(beta),
            HAS_JIT=jitter is not None, ACT=0 if activation == "relu" else 1, ACC=acc, DOT=dot,
            BLOCK_M=cfg["BLOCK_M"], BLOCK_B=_pow2(max(B, 2)), HT=cfg["HT"], NT=cfg["NT"], H=H,
            LD=8 * H, LOADS=cfg["LOADS"],
            num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        # two matmuls a chunk, accumulated over the chunks: [d1 d3 d2]^T [h0 h2 h1] as one batch of three (the
        # weight gradients of layers 1, 3, 2), and A^T [d1 d3 d2 d0 h3]
        ds_t = hd[:, 3 * H : 6 * H].view(m, 3, H).permute(1, 2, 0)  # [3, H, m]
        hs = hd[:, : 3 * H].view(m, 3, H).permute(1, 0, 2)  # [3, m, H]
        mats = _mm(ds_t, hs, f, mats)  # [3, H, H]
        per = _mm(at.t(), hd[:, 3 * H :], f, per)  # [B + 4, 5 H]
    dW1, dW3, dW2h = mats[0], mats[1].clone(), mats[2]  # a custom op's outputs may not alias one another
    # per's columns: d1 | d3 | d2 | d0 | h3 summed with the rows' weights: shape b's one-hot (b < B), x, y, z, g
    dc2, dc0 = per[:B, 2 * H : 3 * H], per[:B, 3 * H : 4 * H]
    xyz = per[B : B + 3]
    dW4 = per[B + 3, 4 * H :]
    db1, db3 = per[:B, :H].sum(0), per[:B, H : 2 * H].sum(0)  # every sample is in one shape's row
    return assemble_grads(z, weights, dc0, dc2, xyz[:, 3 * H : 4 * H].t(), dW1, db1, dW2h,
                          xyz[:, 2 * H : 3 * H].t(), dW3, db3, dW4, g.sum())


triton_render = define_render_ops("triton", triton_forward, triton_backward) if triton is not None else None
KERNELS = (_render_fwd_kernel, _render_bwd_kernel) if triton is not None else ()


def render_triton(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter,
                  compute_dtype=None):
    """Arguments as in ``render`` (checked there; tau and tau_min as 0-d tensors; compute_dtype: autocast's)."""
    sil, _, _ = triton_render(z, origins, directions, near, far, valid, jitter, decoder_weights(decoder), num_samples,
                              tau, tau_min, grad_eps, decoder.activation, decoder.softplus_beta, compute_dtype)
    return sil


# ------------------------------------------------------------------------ ahead-of-time compilation (no GPU)

# Shared memory per block on each architecture and the tensor-core instructions its dots should compile to:
# sm_90's wgmma (HGMMA) needs 64 rows a warpgroup, the backward's 32-point tiles take mma.sync (HMMA) as on sm_80;
# sm_100's tcgen05 dots are UTCHMMA; sm_120 has mma.sync only.
SHARED_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024, 100: 227 * 1024, 120: 99 * 1024}
TENSOR_CORE_OPS = {80: ("HMMA",), 86: ("HMMA",), 89: ("HMMA",), 90: ("HGMMA", "HMMA"), 100: ("UTCHMMA", "HMMA"),
                   120: ("HMMA",)}
AOT_PRECISIONS = {"tf32": 1, "bf16": 2, "fp16": 3}  # name -> DOT mode


def _aot_source(kernel: str, hidden: int, dot: int, arch: int = 90, activation: str = "relu"):
    from triton.compiler import ASTSource

    cfg = kernel_config(hidden, dot, 64, kernel, arch)
    op = {2: "*bf16", 3: "*fp16"}.get(dot, "*fp32")
    f32 = "*fp32"  # (the backward as for the study's batch of 4 shapes: BLOCK_B = 4)
    common = dict(C0=f32, C2=f32, W0P=f32, W2P=f32, W1=op, B1=f32, W2H=op, W3=op, B3=f32, W4=f32)
    const = dict(ACT=0 if activation == "relu" else 1, ACC=tl.float32, DOT=dot, HT=cfg["HT"], NT=cfg["NT"], H=hidden,
                 LOADS=cfg["LOADS"])
    if kernel == "forward":
        sig = dict(O=f32, D=f32, NEAR=f32, FAR=f32, JIT=f32, VALID="*i1",
                   **common, B4=f32, SDF=f32, LSE=f32, SIL=f32, R="i32", S="i32", inv_tau_min="fp32",
                   tau_min_over_tau="fp32", BETA="fp32", N_TILES="i32", NPROG="i32")
        const.update(HAS_JIT=True, BLOCK_R=cfg["BLOCK_R"], BLOCK_S=cfg["BLOCK_S"], PERSIST=cfg["PERSIST"])
        fn = _render_fwd_kernel
    else:
        sig = dict(O=f32, D=f32, NEAR=f32, FAR=f32, JIT=f32, IDX="*i64", G=f32, SHAPE_START="*i64", NB="i32",
                   **common, H0=op, H1=op, H2=op, D1=op, D3=op, D2=op, D0=op, H3=op, AT=op, KA="i32", S="i32",
                   BETA="fp32")
        const.update(HAS_JIT=True, BLOCK_M=cfg["BLOCK_M"], BLOCK_B=4, LD=8 * hidden)
        fn = _render_bwd_kernel
    sig.update({k: "constexpr" for k in const})
    # what a launch specializes on (triton's JIT: "tt.divisibility" 16 for 16-byte aligned pointers and for integers
    # that are multiples of 16), as at the study shape: every tensor aligned, R = 4096 rays and S = 64 samples.
    # Without it the weight tiles compiled to 2-byte loads (LDG.E.U16) where a launch gets 16-byte ones (LDG.E.128)
    attrs = {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k, t in sig.items()
             if t.startswith("*") or k in ("R", "S")}
    return ASTSource(fn=fn, signature=sig, constexprs=const, attrs=attrs), cfg


def compile_report(arch: int, kernel: str, hidden: int, precision: str, activation: str = "relu") -> dict:
    """Compiles one kernel for sm_``arch`` without a GPU (``triton.compile`` with a ``GPUTarget``) and reads its
    registers, spill (local memory) bytes, shared memory and tensor-core instructions off the cubin with the
    ``cuobjdump`` shipped in the triton wheel."""
    import re
    import subprocess
    import tempfile
    import time

    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia import __file__ as nvidia_init

    dot = AOT_PRECISIONS[precision]
    src, cfg = _aot_source(kernel, hidden, dot, arch, activation)
    t0 = time.perf_counter()
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                        options={"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]})
    seconds = time.perf_counter() - t0
    cuobjdump = os.path.join(os.path.dirname(nvidia_init), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(ck.asm["cubin"])
        f.flush()
        usage = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    field = lambda name: int(re.search(rf"{name}:(\d+)", usage).group(1))  # noqa: E731
    ops = {op: len(re.findall(rf"\b{op}\b", sass)) for op in ("HGMMA", "UTCHMMA", "HMMA", "FFMA")}
    shared = max(int(ck.metadata.shared), field("SHARED"))
    tensor_core = sum(ops[op] for op in TENSOR_CORE_OPS[arch])
    row = dict(arch=f"sm_{arch}", kernel=kernel, hidden=hidden, precision=precision, activation=activation,
               block_m=cfg["BLOCK_M"], warps=cfg["num_warps"], loads=cfg["LOADS"], persist=cfg["PERSIST"],
               registers=field("REG"), spill_bytes=field("LOCAL") + field("STACK"), shared_bytes=shared,
               hgmma=ops["HGMMA"], utchmma=ops["UTCHMMA"], hmma=ops["HMMA"], ffma=ops["FFMA"], compile_s=seconds)
    problems = []
    if row["spill_bytes"] and hidden <= 128:
        problems.append("spills at H <= 128")
    if shared > SHARED_LIMIT[arch]:
        problems.append(f"shared memory {shared} B over the sm_{arch} limit {SHARED_LIMIT[arch]} B")
    if re.search(r"\bBPT\.TRAP\b", sass) and ops["FFMA"] == 0:  # the whole body compiled away to a trap
        problems.append("compiles to a trap")
    elif tensor_core == 0:
        problems.append("no tensor-core instruction")
    if row["registers"] <= 32 and row["spill_bytes"]:
        problems.append("32 registers: everything spilled")
    row["problems"] = problems
    return row
