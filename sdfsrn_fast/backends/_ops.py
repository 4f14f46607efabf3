"""One render call as every backend receives it (:class:`RenderCall`), and the custom-op pattern every fast backend
follows (:func:`define_render_ops`).

``render`` checks its arguments once and describes the call as a :class:`RenderCall`; every backend takes that
object, so an argument or an output is added in one place per backend. A fast backend supplies two plain functions,
``forward(call) -> (sil [B, R], sdf [B, R, S], lse [B, R], t0, hit)`` and ``backward(call, grad_sil, sil, sdf, lse)
-> [dz, dW0, db0, ..., dW4, db4]`` (a backend that gives rays gradients takes ``ray_grads=True`` and appends those
of origins and directions); t0 [B, R] and hit [B, R] (bool) are the surface crossing found in the forward
march (docs/contract.md, Surface) when ``call.surface``, else empty tensors. :func:`define_render_ops` makes from
them the custom ops
``sdfsrn_fast::{backend}_render`` and ``sdfsrn_fast::{backend}_render_backward`` with their fake implementations and
autograd formula. ``torch.compile`` sees each op as one opaque node whose output shapes depend only on input shapes:
how many rays are valid and how many samples the backward keeps stays inside the ops, so a user's compiled model
neither breaks its graph nor recompiles when those counts change.

The ops take ``tau`` and ``tau_min`` as 0-d tensors, not floats: under ``torch.compile`` a float argument is a
constant of the graph, so an annealed temperature would recompile the caller's model at every new value. Inside
the ops they are floats again. ``compute_dtype`` is None for full precision or the autocast dtype (bfloat16,
float16) for mixed precision (docs/contract.md, Precision): ``render`` reads it from ``torch.autocast`` and the
ops run with autocast off, so that their precision is exactly the one asked for. The ray inputs get no gradient;
the backward op itself has no autograd (no double backward).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

__all__ = ["RenderCall", "DecoderParts", "RenderOps", "define_render_ops", "decoder_weights",
           "ray_gradients_unsupported"]


def decoder_weights(decoder) -> tuple:
    """``(W0, b0, W1, b1, W2, b2, W3, b3, W4, b4)`` of an SDFDecoder, in the layout of docs/contract.md."""
    return tuple(t for layer in decoder.layers for t in (layer.weight, layer.bias))


class DecoderParts(NamedTuple):
    """The decoder as the fast kernels take it, contiguous: the latent's share of layers 1 and 3 per shape
    (``W_z z + b``, [B, H] each, computed once per shape: the latent enters nowhere else), the xyz columns of those
    layers ([H, 3] each), the three H x H matrices (in the dot operands' dtype), the biases of layers 2 and 4 [H],
    and the output layer (w4 [H], b4 [1])."""

    c0: Tensor
    c2: Tensor
    w0p: Tensor
    w2p: Tensor
    w1: Tensor
    b1: Tensor
    w2h: Tensor
    w3: Tensor
    b3: Tensor
    w4: Tensor
    b4: Tensor


@dataclass(frozen=True)
class RenderCall:
    """One checked call of ``render``: its tensors (z in the rays' dtype), the decoder's weights (empty for a generic
    callable decoder) and its settings. ``tau`` and ``tau_min`` are what the caller passed (a number or a 0-d
    tensor) outside the ops and floats inside them; ``compute_dtype`` is autocast's lower dtype or None;
    ``surface``: whether the forward also finds each ray's surface crossing."""

    z: Tensor
    origins: Tensor
    directions: Tensor
    near: Tensor
    far: Tensor
    valid: Tensor
    jitter: Optional[Tensor]
    weights: tuple
    num_samples: int
    tau: Union[float, Tensor]
    tau_min: Union[float, Tensor]
    grad_eps: float
    activation: str = "relu"
    beta: float = 100.0
    compute_dtype: Optional[torch.dtype] = None
    surface: bool = False

    @property
    def batch(self) -> int:
        return self.origins.shape[0]

    @property
    def rays(self) -> int:
        """R, rays per shape."""
        return self.origins.shape[1]

    @property
    def hidden(self) -> int:
        return self.weights[2].shape[0]

    def replace(self, **changes) -> "RenderCall":
        return dataclasses.replace(self, **changes)

    def op_args(self) -> tuple:
        """The arguments of a forward op, in its order (the temperatures as 0-d tensors)."""
        return (self.z, self.origins, self.directions, self.near, self.far, self.valid, self.jitter, list(self.weights),
                self.num_samples, _as_tensor(self.tau), _as_tensor(self.tau_min), float(self.grad_eps),
                self.activation, float(self.beta), self.compute_dtype, bool(self.surface))

    def parts(self, op_dtype: Optional[torch.dtype] = None) -> DecoderParts:
        """:class:`DecoderParts`, the H x H matrices cast to ``op_dtype`` (None: the weights' dtype)."""
        W0, b0, W1, b1, W2, b2, W3, b3, W4, b4 = self.weights
        L, H = self.z.shape[1], W1.shape[0]
        c0 = torch.addmm(b0, self.z, W0[:, :L].t())
        c2 = torch.addmm(b2, self.z, W2[:, H : H + L].t())
        op = (lambda w: w.contiguous()) if op_dtype is None else (lambda w: w.to(op_dtype).contiguous())
        return DecoderParts(c0, c2, W0[:, L:].contiguous(), W2[:, H + L :].contiguous(), op(W1), b1.contiguous(),
                            op(W2[:, :H]), op(W3), b3.contiguous(), W4.reshape(-1).contiguous(), b4.reshape(1))


def ray_gradients_unsupported(call: RenderCall, grads: tuple = ()) -> Optional[str]:
    """Why a backend whose backward gives gradients to the ray inputs named in ``grads`` (of "origins", "directions")
    cannot take the call: a ray input that requires grad and is not among them; None if there is none."""
    rays = dict(origins=call.origins, directions=call.directions, near=call.near, far=call.far, jitter=call.jitter)
    wanting = [name for name, t in rays.items() if t is not None and t.requires_grad and name not in grads]
    if wanting:
        return f"it gives `{wanting[0]}` no gradient, and it requires grad"
    return None


def _as_tensor(value) -> Tensor:
    """A temperature as the 0-d float64 tensor the ops take (on the CPU unless given elsewhere)."""
    if isinstance(value, Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def _call(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min, grad_eps, activation,
          beta, compute_dtype, surface=False) -> RenderCall:
    """The call inside an op, from the op's arguments (temperatures as floats)."""
    return RenderCall(z, origins, directions, near, far, valid, jitter, tuple(weights), num_samples, tau.item(),
                      tau_min.item(), grad_eps, activation, beta, compute_dtype, surface)


def no_crossing(call: RenderCall) -> tuple:
    """The forward's t0 and hit where the call asks for no surface: empty."""
    return call.z.new_empty(0), torch.empty(0, dtype=torch.bool, device=call.z.device)


class RenderOps:
    """A fast backend's pair of custom ops; ``ops(call)`` renders through them (autograd included): ``(sil, t0,
    hit)``, t0 and hit None without ``call.surface``. ``ops.forward`` is the forward op itself (for ``opcheck`` and
    direct calls)."""

    def __init__(self, forward_op, backward_op):
        self.forward, self.backward = forward_op, backward_op

    def __call__(self, call: RenderCall) -> tuple:
        sil, _, _, t0, hit = self.forward(*call.op_args())
        return (sil, t0, hit) if call.surface else (sil, None, None)


def define_render_ops(backend: str, forward_impl: Callable, backward_impl: Callable) -> RenderOps:
    """Defines ``sdfsrn_fast::{backend}_render`` and ``sdfsrn_fast::{backend}_render_backward`` from the backend's
    forward and backward functions (see the module docstring), with fakes and autograd."""

    @torch.library.custom_op(f"sdfsrn_fast::{backend}_render", mutates_args=())
    def forward_op(z: Tensor, origins: Tensor, directions: Tensor, near: Tensor, far: Tensor, valid: Tensor,
                   jitter: Optional[Tensor], weights: list[Tensor], num_samples: int, tau: Tensor, tau_min: Tensor,
                   grad_eps: float, activation: str, beta: float, compute_dtype: Optional[torch.dtype],
                   surface: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        call = _call(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min, grad_eps,
                     activation, beta, compute_dtype, surface)
        with torch.autocast(z.device.type, enabled=False):  # precision is compute_dtype's, not the ambient autocast's
            return forward_impl(call)

    @torch.library.custom_op(f"sdfsrn_fast::{backend}_render_backward", mutates_args=())
    def backward_op(grad_sil: Tensor, sil: Tensor, sdf: Tensor, lse: Tensor, z: Tensor, origins: Tensor,
                    directions: Tensor, near: Tensor, far: Tensor, valid: Tensor, jitter: Optional[Tensor],
                    weights: list[Tensor], num_samples: int, tau: Tensor, tau_min: Tensor, grad_eps: float,
                    activation: str, beta: float, compute_dtype: Optional[torch.dtype],
                    ray_grads: bool = False) -> list[Tensor]:
        call = _call(z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min, grad_eps,
                     activation, beta, compute_dtype)
        with torch.autocast(z.device.type, enabled=False):
            if ray_grads:  # only the backends whose `unsupported` lets rays require grad are asked
                return backward_impl(call, grad_sil, sil, sdf, lse, ray_grads=True)
            return backward_impl(call, grad_sil, sil, sdf, lse)

    @forward_op.register_fake
    def _(z, origins, directions, near, far, valid, jitter, weights, num_samples, *args):
        B, R = near.shape
        surface = len(args) > 6 and args[6]
        crossing = (B, R) if surface else (0,)
        return (z.new_empty((B, R)), z.new_empty((B, R, num_samples)), z.new_empty((B, R)), z.new_empty(crossing),
                torch.empty(crossing, dtype=torch.bool, device=z.device))

    @backward_op.register_fake
    def _(grad_sil, sil, sdf, lse, z, origins, directions, near, far, valid, jitter, weights, *settings):
        rays = [torch.empty_like(origins), torch.empty_like(directions)] if settings[7:] and settings[7] else []
        return [torch.empty_like(z)] + [torch.empty_like(w) for w in weights] + rays

    def setup_context(ctx, inputs, output):
        z, origins, directions, near, far, valid, jitter, weights, num_samples, tau, tau_min = inputs[:11]
        ctx.settings = (num_samples, *inputs[11:15])  # num_samples, grad_eps, activation, beta, compute_dtype
        ctx.n_weights, ctx.has_jitter = len(weights), jitter is not None
        ctx.save_for_backward(*output[:3], z, origins, directions, near, far, valid, tau, tau_min, *weights,
                              *([jitter] if ctx.has_jitter else []))

    def backward(ctx, grad_sil, *_):  # the crossing (t0, hit) carries no gradient: it is found, not computed
        saved = ctx.saved_tensors
        outputs, rays, temps = saved[:3], saved[3:9], saved[9:11]
        weights = list(saved[11 : 11 + ctx.n_weights])
        jitter = saved[-1] if ctx.has_jitter else None
        num_samples, grad_eps, activation, beta, compute_dtype = ctx.settings
        ray_grads = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        grads = backward_op(grad_sil.contiguous(), *outputs, *rays, jitter, weights, num_samples, *temps, grad_eps,
                            activation, beta, compute_dtype, ray_grads)
        n = 1 + ctx.n_weights
        d_origins, d_directions = grads[n:] if ray_grads else (None, None)
        # one entry per argument as passed (a trailing one at its default, surface=False, may not be)
        return (grads[0], d_origins, d_directions, None, None, None, None, list(grads[1:n])) + (None,) * (
            len(ctx.needs_input_grad) - 8)

    torch.library.register_autograd(forward_op, backward, setup_context=setup_context)
    return RenderOps(forward_op, backward_op)
