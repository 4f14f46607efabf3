"""Orbit cameras and ray/bounding-sphere intersection, exactly as docs/contract.md defines them.

This module makes rays; it does not render. Everything is batched over the leading dimension, works in any
float dtype on any device, and follows the tensors it is given (the dtype and device of ``azimuth`` decide
those of the rays). Convention: right-handed world, +y up, vertical field of view in radians, pixel centres,
rays flattened row-major with row 0 at the top of the image.
"""

from __future__ import annotations

import math

import torch

__all__ = ["orbit_rays", "sphere_near_far", "camera_frame"]


def _as_batch(value, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Turns a float, 0-d or 1-d tensor into a 1-d tensor; ``like`` gives dtype and device."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"`{name}` must be a floating-point tensor, got {value.dtype}")
        if value.dim() > 1:
            raise ValueError(f"`{name}` must be a scalar or a 1-d tensor [B], got shape {tuple(value.shape)}")
        if like is not None:
            if value.device != like.device:
                raise ValueError(f"`{name}` is on {value.device} but `azimuth` is on {like.device}")
            value = value.to(like.dtype)
        return value.reshape(-1)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if like is None:
            return torch.tensor([float(value)], dtype=torch.get_default_dtype())
        return torch.full((1,), float(value), dtype=like.dtype, device=like.device)
    raise TypeError(f"`{name}` must be a float or a float tensor, got {type(value).__name__}")


def camera_frame(azimuth, elevation, distance):
    """Camera centre and orthonormal frame of an orbit camera looking at the origin.

    Args:
        azimuth, elevation: radians, floats or tensors [B].
        distance: distance of the camera from the origin, float or [B].

    Returns:
        ``(centre, forward, right, up)``, each [B, 3], with ``right = normalize(cross(forward, +y))`` and
        ``up = cross(right, forward)``.
    """
    az = _as_batch(azimuth, "azimuth")
    el = _as_batch(elevation, "elevation", az)
    dist = _as_batch(distance, "distance", az)
    az, el, dist = torch.broadcast_tensors(az, el, dist)
    if (dist <= 0).any():
        raise ValueError("`distance` must be positive")
    centre = dist[:, None] * torch.stack(
        [torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], dim=-1
    )
    forward = torch.nn.functional.normalize(-centre, dim=-1)
    world_up = torch.zeros_like(forward)
    world_up[:, 1] = 1.0
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, world_up, dim=-1), dim=-1)
    up = torch.linalg.cross(right, forward, dim=-1)
    return centre, forward, right, up


def orbit_rays(azimuth, elevation, distance, fov, height: int, width: int):
    """Rays through the pixel centres of orbit cameras looking at the origin.

    Args:
        azimuth: radians, float or tensor [B]. Its dtype and device are those of the rays.
        elevation: radians, float or [B] (broadcast against ``azimuth``).
        distance: camera distance from the origin, float or [B].
        fov: vertical field of view in radians, float or [B], in (0, pi).
        height, width: image size in pixels.

    Returns:
        ``(origins, directions)``, each [B, height*width, 3]; ray index ``i*width + j`` is pixel row ``i``
        (row 0 at the top) and column ``j``; directions have unit length.
    """
    if not isinstance(height, int) or not isinstance(width, int) or height < 1 or width < 1:
        raise ValueError(f"`height` and `width` must be positive ints, got {height!r}, {width!r}")
    centre, forward, right, up = camera_frame(azimuth, elevation, distance)
    fov_t = _as_batch(fov, "fov", centre)
    if ((fov_t <= 0) | (fov_t >= math.pi)).any():
        raise ValueError("`fov` must lie in (0, pi) radians")
    half = torch.tan(fov_t / 2).expand(centre.shape[0])[:, None, None]  # [B, 1, 1]
    opts = dict(dtype=centre.dtype, device=centre.device)
    cols = (2 * (torch.arange(width, **opts) + 0.5) / width - 1) * (width / height)
    rows = 1 - 2 * (torch.arange(height, **opts) + 0.5) / height
    y, x = torch.meshgrid(rows, cols, indexing="ij")  # [H, W], row-major
    x = x.reshape(1, -1, 1) * half
    y = y.reshape(1, -1, 1) * half
    directions = forward[:, None, :] + x * right[:, None, :] + y * up[:, None, :]
    directions = torch.nn.functional.normalize(directions, dim=-1)
    origins = centre[:, None, :].expand_as(directions).contiguous()
    return origins, directions


def sphere_near_far(origins: torch.Tensor, directions: torch.Tensor, radius: float = 1.0):
    """Where each ray enters and leaves the bounding sphere ``|p| = radius``.

    Args:
        origins, directions: [..., 3]; directions need not be normalised (``t`` is in units of them).
        radius: bounding-sphere radius.

    Returns:
        ``(near, far, valid)``, each [...]. ``valid`` is False for a ray that misses the sphere (or only
        touches it, or has it wholly behind); such rays get ``near = far = 0``. ``near`` is clamped at 0 for an
        origin inside the sphere.
    """
    if origins.shape != directions.shape or origins.shape[-1:] != (3,):
        raise ValueError(
            f"`origins` and `directions` must both be [..., 3] of one shape, got {tuple(origins.shape)} "
            f"and {tuple(directions.shape)}"
        )
    if radius <= 0:
        raise ValueError(f"`radius` must be positive, got {radius}")
    a = (directions * directions).sum(-1)
    b = (origins * directions).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    disc = b * b - a * c
    root = torch.sqrt(disc.clamp_min(0))
    near = (-b - root) / a
    far = (-b + root) / a
    valid = (disc > 0) & (far > 0) & (a > 0)
    zero = torch.zeros_like(near)
    near = torch.where(valid, near.clamp_min(0), zero)
    far = torch.where(valid, far, zero)
    return near, far, valid
