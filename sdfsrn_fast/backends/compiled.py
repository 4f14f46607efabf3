"""Backend ``compiled``: the fused algorithm of :mod:`.fused` with its chunk kernels under ``torch.compile``, as the
custom ops ``sdfsrn_fast::compiled_render`` and ``sdfsrn_fast::compiled_render_backward`` (:mod:`._ops`).

Device-agnostic: it runs on CPU and is written for Apple MPS and CUDA too (only matmuls, elementwise ops,
gathers and index_add; no float64 requirement, nothing CUDA-only). Every chunk has one fixed shape (the last one
is padded), so each kernel compiles once per (device, dtype, activation, width, batch) and a training loop does not
recompile as the number of kept samples changes. Where ``torch.compile`` cannot run (no C++ compiler, an unsupported
platform, or ``SDFSRN_COMPILE=0``), the same kernels run eagerly, with one warning.
Generic callable decoders take the chunked, checkpointed autograd path (no custom op, no sparse backward): in
eager calls the callable runs as it is; inside a caller's ``torch.compile`` it is traced with the rest of the
caller's graph like any PyTorch code.
"""

from __future__ import annotations

import dataclasses
import os
import types
import warnings
from typing import Optional

import torch

from ..models import SDFDecoder
from ._instrument import tuned
from ._ops import RenderCall, define_render_ops, ray_gradients_unsupported
from .fused import (Kernels, chunk_size, fused_backward, fused_forward, mlp_backward, mlp_forward_gather,
                    render_callable_chunked)

__all__ = ["render", "compiled_kernels", "compiled_render", "unsupported", "CompiledOrEager"]


def _own_code(fn):
    """A copy of ``fn`` with a code object of its own: dynamo keeps its graphs, and its limit of recompilations (8),
    per code object, so each set of kernels below compiles within that limit, without touching the global one."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


class CompiledOrEager:
    """Calls the ``torch.compile``-d function; if compiling fails, warns once and runs ``fn`` eagerly (``what``: the
    warning's name for it)."""

    def __init__(self, fn, what: str = "the compiled backend's kernels"):
        self.fn, self.what = fn, what
        self.compiled = torch.compile(_own_code(fn), dynamic=False, fullgraph=True)
        self.failed = os.environ.get("SDFSRN_COMPILE", "1") == "0"

    def __call__(self, *args):
        if not self.failed:
            try:
                return self.compiled(*args)
            except Exception as err:  # a missing compiler, an unsupported backend...
                self.failed = True
                warnings.warn(f"sdfsrn_fast: torch.compile failed ({type(err).__name__}: {err}); running "
                              f"{self.what} eagerly", RuntimeWarning, stacklevel=2)
        return self.fn(*args)


_KERNELS: dict = {}

# Points per chunk of the bfloat16 screen on CPU: 16384 ran at 341 ns/point against 380 at 8192 and 428 at 4096
# (study width, compiled, 2-core Xeon with AMX; float32 at its best chunk: 1430-1510).
_SCREEN_CHUNK = 16384


def screen_enabled(device: torch.device) -> bool:
    """Whether the forward screens in bfloat16 on this device: only on CPUs with AMX tiles, where it was measured
    (3-4x the float32 rate, docs/performance.md)."""
    return device.type == "cpu" and getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def compiled_kernels(call: RenderCall) -> Kernels:
    """The compiled chunk kernels for a call: one set per (device, weights' dtype, activation, width, batch), each
    ``torch.compile``-d on first use, at the device's chunk size unless :func:`~._instrument.tuning` says
    ``compiled_chunk``."""
    device = call.z.device
    key = (device, call.weights[2].dtype, call.compute_dtype, call.activation, call.beta, call.hidden, call.batch)
    if key not in _KERNELS:
        screen = CompiledOrEager(mlp_forward_gather) if screen_enabled(device) else None
        _KERNELS[key] = Kernels(CompiledOrEager(mlp_forward_gather), CompiledOrEager(mlp_backward),
                                chunk_size(device), screen, _SCREEN_CHUNK)
    kernels = _KERNELS[key]
    chunk = tuned("compiled_chunk", None)
    return kernels if chunk is None else dataclasses.replace(kernels, chunk=chunk)


compiled_render = define_render_ops("compiled", lambda call: fused_forward(compiled_kernels(call), call),
                                    lambda call, *out, **kw: fused_backward(compiled_kernels(call), call, *out, **kw))


def render(decoder, call: RenderCall) -> tuple:
    if isinstance(decoder, SDFDecoder):
        return compiled_render(call)
    return render_callable_chunked(decoder, call)


def unavailable() -> Optional[str]:
    return None


def unsupported(decoder, call: RenderCall) -> Optional[str]:
    """Ray gradients: the fused path gives origins and directions theirs, near, far and jitter none."""
    if isinstance(decoder, SDFDecoder):
        return ray_gradients_unsupported(call, ("origins", "directions"))
    return None
