"""Each training shape's frame from proxies fitted to its one image (``--proxy-frame``): a centred box and a centred
ellipsoid, each a rotation and three half-axes, fitted by Adam to the image's silhouette and shading under the
dataset's known camera and light (the albedo in closed form, as in the shading loss); the lower-loss proxy's rotation
is the shape's frame. The proxies read no 3-D data, but they are the forms of the built-in families (spheres are
ellipsoids), so a run with them uses that knowledge; docs/results.md, the decoder's frame, measures what they give.

Both proxies are ray-cast in closed form and made soft at the contour (a sigmoid of the ray's depth inside the box, or
of how far inside the ellipsoid it passes), so the fit needs no decoder and no render: every start of every image in
one batch: 56 s for the 50 built-in shapes on a 2-core CPU (docs/results.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import ShapeDataset, shading_error
from .frames import rotation_6d
from .views import camera_rays

__all__ = ["PROXIES", "ProxyFit", "fit_proxy_frames", "proxy_losses"]

PROXIES = ("box", "ellipsoid")


@dataclass
class ProxyFit:
    """What :func:`fit_proxy_frames` found per image: ``frames`` [N, 3, 3] (columns: the proxy's axes in world
    coordinates), ``half_axes`` [N, 3], ``proxy`` (the winning proxy's name per image) and ``loss`` [N]."""

    frames: torch.Tensor
    half_axes: torch.Tensor
    proxy: list
    loss: torch.Tensor


def _box(rot, half, o, d, light, soft):
    """Soft silhouette [..., R], ``max(n . l, 0)`` [..., R] and hit [..., R] of centred boxes; rot [..., 3, 3], half
    [..., 3] and light [..., 3] per box, rays o, d [..., R, 3] broadcasting against them. The face a ray hits is the
    slab it enters last; its choice is soft too (a softmax over the slabs' entries), so that the shading moves the
    edges between faces, not only their normals."""
    ol, dl = o @ rot, d @ rot  # the rays in the box's frame
    dl = torch.where(dl.abs() < 1e-6, torch.full_like(dl, 1e-6), dl)
    t1, t2 = (-half[..., None, :] - ol) / dl, (half[..., None, :] - ol) / dl
    t_in = torch.minimum(t1, t2)  # [..., R, 3] where the ray enters each slab
    t_near, t_far = t_in.max(-1).values, torch.maximum(t1, t2).min(-1).values
    sil = torch.sigmoid((t_far - t_near) / soft)
    light_local = (light[..., None, :] @ rot)[..., None, 0, :]  # [..., 1, 3]
    lambert = (-torch.sign(dl) * light_local).clamp_min(0)  # each slab's entry face: outward normal -sign(d_k) e_k
    return sil, (torch.softmax(t_in / soft, -1) * lambert).sum(-1), t_near < t_far


def _ellipsoid(rot, half, o, d, light, soft):
    """As :func:`_box`, for centred ellipsoids ``x^T A x = 1``, ``A = rot diag(half^-2) rot^T``."""
    a = rot @ torch.diag_embed(half**-2) @ rot.transpose(-1, -2)
    ao, ad = o @ a, d @ a
    dad, oad, oao = (d * ad).sum(-1), (o * ad).sum(-1), (o * ao).sum(-1)
    closest = oao - oad**2 / dad  # the least x^T A x along the ray: below 1 inside
    sil = torch.sigmoid((1 - closest) / soft)
    t = (-oad - (oad**2 - dad * (oao - 1)).clamp_min(1e-9).sqrt()) / dad
    normal = torch.nn.functional.normalize((o + t[..., None] * d) @ a, dim=-1)
    return sil, (normal * light[..., None, :]).sum(-1).clamp_min(0), closest < 1


def proxy_losses(proxy: str, rot, half, o, d, silhouette, colors, light, ambient, diffuse, soft=0.02):
    """Per proxy [...]: the mean squared silhouette error over the rays, and the shading error (:func:`shading_error`)
    on the rays that both the proxy and the true ``silhouette`` [..., R] cover; ``colors`` [..., R, 3]."""
    sil, lambert, hit = (_box if proxy == "box" else _ellipsoid)(rot, half, o, d, light, soft)
    mask = hit & (silhouette > 0.5)
    shade = torch.where(mask, ambient + diffuse * lambert, 0)
    err = shading_error(shade, colors)
    return ((sil - silhouette) ** 2).mean(-1), torch.where(mask, err, 0).sum(-1) / mask.sum(-1).clamp_min(1)


def fit_proxy_frames(ds: ShapeDataset, starts: int = 8, steps: int = 200, stride: int = 2, chunk: int = 10,
                     seed: int = 0, progress: bool = False) -> ProxyFit:
    """Fits a box and an ellipsoid to each training image of ``ds`` (its silhouette and colours at every ``stride``-th
    pixel of each row and column, seen by its training camera in its light), from ``starts`` random rotations each,
    by ``steps`` Adam steps (the contour softer for the first half); ``chunk`` images at a time."""
    n, res = len(ds), ds.resolution
    o, d = camera_rays(ds, ds.azimuth, ds.elevation, res, "cpu")[:2]
    pick = lambda t: t.reshape(n, res, res, -1)[:, ::stride, ::stride].reshape(n, -1, t.shape[-1])  # noqa: E731
    o, d = pick(o), pick(d)
    sil = pick(ds.silhouettes.reshape(n, res * res, 1).float())[..., 0]
    colors = pick(ds.images.flatten(2).transpose(1, 2).float())
    g = torch.Generator().manual_seed(seed)
    best = dict(loss=torch.full((n,), math.inf), frames=torch.eye(3).repeat(n, 1, 1), half=torch.zeros(n, 3),
                proxy=[None] * n)
    jobs = [(p, s) for p in PROXIES for s in range(0, n, chunk)]
    if progress:
        try:
            from tqdm import tqdm

            jobs = tqdm(jobs, desc="proxy frames", unit="fit")
        except ImportError:
            pass
    for proxy, s in jobs:
        e = min(s + chunk, n)
        x6 = torch.randn(e - s, starts, 6, generator=g).requires_grad_()
        log_half = torch.full((e - s, starts, 3), math.log(0.35)).requires_grad_()
        opt = torch.optim.Adam([x6, log_half], lr=0.03)
        args = [t[s:e, None] for t in (o, d, sil, colors, ds.lights.float())]
        for k in range(steps + 1):
            with torch.set_grad_enabled(k < steps):
                rot = rotation_6d(x6.reshape(-1, 6)).reshape(e - s, starts, 3, 3)
                sil_loss, shade_loss = proxy_losses(proxy, rot, log_half.exp(), *args, ds.ambient, ds.diffuse,
                                                    soft=0.05 if k < steps // 2 else 0.02)
                loss = sil_loss + shade_loss
            if k < steps:
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
        loss, j = loss.detach().min(1)
        better = loss < best["loss"][s:e]
        rows = torch.arange(e - s)
        found = dict(loss=loss, frames=rot.detach()[rows, j], half=log_half.detach()[rows, j].exp())
        for key, value in found.items():
            best[key][s:e] = torch.where(better.reshape(-1, *[1] * (value.dim() - 1)), value, best[key][s:e])
        best["proxy"][s:e] = [proxy if b else p for b, p in zip(better.tolist(), best["proxy"][s:e])]
    return ProxyFit(best["frames"], best["half"], best["proxy"], best["loss"])

