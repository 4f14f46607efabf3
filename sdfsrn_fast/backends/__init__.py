"""The backends of :func:`sdfsrn_fast.render`, one module each, each with the same entries: ``render(decoder, call)``,
``unavailable()`` (why it cannot run in this process, or None), ``unsupported(decoder, call)`` (why it cannot take
this call, or None) and, where they apply, ``auto_unsuited(decoder, call)`` (why ``auto`` should pick another) and
``prepare()`` (builds what it needs, raising where it cannot). ``call`` is a :class:`._ops.RenderCall`.

- :mod:`.reference`: the contract (docs/contract.md) in plain PyTorch, the yardstick every backend is tested against;
- :mod:`.fused`: the fast algorithm shared by the compiled and cpp backends (chunked forward without activations,
  sparse soft-min backward), as plain functions over swappable chunk kernels;
- :mod:`.compiled`: that algorithm with ``torch.compile``-d chunk kernels (CPU, CUDA, MPS);
- :mod:`.cpp`: fused C++ CPU kernels (``csrc/``, built on first use);
- :mod:`.triton`: host side and tile policy of the Triton kernels in :mod:`._triton_kernels` (CUDA);
- :mod:`._ops`: the description of a call and the custom-op pattern every fast backend registers with;
- :mod:`._instrument`: scoped recording and tuning for the benchmark tools.
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
