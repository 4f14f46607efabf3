"""The backends of :func:`sdfsrn_fast.render`, one module each.

- :mod:`.reference`: ``shared/SPEC.md`` in plain PyTorch, the yardstick every other backend is tested against;
- :mod:`.fused`: the fast algorithm shared by the fast backends (chunked forward without activations, sparse
  soft-min backward), as plain functions over swappable chunk kernels;
- :mod:`.compiled`: that algorithm with ``torch.compile``-d chunk kernels, as custom ops (CPU, CUDA, MPS);
- :mod:`._ops`: the custom-op pattern (forward op, backward op, fakes, autograd) every fast backend registers with.
"""

import functools
import importlib.metadata


@functools.lru_cache(maxsize=None)
def triton_version() -> tuple:
    """The installed triton's (major, minor), read without importing it (torch's nightly builds name its
    distribution pytorch-triton); once a process (a look-up takes about 0.14 ms, and render's dispatch asks on
    every CUDA call)."""
    for name in ("triton", "pytorch-triton"):
        try:
            return tuple(int(v) for v in importlib.metadata.version(name).split(".")[:2])
        except importlib.metadata.PackageNotFoundError:
            pass
    import triton

    return tuple(int(v) for v in triton.__version__.split(".")[:2])
