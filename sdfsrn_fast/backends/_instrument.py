"""The benchmark tools' two handles on the backends, both scoped: :func:`recording` (what the render calls inside a
``with`` block did: samples evaluated, kernels launched) and :func:`tuning` (tile and chunk sizes other than the
defaults, for sweeps and tests). Outside such a block a render call records nothing and reads the defaults; the
cost on the render path is one test of an empty list.

Both are plain module state set and reset by the context managers, not context variables: autograd runs a CUDA
backward on its own thread, which a context variable would not reach.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

__all__ = ["Recorder", "recording", "record", "record_add", "launch", "tuning", "tuned"]


class Recorder(dict):
    """What the render calls of a :func:`recording` block did, by name (the last call's value, or a sum for
    :func:`record_add`). A value recorded as a callable (where computing it would wait for the device) is called
    when read with :meth:`value`."""

    def __init__(self, launch_guard: Optional[Callable] = None):
        super().__init__()
        self.launch_guard = launch_guard or contextlib.nullcontext

    def value(self, name: str, default=0):
        v = self.get(name, default)
        return v() if callable(v) else v


_RECORDERS: list[Recorder] = []
_TUNING: list[dict] = [{}]


@contextlib.contextmanager
def recording(launch_guard: Optional[Callable] = None):
    """``with recording() as rec: render(...)``, then ``rec.value("forward_points")``. ``launch_guard``: a context
    manager entered around each triton kernel launch (the host-call counter uses it to leave the interpreter's own
    work out)."""
    rec = Recorder(launch_guard)
    _RECORDERS.append(rec)
    try:
        yield rec
    finally:
        _RECORDERS.remove(rec)


def record(**values) -> None:
    """Sets ``values`` in every open recorder (nothing when none is open)."""
    for rec in _RECORDERS:
        rec.update(values)


def record_add(name: str, n: int = 1) -> None:
    for rec in _RECORDERS:
        rec[name] = rec.get(name, 0) + n


def launch(name: str, kernel, grid, *args, **kwargs):
    """``kernel[grid](*args, **kwargs)``; inside a recording, counted as ``{name}_launches`` and the compiled kernel
    kept as ``{name}_kernel`` (its ``n_regs`` / ``n_spills`` on a GPU)."""
    if not _RECORDERS:
        return kernel[grid](*args, **kwargs)
    record_add(f"{name}_launches")
    with contextlib.ExitStack() as stack:
        for rec in _RECORDERS:
            stack.enter_context(rec.launch_guard())
        compiled = kernel[grid](*args, **kwargs)
    record(**{f"{name}_kernel": compiled})
    return compiled


@contextlib.contextmanager
def tuning(**knobs):
    """Tile and chunk sizes other than the defaults while the block runs (nested blocks add to the outer ones'):
    ``compiled_chunk`` (points per chunk of the compiled backend), ``triton_ht``, ``triton_block_m``,
    ``triton_warps``, ``triton_stages``, ``triton_loads`` (:func:`sdfsrn_fast.backends.triton.kernel_config`) and
    ``triton_chunk`` (kept samples per backward launch)."""
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        raise ValueError(f"tuning: unknown knob(s) {sorted(unknown)}; known: {list(KNOBS)}")
    _TUNING.append({**_TUNING[-1], **knobs})
    try:
        yield
    finally:
        _TUNING.pop()


KNOBS = ("compiled_chunk", "triton_ht", "triton_block_m", "triton_warps", "triton_stages", "triton_loads",
         "triton_chunk")


def tuned(name: str, default):
    """The knob's value in the innermost :func:`tuning` block, else ``default``."""
    return _TUNING[-1].get(name, default)
