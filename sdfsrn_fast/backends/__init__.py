"""The backends of :func:`sdfsrn_fast.render`, one module each.

- :mod:`.reference`: ``shared/SPEC.md`` in plain PyTorch, the yardstick every other backend is tested against;
- :mod:`.fused`: the fast algorithm shared by the fast backends (chunked forward without activations, sparse
  soft-min backward), as plain functions over swappable chunk kernels;
- :mod:`.compiled`: that algorithm with ``torch.compile``-d chunk kernels, as custom ops (CPU, CUDA, MPS);
- :mod:`._ops`: the custom-op pattern (forward op, backward op, fakes, autograd) every fast backend registers with.
"""
