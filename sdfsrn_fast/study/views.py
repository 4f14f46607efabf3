"""A run's predictions seen through cameras: rays of the study's views, predicted silhouettes and surfaces, their
IoU against the truth on the novel views (the study's main metric), and the novel views' depth and normal errors."""

from __future__ import annotations

import torch

from .. import render
from ..cameras import orbit_rays, sphere_near_far
from .config import Config
from .data import FAMILIES, ShapeDataset, shading
from .frames import frames_of, normals_to_world, to_frame

__all__ = ["EVAL_RESOLUTION", "camera_rays", "predict_silhouettes", "predict_surfaces", "shaded", "silhouette_iou",
           "surface_errors", "evaluate_novel_views"]

EVAL_RESOLUTION = 64  # IoU is always measured on 64x64 novel-view silhouettes (threshold 0.5)


def camera_rays(ds: ShapeDataset, az, el, resolution: int, device):
    """(origins, directions, near, far, valid) of the dataset's orbit cameras at angles ``az``, ``el`` [N]."""
    o, d = orbit_rays(az.reshape(-1), el.reshape(-1), ds.distance, ds.fov, resolution, resolution)
    near, far, valid = sphere_near_far(o, d)
    return tuple(t.to(device) for t in (o, d, near, far, valid))


@torch.no_grad()
def predict_surfaces(encoder, decoder, ds: ShapeDataset, indices, az, el, cfg: Config, device, batch_views=12,
                     resolution: int = EVAL_RESOLUTION, surface: bool = True):
    """What shapes ``indices`` look like from angles az, el [len, V]: ``render(..., surface=True)``'s outputs
    (silhouette, depth, normal, hit), each [len(indices), V, res, res (, 3)], on the CPU; with ``surface=False``
    the silhouettes alone."""
    encoder.eval()
    images = ds.images[list(indices)].to(device)
    z_all, frame_all = encoder(images), frames_of(encoder, images)
    encoder.train()
    V = az.shape[1]
    z = z_all.repeat_interleave(V, dim=0)
    frames = None if frame_all is None else frame_all.repeat_interleave(V, dim=0)
    rays = camera_rays(ds, az.reshape(-1), el.reshape(-1), resolution, device)
    out = []
    for s in range(0, z.shape[0], batch_views):
        frame = None if frames is None else frames[s : s + batch_views]
        part = to_frame([t[s : s + batch_views] for t in rays], frame)
        r = render(decoder, z[s : s + batch_views], *part, num_samples=cfg.eval_samples, tau=cfg.tau_end,
                   tau_min=cfg.tau_end * cfg.tau_min_ratio, backend=cfg.backend, surface=surface)
        if surface and frame is not None:
            r = r._replace(normal=normals_to_world(r.normal, frame))
        out.append(r if surface else (r,))
    shape = (len(indices), V, resolution, resolution)
    joined = [torch.cat(parts).reshape(*shape, -1).squeeze(-1).cpu() for parts in zip(*out)]
    return tuple(joined) if surface else joined[0]


def predict_silhouettes(encoder, decoder, ds: ShapeDataset, indices, az, el, cfg: Config, device, batch_views=12,
                        resolution: int = EVAL_RESOLUTION):
    """Predicted silhouettes [len(indices), V, res, res] of shapes ``indices`` from angles az, el [len, V]."""
    return predict_surfaces(encoder, decoder, ds, indices, az, el, cfg, device, batch_views, resolution, False)


def shaded(ds: ShapeDataset, normal: torch.Tensor, hit: torch.Tensor, az, el) -> torch.Tensor:
    """Grey shaded images [N, V, res, res] of surfaces (normal [N, V, res, res, 3], hit) seen from angles az, el
    [N, V], with the training images' light and shading model, without albedo."""
    lights = ds.light(az.reshape(-1), el.reshape(-1))
    flat = [shading(n, h, l) for n, h, l in zip(normal.reshape(-1, *normal.shape[2:]), hit.reshape(-1, *hit.shape[2:]),
                                                lights)]
    return torch.stack(flat).reshape(hit.shape)


def surface_errors(pred_depth, pred_normal, pred_hit, depth, normal, hit):
    """Per view [...]: the mean absolute depth error and the mean angle between normals (degrees) on the pixels that
    both the prediction and the truth hit (NaN where they share none)."""
    both = (pred_hit & hit).flatten(-2)
    n = both.sum(-1)
    depth_err = torch.where(both, (pred_depth - depth).abs().flatten(-2), 0).sum(-1) / n
    cos = (pred_normal * normal).sum(-1).clamp(-1, 1).flatten(-2)
    angle = torch.where(both, torch.rad2deg(torch.arccos(cos)), 0).sum(-1) / n
    return depth_err, angle


def silhouette_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of (pred > 0.5) with (gt > 0.5) over the last two dimensions."""
    a, b = pred > 0.5, gt > 0.5
    union = (a | b).sum((-1, -2)).float()
    return torch.where(union > 0, (a & b).sum((-1, -2)).float() / union.clamp_min(1), torch.ones_like(union))


def evaluate_novel_views(encoder, decoder, ds: ShapeDataset, cfg: Config, device) -> dict:
    """Novel-view silhouette MSE and IoU at 64x64, and the depth error (mean absolute, on the pixels both the
    prediction and the truth hit) and normal error (mean angle, degrees, on the same pixels), per family and
    overall (the errors averaged over the views where they share pixels)."""
    res = EVAL_RESOLUTION
    pred, depth, normal, hit = predict_surfaces(encoder, decoder, ds, range(len(ds)), ds.novel_azimuth,
                                                ds.novel_elevation, cfg, device)
    truth = [ds.surface_maps(i, ds.novel_azimuth[i], ds.novel_elevation[i], res) for i in range(len(ds))]
    true_depth, true_normal, true_hit = (torch.stack([t[k] for t in truth]) for k in range(3))
    depth_err, normal_err = surface_errors(depth, normal, hit, true_depth, true_normal, true_hit)  # [N, V]
    mse = ((pred - ds.novel_silhouettes) ** 2).mean((-1, -2))  # [N, V]
    iou = silhouette_iou(pred, ds.novel_silhouettes)
    metrics = {"mse": mse, "iou": iou, "depth_error": depth_err, "normal_error": normal_err}
    out = {}
    for fam in (None, *FAMILIES):
        rows = [i for i, f in enumerate(ds.families) if fam is None or f == fam]
        if rows:
            for name, values in metrics.items():
                v = values[rows]
                out[f"novel_{name}" + (f"_{fam}" if fam else "")] = v[~v.isnan()].mean().item()
    return out
