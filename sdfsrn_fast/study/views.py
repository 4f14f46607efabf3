"""A run's predictions seen through cameras: rays of the study's views, predicted silhouettes, and their IoU
against the truth on the novel views (the study's main metric)."""

from __future__ import annotations

import torch

from .. import render
from ..cameras import orbit_rays, sphere_near_far
from .config import Config
from .data import FAMILIES, ShapeDataset

__all__ = ["EVAL_RESOLUTION", "camera_rays", "predict_silhouettes", "silhouette_iou", "evaluate_novel_views"]

EVAL_RESOLUTION = 64  # IoU is always measured on 64x64 novel-view silhouettes (threshold 0.5)


def camera_rays(ds: ShapeDataset, az, el, resolution: int, device):
    """(origins, directions, near, far, valid) of the dataset's orbit cameras at angles ``az``, ``el`` [N]."""
    o, d = orbit_rays(az.reshape(-1), el.reshape(-1), ds.distance, ds.fov, resolution, resolution)
    near, far, valid = sphere_near_far(o, d)
    return tuple(t.to(device) for t in (o, d, near, far, valid))


@torch.no_grad()
def predict_silhouettes(encoder, decoder, ds: ShapeDataset, indices, az, el, cfg: Config, device, batch_views=12,
                        resolution: int = EVAL_RESOLUTION):
    """Predicted silhouettes [len(indices), V, res, res] of shapes ``indices`` from angles az, el [len, V]."""
    encoder.eval()
    z_all = encoder(ds.images[list(indices)].to(device))
    encoder.train()
    V = az.shape[1]
    z = z_all.repeat_interleave(V, dim=0)
    rays = camera_rays(ds, az.reshape(-1), el.reshape(-1), resolution, device)
    out = []
    for s in range(0, z.shape[0], batch_views):
        part = [t[s : s + batch_views] for t in rays]
        out.append(render(decoder, z[s : s + batch_views], *part, num_samples=cfg.eval_samples, tau=cfg.tau_end,
                          tau_min=cfg.tau_end * cfg.tau_min_ratio, backend=cfg.backend))
    return torch.cat(out).reshape(len(indices), V, resolution, resolution).cpu()


def silhouette_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of (pred > 0.5) with (gt > 0.5) over the last two dimensions."""
    a, b = pred > 0.5, gt > 0.5
    union = (a | b).sum((-1, -2)).float()
    return torch.where(union > 0, (a & b).sum((-1, -2)).float() / union.clamp_min(1), torch.ones_like(union))


def evaluate_novel_views(encoder, decoder, ds: ShapeDataset, cfg: Config, device) -> dict:
    """Novel-view silhouette MSE and IoU at 64x64, per family and overall."""
    pred = predict_silhouettes(encoder, decoder, ds, range(len(ds)), ds.novel_azimuth, ds.novel_elevation, cfg,
                               device)
    mse = ((pred - ds.novel_silhouettes) ** 2).mean((-1, -2))  # [N, V]
    iou = silhouette_iou(pred, ds.novel_silhouettes)
    out = {"novel_mse": mse.mean().item(), "novel_iou": iou.mean().item()}
    for fam in FAMILIES:
        rows = [i for i, f in enumerate(ds.families) if f == fam]
        if rows:
            out[f"novel_iou_{fam}"] = iou[rows].mean().item()
            out[f"novel_mse_{fam}"] = mse[rows].mean().item()
    return out
