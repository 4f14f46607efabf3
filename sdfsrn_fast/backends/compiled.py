"""Backend ``compiled``: the fused algorithm of :mod:`.fused` with its chunk kernels under ``torch.compile``, as the
custom ops ``sdfsrn_fast::compiled_render`` and ``sdfsrn_fast::compiled_render_backward`` (:mod:`._ops`).

Device-agnostic: it runs on CPU and is written for Apple MPS and CUDA too (only matmuls, elementwise ops,
gathers and index_add; no float64 requirement, nothing CUDA-only). Every chunk has one fixed shape (the last one
is padded), so each kernel compiles once per (dtype, device, activation) and a training loop does not recompile
as the number of kept samples changes. Where ``torch.compile`` cannot run (no C++ compiler, an unsupported
platform, or ``SDFSRN_COMPILE=0``), the same kernels run eagerly, with one warning.
Generic callable decoders take the chunked, checkpointed autograd path (no custom op, no sparse backward): in
eager calls the callable runs as it is; inside a caller's ``torch.compile`` it is traced with the rest of the
caller's graph like any PyTorch code.
"""

from __future__ import annotations

import os
import warnings

import torch

from ..models import SDFDecoder
from ._ops import define_render_ops
from .fused import (Kernels, chunk_size, decoder_weights, fused_backward, fused_forward, mlp_backward,
                    mlp_forward_gather, render_callable_chunked)

__all__ = ["render_compiled", "compiled_kernels", "compiled_render"]


# Graphs each chunk kernel may compile: one per (dtype, activation, width, latent size, chunk) a process meets, and
# twice that, since a call from inside a caller's compiled graph differs in dispatch keys from an eager one; the
# test suite alone meets more than dynamo's default limit of 8 per function.
_RECOMPILE_LIMIT = 64


class _CompiledOrEager:
    """Calls the ``torch.compile``-d function; if compiling fails, warns once and runs ``fn`` eagerly."""

    def __init__(self, fn):
        self.fn = fn
        self.compiled = torch.compile(fn, dynamic=False, fullgraph=True)
        self.failed = os.environ.get("SDFSRN_COMPILE", "1") == "0"

    def __call__(self, *args):
        if not self.failed:
            config = torch._dynamo.config
            limit = config.recompile_limit
            config.recompile_limit = max(limit, _RECOMPILE_LIMIT)  # (config.patch costs 0.1 ms a call, this 4 us)
            try:
                return self.compiled(*args)
            except Exception as err:  # a missing compiler, an unsupported backend...
                self.failed = True
                warnings.warn(f"sdfsrn_fast: torch.compile failed ({type(err).__name__}: {err}); running the "
                              "compiled backend's kernels eagerly", RuntimeWarning, stacklevel=2)
            finally:
                config.recompile_limit = limit
        return self.fn(*args)


_KERNELS: dict = {}

# Points per chunk of the bfloat16 screen on CPU: 16384 ran at 341 ns/point against 380 at 8192 and 428 at 4096
# (study width, compiled, 2-core Xeon with AMX; float32 at its best chunk: 1430-1510). SDFSRN_CHUNK does not apply.
_SCREEN_CHUNK = 16384


def screen_enabled(device: torch.device) -> bool:
    """Whether the forward screens in bfloat16 on this device: by default only on CPUs with AMX tiles (where it
    was measured: 3-4x the float32 rate); SDFSRN_SCREEN=1 turns it on anywhere, 0 off."""
    env = os.environ.get("SDFSRN_SCREEN")
    if env is not None:
        return env == "1"
    return device.type == "cpu" and getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def compiled_kernels(device: torch.device) -> Kernels:
    """The compiled chunk kernels for a device type (one torch.compile wrapper each, made on first use)."""
    key = device.type
    if key not in _KERNELS:
        screen = _CompiledOrEager(mlp_forward_gather) if screen_enabled(device) else None
        _KERNELS[key] = Kernels(_CompiledOrEager(mlp_forward_gather), _CompiledOrEager(mlp_backward),
                                chunk_size(device), screen, _SCREEN_CHUNK)
    return _KERNELS[key]


def _forward(z, *args):
    return fused_forward(compiled_kernels(z.device), z, *args)


def _backward(grad_sil, sil, sdf, lse, z, *args):
    return fused_backward(compiled_kernels(z.device), grad_sil, sil, sdf, lse, z, *args)


compiled_render = define_render_ops("compiled", _forward, _backward)


def render_compiled(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter,
                    compute_dtype=None):
    """Arguments as in ``render`` (checked there; tau and tau_min as 0-d tensors; compute_dtype: autocast's)."""
    if isinstance(decoder, SDFDecoder):
        sil, _, _ = compiled_render(z, origins, directions, near, far, valid, jitter, decoder_weights(decoder),
                                    num_samples, tau, tau_min, grad_eps, decoder.activation, decoder.softplus_beta,
                                    compute_dtype)
        return sil
    return render_callable_chunked(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min,
                                   jitter)


def unsupported(decoder, args) -> str | None:
    if isinstance(decoder, SDFDecoder):
        rays = ("origins", "directions", "near", "far", "jitter")
        if any(args.get(k) is not None and args[k].requires_grad for k in rays):
            return "it gives ray tensors no gradient, and one of them requires grad"
    return None
