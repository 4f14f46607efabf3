"""Backend ``triton``: the host side of the fused Triton kernels (:mod:`._triton_kernels`) and their policy: which
calls the backend takes, tile sizes per GPU architecture, and the custom ops ``sdfsrn_fast::triton_render`` /
``triton_render_backward`` (:mod:`._ops`). Importing this module does not import triton; the first call does.

Forward: the latent shares, the weights' casts and one launch; the grid is fixed by (B, R), so the host issues no
``nonzero`` and no sync. Backward: the kept samples (two launches and one ``nonzero``, the only sync), then per
chunk of kept samples one launch and two cuBLAS matmuls accumulated over the chunks: the three H x H weight
gradients ``D_l^T H_{l-1}`` as one batch, and ``A^T [d1 d3 d2 d0 h3]`` (A's rows: one-hot of the shape, x, y, z, g)
for the latent shares, the xyz columns, ``dW4`` and the biases: deterministic, no atomics.

Precision on CUDA: tf32 when ``torch.get_float32_matmul_precision() != "highest"``, bfloat16/float16 under
``torch.autocast``; exact float32 and float64 are the compiled backend's there (IEEE dots compile to FMA loops that
spill). In the interpreter: float64 and float32 as IEEE dots, bfloat16 as an exact emulation. Measured figures,
and what is open, are in docs/performance.md.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional

import torch

from ..models import ACTIVATIONS, SDFDecoder
from . import triton_version
from ._instrument import launch, record, tuned
from ._ops import RenderCall, define_render_ops, no_crossing, ray_gradients_unsupported
from .fused import assemble_grads

__all__ = ["render", "triton_render", "triton_forward", "triton_backward", "kernel_config", "interpreting",
           "MAX_WIDTH", "unavailable", "unsupported", "auto_unsuited"]

MAX_WIDTH = 256  # hidden and latent widths the kernels take


def interpreting() -> bool:
    """Whether triton runs its kernels in its CPU interpreter (TRITON_INTERPRET=1, set before triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# --------------------------------------------------------------------------------------- which calls it takes

def unavailable() -> Optional[str]:
    if not torch.cuda.is_available() and not interpreting():
        return "it needs a CUDA GPU (or TRITON_INTERPRET=1 to run its kernels on the CPU, slowly, for tests)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    return None


def unsupported(decoder, call: RenderCall) -> Optional[str]:
    if not isinstance(decoder, SDFDecoder):
        return "it renders SDFDecoder only, not a generic callable"
    if max(decoder.hidden_dim, decoder.latent_dim) > MAX_WIDTH:
        return f"hidden and latent widths up to {MAX_WIDTH}, got {decoder.hidden_dim} and {decoder.latent_dim}"
    device = call.z.device
    if device.type != "cuda" and not (device.type == "cpu" and interpreting()):
        return f"its tensors must be on a CUDA device, got {device}"
    if device.type == "cuda" and call.compute_dtype is None:
        if call.origins.dtype == torch.float64:
            return "float64 is the compiled backend's on CUDA"
        if torch.get_float32_matmul_precision() == "highest":
            return ("exact float32 is the compiled backend's on CUDA (its kernels run tf32, with "
                    "torch.set_float32_matmul_precision('high'), or bfloat16/float16 under autocast)")
    if device.type == "cuda" and triton_version() < (3, 9):  # (the device's capability only where it matters)
        reason = toolchain_unsupported(torch.cuda.get_device_capability(device), triton_version(),
                                       decoder.hidden_dim)
        if reason is not None:
            return reason
    return ray_gradients_unsupported(call)


def toolchain_unsupported(capability: tuple, version: tuple, hidden: int) -> Optional[str]:
    """Triton before 3.9 compiles the forward kernel for sm_100-class GPUs (B200, B300: tcgen05) at hidden widths
    above 64 to nothing but a trap (``--gpu-compile --archs 100`` under triton 3.6: 4 registers, ``BPT.TRAP``)."""
    if 10 <= capability[0] < 12 and version < (3, 9) and hidden > 64:
        return (f"triton {'.'.join(map(str, version))} compiles its forward kernel for "
                f"sm_{capability[0]}{capability[1]} at hidden width {hidden} to a trap; it needs triton >= 3.9")
    return None


def auto_unsuited(decoder, call: RenderCall) -> Optional[str]:
    """Under ``auto``, tf32 goes to the triton backend only at hidden widths up to 128: above, on an NVIDIA H200 the
    study shape's forward+backward took 12.71 ms against the compiled backend's 10.68 ms (2026-11-28), and the
    kernels spill 752-1064 B on sm_90."""
    if call.compute_dtype is None and decoder.hidden_dim > 128:
        return "tf32 at hidden width > 128: the compiled backend's cuBLAS tf32 is faster"
    return None


# --------------------------------------------------------------------------------------------- tile policy

def kernel_config(hidden: int, dot: int, num_samples: int = 64, kernel: str = "forward", arch: int = 90) -> dict:
    """Tile sizes and warps for sm_``arch``: the fewest spilled bytes in ``python -m sdfsrn_fast.bench
    --gpu-compile`` (docs/performance.md has the table). ``dot``: 0 IEEE, 1 tf32, 2 bfloat16, 3 float16, 4 emulated
    bfloat16.

    - Async tensor cores (sm_90's wgmma, sm_100's tcgen05): bfloat16/float16 64-wide hidden tiles, 128 points a
      forward tile and 32 a backward tile, 8 warps; tf32 32-wide tiles and 64 points (its operands are twice as
      wide), the forward above H = 64 bfloat16's tiles.
    - mma.sync (sm_80 to sm_89, sm_120: both operands in registers): above H = 64 the forward takes 32 points and 4
      warps, tf32 16 points, 4 warps and 64-wide tiles.
    - sm_90 under triton before 3.9 (an H200 had 3.6) at 64 < H <= 128: the forward 32-wide tiles (64 points in
      tf32), the tf32 backward 32 points in 64-wide tiles (the tiles above spilled 8-56 B there).
    - LOADS, how the weights reach the dots (``_layer``): 2 joined into one dot per output tile (the async forward
      in bfloat16/float16, at most 4 hidden tiles), 1 grouped per output tile (the backward, mma.sync), 0 tile by
      tile (tf32, whose grouped or joined tiles spilled at H = 128).

    :func:`~._instrument.tuning` overrides it (``triton_ht``, ``triton_block_m``, ``triton_warps``,
    ``triton_stages``, ``triton_loads``) for sweeps and tests."""
    wide = 32 if dot == 1 and hidden <= 128 else 64  # tf32 at 256: 32-wide tiles took minutes to compile
    block_m = (128 if kernel == "forward" else 32) if dot in (2, 3) else 64
    warps = 8
    if _async_mma(arch) and dot == 1 and kernel == "forward" and hidden > 64:
        block_m, wide = 128, 64
    if not _async_mma(arch) and hidden > 64:
        if dot == 1:
            block_m, warps, wide = 16, 4, 64
        elif kernel == "forward":
            block_m, warps = 32, 4
    if arch == 90 and 64 < hidden <= 128 and triton_version() < (3, 9):
        if kernel == "forward":
            block_m, wide = (64 if dot == 1 else block_m), 32
        elif dot == 1:
            block_m, wide = 32, 64
    ht = tuned("triton_ht", min(wide, max(16, _pow2(hidden))))
    block_m = tuned("triton_block_m", block_m)
    block_s = min(block_m, max(16, _pow2(num_samples)))
    nt = _cdiv(hidden, ht)
    loads = tuned("triton_loads", 0 if dot == 1 else (2 if _async_mma(arch) and kernel == "forward" else 1))
    if loads == 2 and nt > 4:
        loads = 1
    return dict(HT=ht, NT=nt, H=hidden, BLOCK_M=block_m, BLOCK_S=block_s, BLOCK_R=block_m // block_s,
                num_warps=tuned("triton_warps", warps), num_stages=tuned("triton_stages", 1), LOADS=loads)


def _async_mma(arch: int) -> bool:
    """Whether sm_``arch``'s tensor cores take a dot's operands from shared memory asynchronously (sm_90's wgmma,
    sm_100's tcgen05, up to sm_11x) rather than from registers (mma.sync: sm_80 to sm_89, and sm_120)."""
    return 90 <= arch < 120


@functools.lru_cache(maxsize=None)
def _arch_of(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def _arch(device: torch.device) -> int:
    """The compute capability of a CUDA device as 80, 90...; 90 elsewhere (the interpreter)."""
    if device.type != "cuda":
        return 90
    return _arch_of(device.index if device.index is not None else torch.cuda.current_device())


def _precision(call: RenderCall):
    """(DOT mode of the kernels, their accumulator dtype, the dtype of dot operands and of the stored h / d tiles)."""
    if call.z.dtype == torch.float64:
        return 0, torch.float64, torch.float64
    if call.compute_dtype == torch.bfloat16:
        return (4, torch.float32, torch.float32) if interpreting() else (2, torch.float32, torch.bfloat16)
    if call.compute_dtype == torch.float16:
        return 3, torch.float32, torch.float16
    if call.z.device.type == "cuda":  # unsupported() sends float32 here only where tf32 is allowed
        return 1, torch.float32, torch.float32
    return 0, torch.float32, torch.float32


def _cdiv(a: int, b: int) -> int:  # plain Python: triton.cdiv is a jit function, about 6 us a call from Python
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _kernels():
    from . import _triton_kernels

    return _triton_kernels


def _tl_dtype(dtype: torch.dtype):
    tl = _kernels().tl
    return tl.float64 if dtype == torch.float64 else tl.float32


# ----------------------------------------------------------------------------------------------- host side

@torch.no_grad()
def triton_forward(call: RenderCall):
    """``(sil [B, R], sdf [B, R, S], lse [B, R], t0, hit)`` as :func:`~sdfsrn_fast.backends.fused.fused_forward`."""
    B, R, S, H, z = call.batch, call.rays, call.num_samples, call.hidden, call.z
    dot, acc, op_dtype = _precision(call)
    cfg = kernel_config(H, dot, S, "forward", _arch(z.device))
    p = call.parts(op_dtype)
    sdf = z.new_empty(B * R, S)  # the kernel writes every element: zeros on invalid rays
    lse = z.new_empty(B * R)
    sil = z.new_empty(B * R)
    # the decoder runs at every sample of the valid rays (and of invalid ones sharing a program with one); counted
    # only when read, so that no sync is needed here
    valid = call.valid
    record(forward_points=lambda: int(valid.sum()) * S, refined_points=0, screened_points=0, screen_error=0.0)
    launch("forward", _kernels()._render_fwd_kernel, (B * _cdiv(R, cfg["BLOCK_R"]),),
           call.origins.contiguous(), call.directions.contiguous(), call.near.contiguous(), call.far.contiguous(),
           call.jitter.contiguous() if call.jitter is not None else call.near, valid.contiguous(),
           *p, sdf, lse, sil, R, S, 1.0 / call.tau_min, call.tau_min / call.tau, float(call.beta),
           ACT=ACTIVATIONS.index(call.activation), HAS_JIT=call.jitter is not None, ACC=_tl_dtype(acc), DOT=dot,
           BLOCK_R=cfg["BLOCK_R"], BLOCK_S=cfg["BLOCK_S"], HT=cfg["HT"], NT=cfg["NT"], H=H, LOADS=cfg["LOADS"],
           num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    t0, hit = no_crossing(call)
    if call.surface:  # from the SDF values just stored, one more launch
        t0, hit = z.new_empty(B * R), torch.empty(B * R, dtype=torch.bool, device=z.device)
        block_s = min(64, _pow2(S))
        launch("crossing", _kernels()._crossing_kernel, (_cdiv(B * R, 16),), sdf, call.near.contiguous(),
               call.far.contiguous(), call.jitter.contiguous() if call.jitter is not None else call.near,
               call.valid.contiguous(), t0, hit, B * R, S, HAS_JIT=call.jitter is not None, ACC=_tl_dtype(acc),
               BLOCK_R=16, BLOCK_S=block_s)
        t0, hit = t0.view(B, R), hit.view(B, R)
    return sil.view(B, R), sdf.view(B, R, S), lse.view(B, R), t0, hit


def kept_indices(grad_sil, sil, sdf, lse, valid, num_samples: int, tau: float, tau_min: float, grad_eps: float):
    """:func:`~sdfsrn_fast.backends.fused.kept_indices` in two launches of ``_keep_kernel`` (about 17 aten calls
    there): ``(idx [n], g [n])``, with its one ``nonzero``."""
    kernel = _kernels()._keep_kernel
    n = sdf.numel()
    block = 1024
    grid = (max(_cdiv(n, block), 1),)
    largest = sdf.new_empty(grid[0])
    keep = torch.empty(n, dtype=torch.bool, device=sdf.device)
    ds = sdf.new_empty(n)
    args = (grad_sil.contiguous(), sil.contiguous(), valid.contiguous(), sdf.contiguous(), lse.contiguous())
    scalars = (n, num_samples, float(tau), float(tau_min), float(grad_eps))
    launch("keep", kernel, grid, *args, largest, keep, ds, *scalars, EXACT=grad_eps == 0, FINAL=False, BLOCK=block)
    launch("keep", kernel, grid, *args, largest.max().reshape(1), keep, ds, *scalars, EXACT=grad_eps == 0,
           FINAL=True, BLOCK=block)
    idx = keep.nonzero().squeeze(1)
    return idx, ds[idx]


# Kept samples per backward launch: bounds the h / d buffer ([CHUNK, 8 H] in the dot dtype: 4 KB a sample at
# H = 256 in bfloat16, 32 MB a chunk, allocated once). A chunk costs about 8 host-side calls (searchsorted, the
# launch, two matmuls, views): the study shape's about 31k kept samples take four chunks for about 15 more calls
# than one would, against about 100 MB more memory. ``tuning(triton_chunk=...)`` overrides it.
BACKWARD_CHUNK = 8192

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
def triton_backward(call: RenderCall, grad_sil, sil, sdf, lse) -> list:
    """Gradients ``[dz, dW0, db0, ..., dW4, db4]`` as :func:`~sdfsrn_fast.backends.fused.fused_backward` (the
    module docstring says how)."""
    B, R, S, H, z = call.batch, call.rays, call.num_samples, call.hidden, call.z
    dot, acc, op_dtype = _precision(call)
    cfg = kernel_config(H, dot, S, "backward", _arch(z.device))
    p = call.parts(op_dtype)
    idx, g = kept_indices(grad_sil, sil, sdf, lse, call.valid, S, call.tau, call.tau_min, call.grad_eps)
    n = idx.numel()
    record(backward_points=n)
    f = z.dtype
    bounds = torch.arange(0, (B + 1) * R * S, R * S, device=z.device)  # the first sample index of each shape
    o, d = call.origins.contiguous(), call.directions.contiguous()
    nr, fr = call.near.contiguous(), call.far.contiguous()
    jit = call.jitter.contiguous() if call.jitter is not None else nr
    chunk = tuned("triton_chunk", BACKWARD_CHUNK)
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
        launch("backward", _kernels()._render_bwd_kernel, (_cdiv(m, cfg["BLOCK_M"]) + B,),
               o, d, nr, fr, jit, ii, gg, torch.searchsorted(ii, bounds), B,
               *p[:10], col[0], col[2], col[1], *col[3:], at, B + 4, S, float(call.beta),
               HAS_JIT=call.jitter is not None, ACT=ACTIVATIONS.index(call.activation), ACC=_tl_dtype(acc),
               DOT=dot, BLOCK_M=cfg["BLOCK_M"], BLOCK_B=_pow2(max(B, 2)), HT=cfg["HT"], NT=cfg["NT"], H=H,
               LD=8 * H, LOADS=cfg["LOADS"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
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
    return assemble_grads(call, dc0, dc2, xyz[:, 3 * H : 4 * H].t(), dW1, db1, dW2h, xyz[:, 2 * H : 3 * H].t(), dW3,
                          db3, dW4, g.sum())


triton_render = define_render_ops("triton", triton_forward, triton_backward)


def render(decoder, call: RenderCall) -> tuple:
    return triton_render(call)
