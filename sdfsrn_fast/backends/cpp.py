"""Backend ``cpp``: the fused CPU kernels of ``csrc/render_cpu.cpp`` (ATen's CPU BLAS for the H x H layers,
``at::parallel_for`` over tiles of points), registered with ``TORCH_LIBRARY_FRAGMENT`` as
``sdfsrn_fast::cpp_forward`` and ``sdfsrn_fast::cpp_backward_samples``, and wrapped here, like every fast backend,
as the custom ops ``sdfsrn_fast::cpp_render`` / ``cpp_render_backward`` (:mod:`._ops`).

The extension is compiled with ``torch.utils.cpp_extension`` and ninja on first use (cached in torch's extension
directory; ``pip install -e .`` never needs a compiler); ``backend="cpp"`` raises the build's error where it cannot
be built (no compiler, a failed build), ``backend="auto"`` then takes the compiled backend. ``auto`` picks it for
CPU calls under bfloat16 autocast, where it is faster than the compiled backend (:func:`auto_unsuited`).
What it is not: a GPU path, or a path for generic callable decoders (SDFDecoder only), and it takes no float16
(autocast to bfloat16 on CPUs).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Optional

import torch

from ..models import SDFDecoder
from ._instrument import record
from ._ops import RenderCall, define_render_ops, ray_gradients_unsupported
from .fused import assemble_grads, kept_samples

__all__ = ["load", "render", "cpp_render", "BUILD"]

SOURCE = Path(__file__).resolve().parents[2] / "csrc" / "render_cpu.cpp"
EXTENSION_NAME = "sdfsrn_fast_cpp"
# What loading did: seconds, whether it compiled or came from the cache, or the error.
BUILD: dict = {"loaded": False, "error": None, "seconds": None}
_LOCK = threading.Lock()


def compiler_missing() -> str | None:
    """Why the extension cannot be built here, without trying (no source checkout, no C++ compiler)."""
    if not SOURCE.is_file():
        return f"its C++ source is not here ({SOURCE}); install from a source checkout (pip install -e .)"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} not on PATH)"
    return None


def load(verbose: bool = False) -> None:
    """Builds (first time: about a minute) or loads (cached) the extension; raises RuntimeError if it cannot."""
    with _LOCK:
        if BUILD["loaded"]:
            return
        if BUILD["error"] is not None:
            raise RuntimeError(BUILD["error"])
        reason = compiler_missing()
        if reason is not None:
            BUILD["error"] = f"the cpp backend cannot be built: {reason}"
            raise RuntimeError(BUILD["error"])
        from torch.utils import cpp_extension

        t0 = time.perf_counter()
        try:
            cpp_extension.load(name=EXTENSION_NAME, sources=[str(SOURCE)], is_python_module=False,
                               extra_cflags=["-O3", "-march=native", "-fno-math-errno", "-fopenmp"],
                               extra_ldflags=["-fopenmp"], verbose=verbose)
        except Exception as err:  # a compiler error, a missing ninja...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            BUILD["error"] = f"the cpp backend failed to build: {first} (rerun with load(verbose=True) to see why)"
            raise RuntimeError(BUILD["error"]) from err
        BUILD.update(loaded=True, seconds=time.perf_counter() - t0)
        _register_fakes()


def _register_fakes() -> None:
    """Fake implementations of the C++ ops (output shapes from input shapes), so that torch.compile and opcheck
    can trace them."""

    @torch.library.register_fake("sdfsrn_fast::cpp_forward")
    def _(origins, directions, near, far, jitter, rays, c0, c2, w0p, w2p, w1, b1, w2h, w3, b3, w4, b4, num_samples,
          rays_per_shape, tau, tau_min, activation, beta, bf16, surface):
        n = near.numel()
        m = n if surface else 0
        return (near.new_empty(n), near.new_empty(n, num_samples), near.new_empty(n), near.new_empty(m),
                near.new_empty(m, dtype=torch.bool))

    @torch.library.register_fake("sdfsrn_fast::cpp_backward_samples")
    def _(origins, directions, near, far, rays, koff, g, c0, c2, w0p, w2p, w1, b1, w2h, w3, b3, w4, num_samples,
          rays_per_shape, activation, beta, bf16):
        H = w1.shape[0]
        e = near.new_empty
        return [e(c0.shape), e(c2.shape), e(H, 3), e(H, H), e(H), e(H, H), e(H, 3), e(H, H), e(H), e(H), e(())]


def _bf16(compute_dtype) -> bool:
    if compute_dtype not in (None, torch.bfloat16):
        raise RuntimeError(f"the cpp backend runs float32, float64 or bfloat16 autocast, not {compute_dtype}")
    return compute_dtype == torch.bfloat16


def _rays(call: RenderCall) -> tuple:
    return (call.origins.reshape(-1, 3), call.directions.reshape(-1, 3), call.near.reshape(-1), call.far.reshape(-1))


def _forward(call: RenderCall):
    load()
    B, R, S = call.batch, call.rays, call.num_samples
    rays = call.valid.reshape(-1).nonzero().squeeze(1)
    record(forward_points=rays.numel() * S, refined_points=0, screened_points=0, screen_error=0.0)
    p = call.parts()
    sil, sdf, lse, t0, hit = torch.ops.sdfsrn_fast.cpp_forward(
        *_rays(call), None if call.jitter is None else call.jitter.reshape(-1), rays, p.c0, p.c2, p.w0p, p.w2p, p.w1,
        p.b1, p.w2h, p.w3, p.b3, p.w4, float(p.b4), S, R, call.tau, call.tau_min, call.activation, call.beta,
        _bf16(call.compute_dtype), call.surface)
    if call.surface:
        t0, hit = t0.view(B, R), hit.view(B, R)
    return sil.view(B, R), sdf.view(B, R, S), lse.view(B, R), t0, hit


def _backward(call: RenderCall, grad_sil, sil, sdf, lse):
    load()
    rays, k, g = kept_samples(call, grad_sil, sil, sdf, lse)
    record(backward_points=rays.numel())
    p = call.parts()
    grads = torch.ops.sdfsrn_fast.cpp_backward_samples(
        *_rays(call), rays, k, g, p.c0, p.c2, p.w0p, p.w2p, p.w1, p.b1, p.w2h, p.w3, p.b3, p.w4, call.num_samples,
        call.rays, call.activation, call.beta, _bf16(call.compute_dtype))
    return assemble_grads(call, *grads)


cpp_render = define_render_ops("cpp", _forward, _backward)


def render(decoder, call: RenderCall) -> tuple:
    return cpp_render(call)


def unavailable() -> Optional[str]:
    """Why the backend cannot run here, known without building (no compiler or source, an earlier failed build;
    inside ``torch.compile``: an extension not loaded yet); None if it may."""
    if BUILD["loaded"]:
        return None
    if torch.compiler.is_compiling():  # no builds and no file-system probes while tracing
        return "its extension is built on first use outside torch.compile (call render once before compiling)"
    missing = compiler_missing()
    return BUILD["error"] or (f"the cpp backend cannot be built: {missing}" if missing else None)


def unsupported(decoder, call: RenderCall) -> Optional[str]:
    if not isinstance(decoder, SDFDecoder):
        return "it renders SDFDecoder only, not a generic callable"
    if call.z.device.type != "cpu":
        return f"its tensors must be on the CPU, got {call.z.device}"
    if call.origins.dtype not in (torch.float32, torch.float64):
        return f"float32 or float64 rays, got {call.origins.dtype}"
    return ray_gradients_unsupported(call)


def auto_unsuited(decoder, call: RenderCall) -> Optional[str]:
    """``auto`` takes cpp under bfloat16 autocast on CPUs with AVX512-BF16: there, at the study shape, its
    forward+backward took 0.968 s against the compiled backend's 1.190 s (forward 0.843 against 1.261 s; AMD EPYC,
    2 cores, 2026-12-06, ``python -m sdfsrn_fast.bench --shapes tiny study --backends cpp compiled --rounds 5``). In
    float32 the compiled backend was as fast or faster there (1.855 against 1.922 s; forward 1.515 against 1.740 s)."""
    if call.compute_dtype != torch.bfloat16:
        return "float32: the compiled backend is as fast or faster"
    if not getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "bfloat16 without AVX512-BF16: not measured against the compiled backend"
    return None


def prepare() -> None:
    """Builds or loads the extension (raises the reason where it cannot)."""
    load()
