"""The fast render algorithm in PyTorch: a forward that keeps no activations and a sparse soft-min backward that
recomputes, as two plain functions (:func:`fused_forward`, :func:`fused_backward`) over swappable chunk kernels.
They are not autograd code: the backends wrap them as custom ops (:mod:`._ops`), which carry the autograd.

Forward runs over fixed-size chunks of the samples of valid rays only, and returns per sample only its scalar
SDF, per ray the logsumexp of the soft minimum and the silhouette: never a hidden activation, so a training
step's memory grows with B x R x S scalars. Backward recomputes each kept sample's point, forms the soft-min weights
``w_k = exp(-s_k / tau_min - lse)`` and ``dL/ds_k = dL/dm * w_k`` (docs/contract.md), keeps the samples that matter
(``w_k >= grad_eps`` on rays whose ``|dL/dm|`` is at least ``grad_eps`` times the largest; everything nonzero
when ``grad_eps = 0``, which is exact), recomputes the decoder there and backpropagates by hand. The latent
enters only through ``W_z z`` (layers 1 and 3), which is computed once per shape in forward and backward.

The chunk kernels (:func:`mlp_forward_gather`, :func:`mlp_backward`) are plain tensor code that the ``compiled``
backend hands to ``torch.compile``; every chunk has the same shape (the last one is padded), so they compile
once per dtype and device. Mixed precision (``compute_dtype``, from ``torch.autocast``): the decoder's H x H
products in bfloat16/float16; the K = 3 xyz products, the latent shares, the SDF and everything after it in the
inputs' dtype (:func:`mlp_forward`). Only :class:`~sdfsrn_fast.SDFDecoder` takes this path; a generic callable decoder
takes :func:`render_callable_chunked`, which autograds through the callable chunk by chunk (checkpointed).
On CPU the kernels' float32 matmuls of width H go through oneDNN (:func:`linear`), which runs AVX-512 where
aten's MKL may not.
On the fused path ``origins`` and ``directions`` get gradients (``fused_backward(..., ray_grads=True)``: each kept
sample's point gradient, summed along its ray, times t for the direction); near, far and jitter get none.

Optionally (``Kernels.screen``; the compiled backend on CPUs with AMX) the forward first evaluates every sample in
bfloat16 and recomputes in float32 only the samples that can move a silhouette by more than SCREEN_TOL
(:func:`_screened_sdf`); the result stays within float32 round-off of the plain forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..models import activation as _act, activation_grad as _act_grad
from ._instrument import record
from ._ops import RenderCall, no_crossing
from .reference import first_crossing, sample_points, soft_silhouette

__all__ = ["fused_forward", "fused_backward", "kept_indices", "kept_samples", "sample_offsets", "refine_screened",
           "sample_points_at", "assemble_grads", "ray_gradients", "render_callable_chunked", "chunk_size", "Kernels",
           "EAGER"]

# Points per chunk, by device type. CPU: measured by `python -m sdfsrn_fast.bench --sweep-chunk` (no-grad
# forward GFLOP/s at the study's width, 2-core Xeon, docs/performance.md). 2048 points keep a chunk's activations
# (2048 x 256 float32 = 2 MiB each) in cache. CUDA: on an H100, 65536 points ran at 22 TFLOP/s against 15 at 16384.
# MPS: a guess, never run.
_CHUNK = {"cpu": 2048, "cuda": 65536, "mps": 16384}


def chunk_size(device: torch.device) -> int:
    return _CHUNK.get(device.type, 8192)


# CPU float32 matmuls of width H go through oneDNN, not through aten's sgemm (MKL): on a 2-core AMD EPYC (AVX-512,
# 2026-11-27) MKL runs its AVX2 path at 185-213 GFLOP/s for [2048, H] x [H, H] while oneDNN reaches 365-428 for
# x @ W^T and d @ W (H = 128, 256; a throwaway script). `python -m sdfsrn_fast.bench --shapes study
# --backends compiled` with aten's matmul, then with oneDNN: forward 1.488 -> 0.855 s, forward+backward 1.664 ->
# 0.908 s. Weight gradients (d^T h, a reduction over the chunk) stay on aten: oneDNN was no faster there (100-270
# GFLOP/s).
_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")

if _ONEDNN:

    @torch.library.custom_op("sdfsrn_fast::linear_onednn", mutates_args=())
    def _linear_onednn(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T`` by oneDNN (opaque to torch.compile, which fuses the elementwise work around it)."""
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")

    @_linear_onednn.register_fake
    def _(x, weight):
        return x.new_empty(x.shape[0], weight.shape[0])


def linear(x, weight):
    """``x @ weight.T`` for x [n, K], weight [M, K] (any strides): oneDNN for CPU float32, aten otherwise."""
    if _ONEDNN and x.dtype == torch.float32 and x.device.type == "cpu":
        return _linear_onednn(x, weight)
    return x @ weight.t()


def mlp_forward(p, c0, c2, W0p, W1, b1, W2h, W2p, W3, b3, w4, b4, activation: str, beta: float):
    """SDF of one chunk. p: [n, 3] points; c0, c2: [n, H] per-point ``W_z z + b`` of layers 1 and 3 (the
    latent's share, computed once per shape); weights as in :func:`decoder_weights`. Returns s [n].

    Precision follows the weights: the three H x H layers (W1, W2h, W3 and their biases) run in the dtype of W1
    (bfloat16 or float16 for mixed precision), the xyz parts of layers 1 and 3 (K = 3), their sums with the latent
    shares and the output layer in the dtype of w4 (float32 then); in full precision every ``.to`` is a no-op."""
    low, out = W1.dtype, w4.dtype
    h = _act(torch.addmm(c0, p, W0p.t()), activation, beta).to(low)
    h = _act(linear(h, W1) + b1, activation, beta)
    h = _act(linear(h, W2h).to(out) + torch.addmm(c2, p, W2p.t()), activation, beta).to(low)
    h = _act(linear(h, W3) + b3, activation, beta)
    return h.to(out) @ w4 + b4


def mlp_backward(p, c0, c2, g, W0p, W1, b1, W2h, W2p, W3, b3, w4, b4, activation: str, beta: float):
    """Recomputes one chunk and backpropagates ``g = dL/ds`` [n] by hand (precisions as in :func:`mlp_forward`;
    every gradient it returns is in the dtype of w4).

    Returns ``(d0, dW0p, dW1, db1, d2, dW2h, dW2p, dW3, db3, dW4, db4, dp)`` where d0, d2 [n, H] are the
    pre-activation gradients of layers 1 and 3, to be summed per shape into the latent's share, and dp [n, 3] the
    gradient with respect to the points (for ray gradients; two [n, H] x [H, 3] products, under 1% of the chunk's
    work)."""
    low, out = W1.dtype, w4.dtype
    a0 = torch.addmm(c0, p, W0p.t())
    h0 = _act(a0, activation, beta).to(low)
    a1 = linear(h0, W1) + b1
    h1 = _act(a1, activation, beta)
    a2 = linear(h1, W2h).to(out) + torch.addmm(c2, p, W2p.t())
    h2 = _act(a2, activation, beta).to(low)
    a3 = linear(h2, W3) + b3
    h3 = _act(a3, activation, beta)
    dW4 = g @ h3.to(out)
    db4 = g.sum()
    d3 = (g[:, None] * w4[None, :] * _act_grad(a3, activation, beta).to(out)).to(low)
    dW3, db3 = (d3.t() @ h2).to(out), d3.sum(0, dtype=out)
    d2 = linear(d3, W3.t()).to(out) * _act_grad(a2, activation, beta)
    d2_low = d2.to(low)
    dW2h, dW2p = (d2_low.t() @ h1).to(out), d2.t() @ p
    d1 = linear(d2_low, W2h.t()) * _act_grad(a1, activation, beta)
    dW1, db1 = (d1.t() @ h0).to(out), d1.sum(0, dtype=out)
    d0 = linear(d1, W1.t()).to(out) * _act_grad(a0, activation, beta)
    dW0p = d0.t() @ p
    dp = d0 @ W0p + d2 @ W2p
    return d0, dW0p, dW1, db1, d2, dW2h, dW2p, dW3, db3, dW4, db4, dp


def mlp_forward_gather(p, bidx, c0_shape, c2_shape, *weights_act):
    """:func:`mlp_forward` with the per-point latent shares gathered inside (``c0_shape[bidx]``, bidx [n] the shape
    of each point), so that a compiled kernel fuses the gather into the first layer: the forward kernel's form."""
    return mlp_forward(p, c0_shape[bidx], c2_shape[bidx], *weights_act)


@dataclass
class Kernels:
    """The chunk kernels a fast backend supplies (eager or compiled), and its chunk size.

    ``forward`` and ``screen`` have the form of :func:`mlp_forward_gather`, ``backward`` that of
    :func:`mlp_backward`. ``screen`` (optional): the forward in ``screen_dtype`` (bfloat16), run over every sample first
    with its own chunk size; the forward then recomputes in full precision only the samples that can matter
    (see :func:`_screened_sdf`). ``None``: every sample in full precision; so are float64 calls and calls with
    fewer samples than one screen chunk (the padding would cost more than the screen saves)."""

    forward: Callable
    backward: Callable
    chunk: int
    screen: Callable | None = None
    screen_chunk: int = 0
    screen_dtype: torch.dtype = torch.bfloat16


EAGER = Kernels(mlp_forward_gather, mlp_backward, 0)

# The screen's error budget (see _screened_sdf): at most SCREEN_TOL on each ray's silhouette, about float32's
# round-off at 1. SCREEN_ERROR is the first guess of the screen's largest error |s_bf16 - s_fp32| (measured near
# 0.01 on decoders of width 256); each forward checks it on the samples it recomputed and widens if it was exceeded.
# SCREEN_WORTH: the largest share of samples to recompute for which screening still pays (bfloat16 costs a
# quarter to a third of float32 here, plus the gathers).
SCREEN_TOL, SCREEN_ERROR, SCREEN_WORTH = 1e-7, 0.02, 0.6


def _padded_chunks(n: int, chunk: int):
    """Start offsets of fixed-size chunks covering n items, the last one padded; at least one chunk, so that
    an empty set still yields (zero) results of the right shapes."""
    return range(0, max(n, 1), chunk)


def _take(t: torch.Tensor, start: int, chunk: int, pad_value=0):
    """t[start:start+chunk], padded with pad_value to exactly ``chunk`` rows."""
    part = t[start : start + chunk]
    short = chunk - part.shape[0]
    if short == 0:
        return part
    pad = torch.full((short,) + tuple(t.shape[1:]), pad_value, dtype=t.dtype, device=t.device)
    return torch.cat([part, pad])


def _shares(call: RenderCall):
    """``(c0, c2, weights)``: the latent's share of layers 1 and 3 per shape ([B, H] each) and the weights in the order
    the chunk kernels take them; with ``compute_dtype`` (mixed precision) the H x H layers' weights and biases cast
    to it (:func:`mlp_forward` says which part runs in which dtype)."""
    p = call.parts(call.compute_dtype)
    low = (lambda t: t) if call.compute_dtype is None else (lambda t: t.to(call.compute_dtype))
    return p.c0, p.c2, (p.w0p, p.w1, low(p.b1), p.w2h, p.w2p, p.w3, low(p.b3), p.w4, p.b4[0])


def _evaluate(kernel, chunk, points, sample_b, shares, activation, beta, dtype):
    """SDF [n] in ``dtype`` at points [n, 3] of shapes sample_b [n], chunk by chunk (the last one padded) with a
    kernel of the form of :func:`mlp_forward_gather`; ``shares``: (c0_shape, c2_shape, *weights) of
    :func:`_shares`, in the points' dtype."""
    n = points.shape[0]
    chunk = chunk or max(n, 1)
    s = torch.empty(n, dtype=dtype, device=points.device)
    for start in _padded_chunks(n, chunk):
        out = kernel(_take(points, start, chunk), _take(sample_b, start, chunk), *shares, activation, beta)
        s[start : start + chunk] = out[: min(chunk, n - start)]
    return s


def _to_recompute(s_low, tau, tau_min, err):
    """Samples [Nv, S] whose bfloat16 value, off by up to ``err``, could move their ray's silhouette by more
    than SCREEN_TOL. With every value off by at most err, a sample left in bfloat16 has s_k - m >= s_low_k - m_low
    - 2 err, so its true weight w_k < exp(-(s_low_k - m_low - 2 err) / tau_min); all of them together move m by
    at most tau_min * sum_k w_k * expm1(err / tau_min), and the slope |d sil / d m| at the true m is at most
    e^(err / tau) the screened one. Leaving only samples with w_k < 1 / budget keeps |d sil| <= SCREEN_TOL;
    budget < 1 means that even m off by err is within it: the ray needs nothing recomputed."""
    S = s_low.shape[1]
    m_low = -tau_min * torch.logsumexp(-s_low / tau_min, dim=-1, keepdim=True)
    a = m_low.abs() / tau  # log of the slope sil (1 - sil) / tau, without float32 saturating sil to 0 or 1:
    log_slope = -a - 2 * F.softplus(-a) - math.log(tau)
    x = err / tau_min  # log(expm1(x)), also where expm1 would overflow
    log_spread = x + math.log(-math.expm1(-x)) if x > 0 else -math.inf
    log_budget = math.log(S * tau_min / SCREEN_TOL) + log_spread + err / tau + log_slope
    return (log_budget >= 0) & (s_low <= m_low + tau_min * log_budget.clamp_min(0) + 2 * err)


def _screened_sdf(kernels, cfg, points, sample_b, c0_shape, c2_shape, weights):
    """SDF [Nv, S] of every sample, full precision where it matters, or None where screening would not pay.

    The screen evaluates every sample in bfloat16 (3-4x the float32 rate on CPUs with AMX); then the samples that
    could move their ray's silhouette by more than SCREEN_TOL (:func:`_to_recompute`: those near the ray's soft
    minimum, none on saturated rays) are recomputed in float32. The others keep their bfloat16 value: their
    soft-min weights are so small that their errors move the silhouette by at most SCREEN_TOL (float32's round-off
    at 1), and the backward drops them (grad_eps > 0) or gives them those weights. The bound assumes the screen's
    error |s_bf16 - s_fp32| is at most SCREEN_ERROR; it is checked on the recomputed samples, and where it was
    exceeded the selection widens for twice the error seen, until the check holds or every sample is recomputed.
    A pilot of about one screen chunk of evenly spaced rays first estimates the share to recompute; above
    SCREEN_WORTH (soft temperatures early in training) the caller evaluates everything in float32 instead."""
    S, tau, tau_min, activation, beta = cfg["S"], cfg["tau"], cfg["tau_min"], cfg["activation"], cfg["beta"]
    shares = (c0_shape, c2_shape, *weights)
    low = tuple(t.to(kernels.screen_dtype) for t in shares)

    def screen(p, b):  # bfloat16 SDF [len(b) // S, S], as float32
        s_low = _evaluate(kernels.screen, kernels.screen_chunk, p.to(kernels.screen_dtype), b, low, activation, beta,
                          torch.float32)
        return s_low.view(-1, S)

    rays = points.shape[0] // S
    pilot = torch.arange(0, rays, max(1, rays * S // max(kernels.screen_chunk, 1)), device=points.device)
    pilot_low = screen(points.view(rays, S, 3)[pilot].reshape(-1, 3), sample_b.view(rays, S)[pilot].reshape(-1))
    if _to_recompute(pilot_low, tau, tau_min, SCREEN_ERROR).float().mean() > SCREEN_WORTH:
        return None
    return refine_screened(screen(points, sample_b), tau, tau_min, lambda idx: _evaluate(
        kernels.forward, kernels.chunk, points[idx], sample_b[idx], shares, activation, beta, torch.float32))


def refine_screened(s_low, tau: float, tau_min: float, exact_at, rows=None):
    """The screen's SDF ``s_low`` [N, S] (float32) with every sample that could move its ray's silhouette by more
    than SCREEN_TOL recomputed by ``exact_at(flat indices into s_low) -> float32 values`` (see
    :func:`_screened_sdf`); ``rows`` [N] (bool): the rays to consider (the others keep ``s_low``). Records what it
    did (:func:`~._instrument.record`)."""
    s = s_low.clone()
    done = torch.zeros_like(s, dtype=torch.bool)  # recomputed, or not to consider
    skipped = 0
    if rows is not None:
        done |= ~rows[:, None]
        skipped = int(done.sum())
    assumed, seen = SCREEN_ERROR, 0.0
    while True:
        idx = (_to_recompute(s_low, tau, tau_min, assumed) & ~done).view(-1).nonzero().squeeze(1)
        if idx.numel():
            exact = exact_at(idx)
            seen = max(seen, (exact - s_low.view(-1)[idx]).abs().max().item())
            s.view(-1)[idx] = exact
            done.view(-1)[idx] = True
        if seen <= assumed or bool(done.all()):
            break
        assumed = 2 * seen
    settled = int(done.sum())
    record(refined_points=settled - skipped, screened_points=s.numel() - settled, screen_error=seen)
    return s


def sample_points_at(origins, directions, near, far, k, num_samples: int) -> torch.Tensor:
    """``p = o + t d`` with ``t = near + k (far - near) / S`` for per-sample offsets ``k`` (``index + 0.5`` plus
    any jitter), broadcasting: forward and backward compute their points with these same operations, so a sample
    recomputed in backward sits exactly where forward evaluated it."""
    return origins + sample_depths(near, far, k, num_samples)[..., None] * directions


def sample_depths(near, far, k, num_samples: int) -> torch.Tensor:
    """``t = near + k (far - near) / S`` of :func:`sample_points_at` (its ray gradients use the same t)."""
    return near + k * ((far - near) / num_samples)


def _tail(jitter, rows):
    return None if jitter is None else jitter.reshape(-1)[rows]


@torch.no_grad()
def fused_forward(kernels: Kernels, call: RenderCall):
    """Soft silhouettes of an SDFDecoder (``call.weights``), without autograd, with the chunk kernels ``kernels``
    (eager, compiled...). Mixed precision (``call.compute_dtype``): the decoder's H x H products in that dtype,
    everything else (SDF, soft minimum, silhouette) in the inputs'.

    Returns:
        ``(sil [B, R], sdf [B, R, S], lse [B, R], t0, hit)``: silhouettes, every sample's SDF and each ray's
        ``logsumexp_k(-s_k / tau_min)`` (0 on invalid rays; what :func:`fused_backward` needs), and with
        ``call.surface`` each ray's surface crossing from the same samples ([B, R] each; else empty). A call with
        ``surface`` skips the bfloat16 screen, whose samples far from the soft minimum (the crossing among them)
        keep their bfloat16 values.
    """
    B, R, S, z = call.batch, call.rays, call.num_samples, call.z
    near = call.near
    ray_index = call.valid.reshape(-1).nonzero().squeeze(1)  # sorted, so the samples of one shape are contiguous
    ray_b = torch.div(ray_index, R, rounding_mode="floor")
    k = torch.arange(S, dtype=near.dtype, device=near.device) + 0.5
    jit = _tail(call.jitter, ray_index)
    k = k if jit is None else k + jit[:, None]
    points = sample_points_at(call.origins.reshape(-1, 3)[ray_index][:, None],
                              call.directions.reshape(-1, 3)[ray_index][:, None], near.reshape(-1)[ray_index][:, None],
                              call.far.reshape(-1)[ray_index][:, None], k, S)
    points = points.reshape(-1, 3).contiguous()
    c0_shape, c2_shape, kernel_weights = _shares(call)
    n = points.shape[0]
    record(forward_points=n, refined_points=0, screened_points=0, screen_error=0.0)
    sample_b = ray_b.repeat_interleave(S)
    tau, tau_min, activation, beta = call.tau, call.tau_min, call.activation, call.beta
    cfg = dict(S=S, tau=tau, tau_min=tau_min, activation=activation, beta=beta)
    s = None
    exact32 = call.compute_dtype is None and z.dtype == torch.float32
    if kernels.screen is not None and exact32 and n >= kernels.screen_chunk and not call.surface:
        s = _screened_sdf(kernels, cfg, points, sample_b, c0_shape, c2_shape, kernel_weights)
    if s is None:
        s = _evaluate(kernels.forward, kernels.chunk, points, sample_b, (c0_shape, c2_shape, *kernel_weights),
                      activation, beta, z.dtype).view(-1, S)
    lse_valid = torch.logsumexp(-s / tau_min, dim=-1)
    sdf = z.new_zeros(B * R, S)
    sdf[ray_index] = s
    lse = z.new_zeros(B * R)
    lse[ray_index] = lse_valid
    sil = z.new_zeros(B * R)
    sil[ray_index] = torch.sigmoid(lse_valid * (tau_min / tau))  # m = -tau_min * lse, sil = sigmoid(-m / tau)
    crossing = no_crossing(call)
    if call.surface:  # from the same samples, on the valid rays
        t0_valid, hit_valid = first_crossing(s, near.reshape(-1)[ray_index], call.far.reshape(-1)[ray_index],
                                             torch.ones_like(ray_index, dtype=torch.bool), S, jit)
        hit = torch.zeros(B * R, dtype=torch.bool, device=z.device).index_put_((ray_index,), hit_valid)
        crossing = (z.new_zeros(B * R).index_put_((ray_index,), t0_valid).view(B, R), hit.view(B, R))
    return sil.view(B, R), sdf.view(B, R, S), lse.view(B, R), *crossing


def kept_indices(grad_sil, sil, sdf, lse, valid, num_samples: int, tau: float, tau_min: float, grad_eps: float):
    """The samples the sparse backward recomputes: ``(idx [n], g [n])``, their indices into the ``B * R * S``
    samples (ascending: by ray, then along it) and ``g = dL/ds`` there. Kept: ``w_k >= grad_eps`` on valid rays
    whose ``|dL/dm|`` is at least ``grad_eps`` times the largest; with ``grad_eps = 0`` every term that is not
    negligible even in float64 (2^-80 of the largest). One ``nonzero``: the only sync."""
    S = num_samples
    v = valid.reshape(-1, 1)
    s = sil.reshape(-1, 1)
    dm = torch.where(v, -(1.0 / tau) * s * (1 - s) * grad_sil.reshape(-1, 1), 0)  # [B*R, 1]
    w = torch.exp(-sdf.reshape(-1, S) / tau_min - lse.reshape(-1, 1))  # soft-min weights [B*R, S]
    ds = dm * w

    def largest(t):
        return t.abs().max() if t.numel() else t.new_zeros(())

    if grad_eps > 0:
        keep = (w >= grad_eps) & (v & (dm.abs() >= grad_eps * largest(dm)))
    else:  # exact: drop only what is 2^-80 below the largest term, which float32 would carry as denormals
        keep = ds.abs() > largest(ds) * 2.0**-80  # (denormals made this backward 40x slower: 66 s vs 1.6 s)
    idx = keep.view(-1).nonzero().squeeze(1)
    return idx, ds.view(-1)[idx]


def kept_samples(call: RenderCall, grad_sil, sil, sdf, lse):
    """:func:`kept_indices` as ``(rays [n], k [n], g [n])``: each kept sample's ray (into B * R), its offset along
    it (``index + 0.5`` plus any jitter, for :func:`sample_points_at`) and ``g = dL/ds`` there."""
    S = call.num_samples
    idx, g = kept_indices(grad_sil, sil, sdf, lse, call.valid, S, call.tau, call.tau_min, call.grad_eps)
    return (*sample_offsets(idx, call.jitter, S, sdf.dtype), g)


def sample_offsets(idx, jitter, num_samples: int, dtype):
    """``(rays, k)`` of samples given by their indices into the ``B * R * S`` samples: each one's ray (into B * R)
    and offset along it (``index + 0.5`` plus any jitter, for :func:`sample_points_at`)."""
    rays = torch.div(idx, num_samples, rounding_mode="floor")
    k = (idx % num_samples).to(dtype) + 0.5
    jit = _tail(jitter, rays)
    return rays, (k if jit is None else k + jit)


@torch.no_grad()
def fused_backward(kernels: Kernels, call: RenderCall, grad_sil, sil, sdf, lse, ray_grads: bool = False) -> list:
    """Gradients ``[dz, dW0, db0, ..., dW4, db4]`` of the loss whose gradient w.r.t. the silhouettes of
    :func:`fused_forward` is ``grad_sil`` [B, R] (``sil, sdf, lse``: that forward's outputs; see the module docstring
    for what is kept and recomputed); with ``ray_grads`` followed by those of ``origins`` and ``directions``
    [B, R, 3] (a sample's point is ``o + t d``, t fixed by near, far and its offset)."""
    B, R, S, H, z = call.batch, call.rays, call.num_samples, call.hidden, call.z
    rays, k, g_all = kept_samples(call, grad_sil, sil, sdf, lse)
    kept_points = sample_points_at(call.origins.reshape(-1, 3)[rays], call.directions.reshape(-1, 3)[rays],
                                   call.near.reshape(-1)[rays], call.far.reshape(-1)[rays], k, S).contiguous()
    sample_b = torch.div(rays, R, rounding_mode="floor")
    c0_shape, c2_shape, kernel_weights = _shares(call)
    n = rays.shape[0]
    record(backward_points=n)
    chunk = kernels.chunk or max(n, 1)
    dc0 = torch.zeros(B, H, dtype=z.dtype, device=z.device)
    dc2 = torch.zeros_like(dc0)
    acc, dp = None, []
    for start in _padded_chunks(n, chunk):
        bidx = _take(sample_b, start, chunk)
        out = kernels.backward(_take(kept_points, start, chunk), c0_shape[bidx], c2_shape[bidx],
                               _take(g_all, start, chunk), *kernel_weights, call.activation, call.beta)
        d0, d2, rest = out[0], out[4], (out[1], *out[2:4], *out[5:11])
        dc0.index_add_(0, bidx, d0)  # padded rows have g = 0, hence d0 = d2 = 0
        dc2.index_add_(0, bidx, d2)
        acc = list(rest) if acc is None else [a + r for a, r in zip(acc, rest)]
        if ray_grads:
            dp.append(out[11][: min(chunk, n - start)])
    dW0p, dW1, db1, dW2h, dW2p, dW3, db3, dW4, db4 = acc
    grads = assemble_grads(call, dc0, dc2, dW0p, dW1, db1, dW2h, dW2p, dW3, db3, dW4, db4)
    if ray_grads:
        grads += ray_gradients(call, rays, k, torch.cat(dp))
    return grads


def ray_gradients(call: RenderCall, rays, k, dp) -> list:
    """``[d origins, d directions]`` [B, R, 3] from the point gradients ``dp`` [n, 3] of samples on ``rays`` [n] at
    offsets ``k`` [n] (:func:`kept_samples`): ``p = o + t d``, so each ray sums ``dp`` and ``t dp``."""
    t = sample_depths(call.near.reshape(-1)[rays], call.far.reshape(-1)[rays], k, call.num_samples)
    d_origins = call.origins.new_zeros(call.batch * call.rays, 3).index_add_(0, rays, dp.to(call.origins.dtype))
    d_directions = torch.zeros_like(d_origins).index_add_(0, rays, (t[:, None] * dp).to(call.origins.dtype))
    return [d_origins.view_as(call.origins), d_directions.view_as(call.directions)]


def assemble_grads(call: RenderCall, dc0, dc2, dW0p, dW1, db1, dW2h, dW2p, dW3, db3, dW4, db4) -> list:
    """``[dz, dW0, db0, ..., dW4, db4]`` from the sums a backward collected: dc0, dc2 [B, H] the pre-activation
    gradients of layers 1 and 3 summed per shape (the latent's share), the xyz columns' and the H x H layers'
    weight gradients, the output layer's [H] and []."""
    z, W0, W2 = call.z, call.weights[0], call.weights[4]
    L, H = z.shape[1], call.hidden
    dz = dc0 @ W0[:, :L] + dc2 @ W2[:, H : H + L]
    return [dz, torch.cat([dc0.t() @ z, dW0p], dim=1), dc0.sum(0), dW1, db1,
            torch.cat([dW2h, dc2.t() @ z, dW2p], dim=1), dc2.sum(0), dW3, db3, dW4.reshape(1, -1), db4.reshape(1)]


def render_callable_chunked(decoder, call: RenderCall, chunk_rays: int = 1024):
    """Any callable decoder, autograd through it chunk by chunk of rays (checkpointed, so only the SDF values
    are kept between forward and backward). Exact; no sparse backward. Returns ``(sil, t0, hit)``, the crossing
    None without ``call.surface``."""
    B, R, S = call.batch, call.rays, call.num_samples
    points = sample_points(call.origins, call.directions, call.near, call.far, S, call.jitter)  # [B, R, S, 3]
    parts = []
    for start in range(0, R, chunk_rays):
        pts = points[:, start : start + chunk_rays].reshape(B, -1, 3)
        fn = lambda zz, pp: decoder(zz, pp)  # noqa: E731
        if torch.is_grad_enabled():
            parts.append(checkpoint(fn, call.z, pts, use_reentrant=False))
        else:
            parts.append(fn(call.z, pts))
    sdf = torch.cat(parts, dim=1).reshape(B, R, S).to(call.origins.dtype)  # autocast: as in the reference
    sil = soft_silhouette(sdf, call.valid, call.tau, call.tau_min)
    if not call.surface:
        return sil, None, None
    return (sil, *first_crossing(sdf.detach(), call.near, call.far, call.valid, S, call.jitter))
