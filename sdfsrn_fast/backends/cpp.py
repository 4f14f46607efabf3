"""Backend ``cpp``: the fused CPU kernels of ``csrc/render_cpu.cpp`` (ATen's CPU BLAS for the H x H layers,
``at::parallel_for`` over tiles of points), registered with ``TORCH_LIBRARY_FRAGMENT`` as
``sdfsrn_fast::cpp_forward`` and ``sdfsrn_fast::cpp_backward_samples``, and wrapped here, like every fast backend,
as the custom ops ``sdfsrn_fast::cpp_render`` / ``cpp_render_backward`` (:mod:`._ops`).

The extension is compiled with ``torch.utils.cpp_extension`` and ninja on first use (cached in torch's extension
directory; ``pip install -e .`` never needs a compiler). ``backend="cpp"`` raises the build's error where it cannot
be built (no compiler, a failed build). ``backend="auto"`` tries it after the compiled backend, which trains
faster at the study shape (docs/performance.md), so today it runs by name; were it placed first, a failed build
would be one warning and the compiled backend would take the call (``try_load``, tested).
What it is not: a GPU path, or a path for generic callable decoders (SDFDecoder only), and it takes no float16
(autocast to bfloat16 on CPUs).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import torch

from ._ops import define_render_ops
from .fused import STATS, assemble_grads, decoder_weights, kept_samples

__all__ = ["load", "render_cpp", "cpp_render", "BUILD"]

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
                               extra_cflags=["-O3", "-march=native", "-fno-math-errno"], verbose=verbose)
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
          rays_per_shape, tau, tau_min, activation, beta, bf16):
        n = near.numel()
        return near.new_empty(n), near.new_empty(n, num_samples), near.new_empty(n)

    @torch.library.register_fake("sdfsrn_fast::cpp_backward_samples")
    def _(origins, directions, near, far, rays, koff, g, c0, c2, w0p, w2p, w1, b1, w2h, w3, b3, w4, num_samples,
          rays_per_shape, activation, beta, bf16):
        H = w1.shape[0]
        e = near.new_empty
        return [e(c0.shape), e(c2.shape), e(H, 3), e(H, H), e(H), e(H, H), e(H, 3), e(H, H), e(H), e(H), e(())]


def _kernel_args(z, weights):
    """The latent shares (with the biases of layers 1 and 3), the xyz columns and the other weights, as the C++
    kernels take them."""
    W0, b0, W1, b1, W2, b2, W3, b3, W4, b4 = weights
    L, H = z.shape[1], W1.shape[0]
    return (torch.addmm(b0, z, W0[:, :L].t()), torch.addmm(b2, z, W2[:, H : H + L].t()), W0[:, L:], W2[:, H + L :],
            W1, b1, W2[:, :H], W3, b3, W4.reshape(-1))


def _bf16(compute_dtype) -> bool:
    if compute_dtype not in (None, torch.bfloat16):
        raise RuntimeError(f"the cpp backend runs float32, float64 or bfloat16 autocast, not {compute_dtype}")
    return compute_dtype == torch.bfloat16


def _forward(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min, activation,
             beta, compute_dtype=None):
    load()
    B, R, _ = origins.shape
    rays = valid.reshape(-1).nonzero().squeeze(1)
    STATS.update(forward_points=rays.numel() * num_samples, refined_points=0, screened_points=0, screen_error=0.0)
    c0, c2, w0p, w2p, w1, b1, w2h, w3, b3, w4 = _kernel_args(z, weights)
    sil, sdf, lse = torch.ops.sdfsrn_fast.cpp_forward(
        origins.reshape(-1, 3), directions.reshape(-1, 3), near.reshape(-1), far.reshape(-1),
        None if jitter is None else jitter.reshape(-1), rays, c0, c2, w0p, w2p, w1, b1, w2h, w3, b3, w4,
        float(weights[9].reshape(())), num_samples, R, tau, tau_min, activation, beta, _bf16(compute_dtype))
    return sil.view(B, R), sdf.view(B, R, num_samples), lse.view(B, R)


def _backward(grad_sil, sil, sdf, lse, z, origins, directions, near, far, valid, jitter, weights, num_samples, tau,
              tau_min, grad_eps, activation, beta, compute_dtype=None):
    load()
    B, R, _ = origins.shape
    rays, k, g = kept_samples(grad_sil, sil, sdf, lse, valid, jitter, num_samples, tau, tau_min, grad_eps)
    STATS["backward_points"] = rays.numel()
    c0, c2, w0p, w2p, w1, b1, w2h, w3, b3, w4 = _kernel_args(z, weights)
    dc0, dc2, dW0p, dW1, db1, dW2h, dW2p, dW3, db3, dW4, db4 = torch.ops.sdfsrn_fast.cpp_backward_samples(
        origins.reshape(-1, 3), directions.reshape(-1, 3), near.reshape(-1), far.reshape(-1), rays, k, g, c0, c2,
        w0p, w2p, w1, b1, w2h, w3, b3, w4, num_samples, R, activation, beta, _bf16(compute_dtype))
    return assemble_grads(z, weights, dc0, dc2, dW0p, dW1, db1, dW2h, dW2p, dW3, db3, dW4, db4)


cpp_render = define_render_ops("cpp", _forward, _backward)
_WARNED = [False]


def _warn_once(reason: str) -> None:
    if not _WARNED[0]:
        _WARNED[0] = True
        warnings.warn(f"sdfsrn_fast: {reason}; rendering on the CPU with the compiled backend instead",
                      RuntimeWarning, stacklevel=4)


def unavailable() -> str | None:
    """Why the backend cannot run here, known without building (no compiler or source, an earlier failed build),
    warned once; None if it may."""
    if BUILD["loaded"]:
        return None
    missing = compiler_missing()
    reason = BUILD["error"] or (f"the cpp backend cannot be built: {missing}" if missing else None)
    if reason is not None:
        _warn_once(reason)
    return reason


def try_load() -> str | None:
    """None once the extension is loaded; else why not, warned once (for backend="auto", which falls back)."""
    try:
        load()
        return None
    except RuntimeError as err:
        _warn_once(str(err))
        return str(err)


def render_cpp(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter,
               compute_dtype=None):
    """Arguments as in ``render`` (checked there; tau and tau_min as 0-d tensors; compute_dtype: autocast's)."""
    sil, _, _ = cpp_render(z, origins, directions, near, far, valid, jitter, decoder_weights(decoder), num_samples,
                           tau, tau_min, grad_eps, decoder.activation, decoder.softplus_beta, compute_dtype)
    return sil
