"""The differentiable surface of a render call (docs/contract.md, Surface), in plain PyTorch shared by every backend:
from the crossing ``t0`` that the backend's march found (no gradient), the depth by implicit differentiation and the
normal from the decoder and its xyz gradient at the hit rays, in the rays' dtype (float32 under autocast too).

In eager calls only the hit rays are evaluated; inside ``torch.compile`` every ray is (a data-dependent gather
would break a ``fullgraph`` graph) and the rays without a hit are masked to zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .models import SDFDecoder

__all__ = ["RenderOutput", "surface", "sdf_and_gradient", "DEPTH_SLOPE_MIN"]

# |grad f . d| below this is raised to it (its sign kept; 0 counts as entering, negative) in the depth's
# denominator: a ray grazing the surface moves its depth by at most 1 / DEPTH_SLOPE_MIN per unit of SDF change.
DEPTH_SLOPE_MIN = 1e-3


class RenderOutput(NamedTuple):
    """``render(..., surface=True)``: silhouettes [B, R], depth [B, R] (the ray parameter t of the hit point
    ``o + t d``; with unit directions, the distance from the camera), unit normals [B, R, 3] in world coordinates,
    hit [B, R] (bool); depth and normal are 0 where hit is False."""

    silhouette: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor
    hit: torch.Tensor


def sdf_and_gradient(decoder, z, points, shape):
    """SDF [n] and its xyz gradient [n, 3] at points [n, 3] of shapes ``shape`` [n]: an SDFDecoder's written-out
    gradient (:meth:`SDFDecoder.sdf_and_gradient`), or, for a generic callable, autograd with ``create_graph``
    (eager calls only), one call per shape."""
    if isinstance(decoder, SDFDecoder):
        return decoder.sdf_and_gradient(z, points, shape)
    with torch.enable_grad():
        x = points if points.requires_grad else points.detach().requires_grad_(True)
        sdf = x.new_zeros(x.shape[0])
        for b in range(z.shape[0]):
            rows = (shape == b).nonzero().squeeze(1)
            sdf = sdf.index_put((rows,), decoder(z[b : b + 1], x[rows][None])[0].to(x.dtype))
        (grad,) = torch.autograd.grad(sdf.sum(), x, create_graph=True)
    return sdf, grad


def surface(decoder, call, t0: torch.Tensor, hit: torch.Tensor):
    """``(depth [B, R], normal [B, R, 3])`` of a call (:class:`~.backends._ops.RenderCall`) whose march found the
    crossing ``t0`` and ``hit`` [B, R].

    Depth ``t = t0 - (f(x0) - sg f(x0)) / sg(grad f(x0) . d)`` at ``x0 = o + t0 d`` (its value is t0, its gradient
    ``-(df/dtheta) / (grad f . d)``; the denominator kept at least DEPTH_SLOPE_MIN in magnitude), and the normal
    ``grad f / |grad f|`` at ``o + t d``, differentiable through t and directly. The decoder runs twice at each hit
    point: for ``f(x0)`` and for the gradient at the differentiable point."""
    B, R = hit.shape
    with torch.autocast(call.z.device.type, enabled=False):
        z = call.z
        o, d = call.origins.reshape(-1, 3), call.directions.reshape(-1, 3)
        t0, hit = t0.reshape(-1).detach(), hit.reshape(-1)
        shape = torch.div(torch.arange(B * R, device=z.device), R, rounding_mode="floor")
        rows = None
        if not torch.compiler.is_compiling():
            rows = hit.nonzero().squeeze(1)
            o, d, t0, shape = o[rows], d[rows], t0[rows], shape[rows]
        x0 = o + t0[:, None] * d
        f0, g0 = sdf_and_gradient(decoder, z, x0, shape)
        slope = (g0.detach() * d).sum(-1)
        slope = torch.where(slope > 0, slope.clamp_min(DEPTH_SLOPE_MIN), slope.clamp_max(-DEPTH_SLOPE_MIN))
        t = t0 - (f0 - f0.detach()) / slope
        _, g = sdf_and_gradient(decoder, z, o + t[:, None] * d, shape)
        n = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        if rows is None:
            depth, normal = torch.where(hit, t, 0), torch.where(hit[:, None], n, 0)
        else:
            depth = t.new_zeros(B * R).index_put((rows,), t)
            normal = n.new_zeros(B * R, 3).index_put((rows,), n)
    return depth.view(B, R), normal.view(B, R, 3)
