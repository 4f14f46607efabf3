"""The custom-op pattern every fast backend follows: a forward op and a backward op under the ``sdfsrn_fast``
namespace, a fake (meta) implementation of each, and the autograd formula that joins them.

``torch.compile`` sees each op as one opaque node whose output shapes depend only on input shapes: how many rays
are valid and how many samples the backward keeps stays inside the ops, so a user's compiled model neither
breaks its graph nor recompiles when those counts change. A backend supplies two plain functions, its forward
(``-> (sil [B, R], sdf [B, R, S], lse [B, R])``) and its backward (``-> [dz, dW0, db0, ..., dW4, db4]``), with
the signatures of :func:`sdfsrn_fast.backends.fused.fused_forward` / ``fused_backward`` minus their first
argument; :func:`define_render_ops` makes the two ops from them. A backend whose ops are defined elsewhere
(``TORCH_LIBRARY`` in C++) registers only the fakes and autograd with :func:`register_render_meta`.

``compute_dtype`` is None for full precision or the autocast dtype (bfloat16, float16) for mixed precision
(``shared/SPEC.md``, Precision): ``render`` reads it from ``torch.autocast`` and the ops run with autocast off, so
that their precision is exactly the one asked for. The ops take ``tau`` and ``tau_min`` as 0-d tensors, not
floats: under ``torch.compile`` a float argument is a constant of the graph, so an annealed temperature would
recompile the caller's model at every new value. The ray inputs get no gradient; the backward op itself has no
autograd (no double backward).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

__all__ = ["define_render_ops", "register_render_meta", "RENDER_ARGS"]

# The forward op's arguments, in order (the backward op takes grad_sil, sil, sdf, lse, then these).
RENDER_ARGS = ("z", "origins", "directions", "near", "far", "valid", "jitter", "weights", "num_samples", "tau",
               "tau_min", "grad_eps", "activation", "beta", "compute_dtype")


def register_render_meta(forward_op, backward_op) -> None:
    """Fake implementations of both ops and the autograd formula of the forward op (which calls the backward op)."""

    def forward_fake(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min, grad_eps,
                     activation, beta, compute_dtype):
        B, R = near.shape
        return z.new_empty((B, R)), z.new_empty((B, R, num_samples)), z.new_empty((B, R))

    def backward_fake(grad_sil, sil, sdf, lse, z, origins, directions, near, far, valid, jitter, weights, num_samples,
                      tau, tau_min, grad_eps, activation, beta, compute_dtype):
        return [torch.empty_like(z)] + [torch.empty_like(w) for w in weights]

    torch.library.register_fake(forward_op, forward_fake)
    torch.library.register_fake(backward_op, backward_fake)

    def setup_context(ctx, inputs, output):
        (z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min, grad_eps, act, beta,
         compute_dtype) = inputs
        sil, sdf, lse = output
        ctx.has_jitter = jitter is not None
        ctx.config = (num_samples, grad_eps, act, beta, compute_dtype)
        extra = (jitter,) if jitter is not None else ()
        ctx.save_for_backward(sil, sdf, lse, z, origins, directions, near, far, valid, tau, tau_min, *weights, *extra)

    def backward(ctx, grad_sil, _grad_sdf, _grad_lse):
        saved = list(ctx.saved_tensors)
        jitter = saved.pop() if ctx.has_jitter else None
        sil, sdf, lse, z, origins, directions, near, far, valid, tau, tau_min = saved[:11]
        weights = saved[11:]
        num_samples, grad_eps, act, beta, compute_dtype = ctx.config
        grads = backward_op(grad_sil.contiguous(), sil, sdf, lse, z, origins, directions, near, far, valid, jitter,
                            weights, num_samples, tau, tau_min, grad_eps, act, beta, compute_dtype)
        dz, dweights = grads[0], list(grads[1:])
        return (dz, None, None, None, None, None, None, dweights) + (None,) * 7

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)


def define_render_ops(backend: str, forward_impl: Callable, backward_impl: Callable):
    """Defines ``sdfsrn_fast::{backend}_render`` and ``sdfsrn_fast::{backend}_render_backward`` from the backend's
    forward and backward functions (see the module docstring) and registers fakes and autograd; returns the
    forward op."""

    @torch.library.custom_op(f"sdfsrn_fast::{backend}_render", mutates_args=())
    def forward_op(z: Tensor, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, valid: Tensor,
                   jitter: Optional[Tensor], weights: list[Tensor], num_samples: int, tau: Tensor, tau_min: Tensor,
                   grad_eps: float, activation: str, beta: float,
                   compute_dtype: Optional[torch.dtype]) -> tuple[Tensor, Tensor, Tensor]:
        with torch.autocast(z.device.type, enabled=False):  # precision is compute_dtype's, not the ambient autocast's
            return forward_impl(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau.item(),
                                tau_min.item(), activation, beta, compute_dtype)

    @torch.library.custom_op(f"sdfsrn_fast::{backend}_render_backward", mutates_args=())
    def backward_op(grad_sil: Tensor, sil: Tensor, sdf: Tensor, lse: Tensor, z: Tensor, origins: Tensor,
                    directions: Tensor, near: Tensor, far: Tensor, valid: Tensor, jitter: Optional[Tensor],
                    weights: list[Tensor], num_samples: int, tau: Tensor, tau_min: Tensor, grad_eps: float,
                    activation: str, beta: float, compute_dtype: Optional[torch.dtype]) -> list[Tensor]:
        with torch.autocast(z.device.type, enabled=False):
            return backward_impl(grad_sil, sil, sdf, lse, z, origins, directions, near, far, valid, jitter, weights,
                                 num_samples, tau.item(), tau_min.item(), grad_eps, activation, beta, compute_dtype)

    register_render_meta(forward_op, backward_op)
    return forward_op
