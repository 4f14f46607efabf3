"""Prediction snapshots of a run, for its report page: a few shapes of each family, seen from a ring of angles
around each one's training camera, at epochs from the first to the last.

``snapshots.npz`` in the run directory holds the plan (shapes, angles), the exact silhouettes and shaded surfaces
from those angles, the shapes' training images, and per snapshot epoch the predicted silhouettes as packed bits
(threshold 0.5) and the predicted surfaces shaded with the training images' light (16 grey levels, two pixels a
byte).
Written atomically after each snapshot; a resumed run keeps appending (snapshots after its checkpoint's epoch are
dropped). Renders at 32x32 with the run's evaluation settings: a few per cent of an epoch's time each.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Config, autocast_dtype
from .data import FAMILIES, ShapeDataset
from .views import predict_surfaces, shaded

__all__ = ["Snapshots", "plan", "take", "due", "load", "FILE"]

FILE = "snapshots.npz"
RESOLUTION = 32  # predicted and true silhouettes, per side
VIEWS = 12  # angles on the ring (30 degrees apart)
PER_FAMILY = 2  # shapes of each family


@dataclass
class Snapshots:
    shapes: np.ndarray  # [S] dataset indices
    families: list  # [S]
    azimuth: np.ndarray  # [S, V] radians (ring around each training camera, at its elevation)
    elevation: np.ndarray  # [S, V]
    truth: np.ndarray  # [S, V, R*R/8] packed bits of the exact silhouettes
    images: np.ndarray  # [S, 64, 64, 3] uint8 training images
    epochs: np.ndarray  # [E]
    pred: np.ndarray  # [E, S, V, R*R/8] packed bits of the predictions
    truth_shaded: np.ndarray  # [S, V, R*R/2] the true surfaces shaded, 4 bits a pixel (:func:`pack_grey`)
    pred_shaded: np.ndarray  # [E, S, V, R*R/2] the predicted surfaces shaded, alike
    resolution: int = RESOLUTION

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, shapes=self.shapes, families=np.array(self.families), azimuth=self.azimuth,
                            elevation=self.elevation, truth=self.truth, images=self.images, epochs=self.epochs,
                            pred=self.pred, truth_shaded=self.truth_shaded, pred_shaded=self.pred_shaded,
                            resolution=np.array(self.resolution))
        os.replace(tmp, path)  # a reader sees the old file or the new one


def pack(sil: torch.Tensor) -> np.ndarray:
    """[..., R, R] silhouettes -> [..., R*R/8] packed bits of (sil > 0.5), row-major, most significant bit first."""
    bits = (sil > 0.5).reshape(*sil.shape[:-2], -1).numpy().astype(np.uint8)
    return np.packbits(bits, axis=-1)


def unpack(bits: np.ndarray, resolution: int) -> np.ndarray:
    return np.unpackbits(bits, axis=-1)[..., : resolution * resolution].reshape(*bits.shape[:-1], resolution,
                                                                                 resolution)


def pack_grey(images: torch.Tensor) -> np.ndarray:
    """[..., R, R] grey levels in [0, 1] -> [..., R*R/2] bytes: 16 levels (round(15 v)), two pixels a byte, the
    first in the high nibble."""
    q = (images.clamp(0, 1) * 15).round().to(torch.uint8).reshape(*images.shape[:-2], -1).numpy()
    return (q[..., 0::2] << 4) | q[..., 1::2]


def unpack_grey(packed: np.ndarray, resolution: int) -> np.ndarray:
    """The inverse of :func:`pack_grey`, as levels 0..15 [..., R, R]."""
    q = np.stack([packed >> 4, packed & 15], axis=-1).reshape(*packed.shape[:-1], -1)
    return q.reshape(*packed.shape[:-1], resolution, resolution)


def plan(ds: ShapeDataset, per_family: int = PER_FAMILY, views: int = VIEWS) -> Snapshots:
    """The shapes (the first ``per_family`` of each family), the ring of angles and the true silhouettes there."""
    shapes = [i for fam in FAMILIES for i in [j for j, f in enumerate(ds.families) if f == fam][:per_family]]
    ring = torch.arange(views, dtype=torch.float64) * (2 * math.pi / views)
    az = (ds.azimuth[shapes].double()[:, None] + ring[None, :]).float()
    el = ds.elevation[shapes].double()[:, None].expand(-1, views).float().contiguous()
    truth = torch.stack([ds.exact_silhouettes(i, az[k], el[k], RESOLUTION) for k, i in enumerate(shapes)])
    surfaces = [ds.surface_maps(i, az[k], el[k], RESOLUTION) for k, i in enumerate(shapes)]
    truth_shaded = shaded(ds, torch.stack([s[1] for s in surfaces]), torch.stack([s[2] for s in surfaces]), az, el)
    images = (ds.images[shapes].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    nbytes = math.ceil(RESOLUTION * RESOLUTION / 8)
    return Snapshots(np.array(shapes), [ds.families[i] for i in shapes], az.numpy(), el.numpy(), pack(truth), images,
                     np.zeros(0, dtype=np.int64), np.zeros((0, len(shapes), views, nbytes), dtype=np.uint8),
                     pack_grey(truth_shaded), np.zeros((0, len(shapes), views, RESOLUTION**2 // 2), dtype=np.uint8))


def due(cfg: Config, epoch: int) -> bool:
    """Snapshot after the first epoch, every ``snapshot_every`` epochs, and after the last (0 turns them off)."""
    if cfg.snapshot_every <= 0:
        return False
    done = epoch + 1
    return done == 1 or done == cfg.epochs or done % cfg.snapshot_every == 0


@torch.no_grad()
def predict(encoder, decoder, ds: ShapeDataset, snaps: Snapshots, cfg: Config, device) -> tuple:
    """``(silhouettes, shaded)`` of the planned shapes and angles, packed ([S, V, bytes] each: :func:`pack`,
    :func:`pack_grey`), at the snapshot resolution, with the training's samples per ray and precision (the page
    shows what training would render; cheaper too)."""
    amp = autocast_dtype(cfg, torch.device(device))
    cfg = dataclasses.replace(cfg, eval_samples=cfg.samples)
    az, el = torch.from_numpy(snaps.azimuth), torch.from_numpy(snaps.elevation)
    with torch.autocast(torch.device(device).type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        sil, _, normal, hit = predict_surfaces(encoder, decoder, ds, snaps.shapes.tolist(), az, el, cfg, device,
                                               resolution=snaps.resolution)
    return pack(sil.float()), pack_grey(shaded(ds, normal.float(), hit, az, el))


def take(encoder, decoder, ds: ShapeDataset, snaps: Snapshots, cfg: Config, device, epoch: int, path: Path) -> None:
    """Appends the predictions after ``epoch`` (1-based) and rewrites the file."""
    sil, grey = predict(encoder, decoder, ds, snaps, cfg, device)
    snaps.epochs = np.append(snaps.epochs, epoch)
    snaps.pred = np.concatenate([snaps.pred, sil[None]])
    snaps.pred_shaded = np.concatenate([snaps.pred_shaded, grey[None]])
    snaps.save(path)


def load(path: Path, upto_epoch: int | None = None) -> Snapshots:
    """A run's snapshots; with ``upto_epoch`` (resume) only those up to that epoch."""
    with np.load(path) as f:
        R = int(f["resolution"])
        S, V = f["azimuth"].shape
        # files written before the shaded surfaces: black where they would be
        shaded_truth = f["truth_shaded"] if "truth_shaded" in f else np.zeros((S, V, R * R // 2), dtype=np.uint8)
        shaded_pred = (f["pred_shaded"] if "pred_shaded" in f
                       else np.zeros((len(f["epochs"]), S, V, R * R // 2), dtype=np.uint8))
        s = Snapshots(f["shapes"], [str(x) for x in f["families"]], f["azimuth"], f["elevation"], f["truth"],
                      f["images"], f["epochs"], f["pred"], shaded_truth, shaded_pred, R)
    if upto_epoch is not None:
        keep = s.epochs <= upto_epoch
        s.epochs, s.pred, s.pred_shaded = s.epochs[keep], s.pred[keep], s.pred_shaded[keep]
    return s
