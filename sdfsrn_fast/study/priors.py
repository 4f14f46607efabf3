"""Regularisers of the study's training, on random points in the unit ball: the eikonal term (|grad f| = 1) and
the symmetry priors on the unseen depth (mirror across the plane facing the training camera; point symmetry) and
a curvature prior near the surface."""

from __future__ import annotations

import torch

from .._surface import sdf_and_gradient

__all__ = ["ball_points", "field", "eikonal", "eikonal_term", "curvature_points", "curvature", "curvature_term",
           "view_mirrors", "symmetry_losses"]


def ball_points(batch: int, num_points: int, g: torch.Generator, device) -> torch.Tensor:
    """[batch, num_points, 3] points uniform in the unit ball."""
    p = torch.randn(batch, num_points, 3, generator=g)
    return (p / p.norm(dim=-1, keepdim=True) * torch.rand(batch, num_points, 1, generator=g) ** (1 / 3)).to(device)


def field(decoder, z, points: torch.Tensor):
    """The SDF [B, P] and its xyz gradient [B, P, 3] at ``points`` [B, P, 3]: an SDFDecoder's written-out gradient
    (a first-order graph, so that these terms run inside ``torch.compile``, where a double backward does not), or
    autograd for any other callable."""
    B, P = points.shape[:2]
    shape = torch.arange(B, device=points.device).repeat_interleave(P)
    f, grad = sdf_and_gradient(decoder, z, points.reshape(-1, 3), shape)
    return f.view(B, P), grad.view(B, P, 3)


def eikonal(decoder, z, points: torch.Tensor) -> torch.Tensor:
    """Mean of (|grad_p f(z, p)| - 1)^2 over ``points`` [B, P, 3] (:func:`ball_points`)."""
    return eikonal_term(field(decoder, z, points)[1])


def eikonal_term(grad: torch.Tensor) -> torch.Tensor:
    """The eikonal term from the SDF's gradients [B, P, 3] (:func:`field`)."""
    return ((grad.float().norm(dim=-1) - 1) ** 2).mean()


def curvature_points(points: torch.Tensor, g: torch.Generator, step: float = 0.02,
                     pairs: int | None = None) -> torch.Tensor:
    """[B, P + K, 3]: ``points`` p [B, P, 3], then partners p + step u (u random unit vectors) of the first K =
    ``pairs`` of them (default all)."""
    first = points[:, : points.shape[1] if pairs is None else pairs]
    u = torch.nn.functional.normalize(torch.randn(first.shape, generator=g), dim=-1).to(points.device)
    return torch.cat([points, first + step * u], dim=1)


def curvature(decoder, z, points: torch.Tensor, band: float = 0.05, pairs: int | None = None) -> torch.Tensor:
    """Mean of |grad_p f(z, p) - grad_p f(z, q)|^2 over the pairs (p, q = p + step u) of ``points``
    (:func:`curvature_points`) with |f(z, p)| < band: how fast the normals turn near the surface. One view, its
    shading and central symmetry leave the depth of the seen surface open (a lens-shaped or extruded shape meets
    them as well as the true one, docs/results.md); both have rims and walls that this term penalises."""
    return curvature_term(*field(decoder, z, points), band=band, pairs=pairs)


def curvature_term(f: torch.Tensor, grad: torch.Tensor, band: float = 0.05, pairs: int | None = None) -> torch.Tensor:
    """The curvature term from the SDF [B, P + K] and its gradients [B, P + K, 3] at :func:`curvature_points`
    (K = ``pairs``, default P)."""
    k = f.shape[1] // 2 if pairs is None else pairs
    gp, gq = grad[:, :k].float(), grad[:, -k:].float()
    near = (f[:, :k].detach().abs() < band).float()
    return (((gp - gq) ** 2).sum(-1) * near).sum() / near.sum().clamp_min(1)


def view_mirrors(view_dirs: torch.Tensor) -> torch.Tensor:
    """[B, 3, 3] reflections across the planes through the origin normal to ``view_dirs`` [B, 3]."""
    n = torch.nn.functional.normalize(view_dirs, dim=-1)
    return torch.eye(3, dtype=n.dtype, device=n.device) - 2 * n[:, :, None] * n[:, None, :]


def symmetry_losses(decoder, z, points: torch.Tensor, maps) -> list:
    """For each linear map in ``maps`` ([B, 3, 3] per shape, or [3, 3] for all), the mean squared difference of
    the SDF at ``points`` [B, P, 3] and at their images: zero for shapes that the map leaves unchanged. With
    :func:`view_mirrors` of the training cameras: the back of a shape mirrors its front; with ``-I``: the shape is
    point-symmetric about the origin. One decoder call evaluates the points and all their images."""
    images = [points @ m.transpose(-1, -2) for m in maps]
    sdf = decoder(z, torch.cat([points, *images], dim=1)).split(points.shape[1], dim=1)
    return [(sdf[0] - other).pow(2).mean() for other in sdf[1:]]
