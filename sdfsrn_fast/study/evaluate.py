"""``sdfsrn-eval RUN_DIR``: novel-view silhouette MSE and IoU (64x64) per family and overall, the novel views' depth
error (mean absolute, on the pixels both prediction and truth hit) and normal error (mean angle, degrees), and 3-D
metrics the study did not have: the predicted surface is extracted with marching cubes (scikit-image) at each shape's
latent and compared with the analytic shape by Chamfer distance (between surface point sets) and volumetric IoU
(on the grid). Writes ``eval.json`` into the run directory and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ..cameras import camera_frame
from .config import TrainError, resolve_device
from .data import FAMILIES, _silhouettes
from .frames import frames_of
from .priors import view_mirrors
from .runs import load_data, load_run
from .views import evaluate_novel_views, silhouette_iou

__all__ = ["shape_metrics", "cube_rotations", "frame_error", "evaluate_run", "view_aligned_ellipsoid_iou",
           "mirror_union_iou", "main"]


def _grid(n: int, device) -> torch.Tensor:
    lin = torch.linspace(-1.0, 1.0, n, device=device)
    return torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)


def _surface_points(sdf_grid: np.ndarray, n: int, max_points: int, rng: np.random.Generator) -> np.ndarray | None:
    from skimage.measure import marching_cubes

    if not (sdf_grid.min() < 0 < sdf_grid.max()):
        return None  # no surface in the box
    verts, *_ = marching_cubes(sdf_grid, level=0.0, spacing=(2.0 / (n - 1),) * 3)
    verts = verts - 1.0
    if len(verts) > max_points:
        verts = verts[rng.choice(len(verts), max_points, replace=False)]
    return verts


@torch.no_grad()
def shape_metrics(decoder, z: torch.Tensor, ds, i: int, resolution: int = 64, max_points: int = 4000,
                  frame: torch.Tensor | None = None) -> dict:
    """Chamfer distance (mean of both directions' mean nearest-neighbour distances between marching-cubes
    surface points) and volumetric IoU in [-1, 1]^3 of shape ``i`` predicted at latent ``z`` [L] (in its frame
    [3, 3] where the run learned one: the decoder sees the world grid turned into it)."""
    device = z.device
    pts = _grid(resolution, device)
    seen = pts if frame is None else pts @ frame
    pred = torch.cat([decoder(z[None], p[None])[0] for p in seen.split(65536)]).cpu()
    gt = ds.sdf(i, pts.cpu())
    vol_iou = ((pred < 0) & (gt < 0)).sum().item() / max(((pred < 0) | (gt < 0)).sum().item(), 1)
    rng = np.random.default_rng(i)
    shape = (resolution,) * 3
    a = _surface_points(pred.reshape(shape).numpy(), resolution, max_points, rng)
    b = _surface_points(gt.reshape(shape).numpy(), resolution, max_points, rng)
    if a is None or b is None:
        return {"chamfer": float("nan"), "volume_iou": vol_iou}
    d = torch.cdist(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    chamfer = 0.5 * (d.min(1).values.mean() + d.min(0).values.mean()).item()
    return {"chamfer": chamfer, "volume_iou": vol_iou}


def cube_rotations() -> torch.Tensor:
    """The 24 rotations that map a cube onto itself [24, 3, 3]: the frames that see a box alike."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = torch.zeros(3, 3, dtype=torch.float64)
            m[range(3), perm] = torch.tensor(signs, dtype=torch.float64)
            if torch.linalg.det(m) > 0:
                mats.append(m)
    return torch.stack(mats)


def frame_error(true: torch.Tensor, found: torch.Tensor) -> float:
    """Degrees between a shape's true frame and a found one [3, 3] (columns: axes), the nearer of the found frame's
    24 turns by :func:`cube_rotations` (a frame's axes may be named and signed any way)."""
    turned = true.double().T @ found.double() @ cube_rotations()
    trace = torch.diagonal(turned, dim1=-2, dim2=-1).sum(-1).max()
    return math.degrees(math.acos(((trace - 1) / 2).clamp(-1, 1)))


def evaluate_run(run_dir, grid: int = 64, device: str = "cpu", progress: bool = True, encoder=None) -> dict:
    """All metrics of a run (also written to RUN_DIR/eval.json); ``encoder``: see :func:`load_run`."""
    dev = resolve_device(device)
    cfg, encoder, decoder, _ = load_run(run_dir, dev, encoder)
    ds = load_data(cfg)
    result = evaluate_novel_views(encoder, decoder, ds, cfg, dev)
    encoder.eval()
    with torch.no_grad():
        images = ds.images.to(dev)
        z, frames = encoder(images), frames_of(encoder, images)
    per_shape = []
    it = range(len(ds))
    if progress:
        try:
            from tqdm import tqdm

            it = tqdm(it, desc="3-D metrics", unit="shape")
        except ImportError:
            pass
    for i in it:
        frame = None if frames is None else frames[i]
        per_shape.append(dict(shape=i, family=ds.families[i], **shape_metrics(decoder, z[i], ds, i, grid, frame=frame)))
        if frame is not None and ds.families[i] != "sphere":  # a sphere's frame is any
            per_shape[-1]["frame_error"] = frame_error(ds.rotations[i], frame.cpu())
    for fam in ("box", "ellipsoid"):
        errors = [r["frame_error"] for r in per_shape if r["family"] == fam and "frame_error" in r]
        if errors:
            result[f"frame_error_{fam}"] = float(np.mean(errors))
    for key in ("chamfer", "volume_iou"):
        vals = [r[key] for r in per_shape if np.isfinite(r[key])]
        result[key] = float(np.mean(vals)) if vals else float("nan")
        for fam in FAMILIES:
            fam_vals = [r[key] for r in per_shape if r["family"] == fam and np.isfinite(r[key])]
            if fam_vals:
                result[f"{key}_{fam}"] = float(np.mean(fam_vals))
    result["shapes_without_surface"] = sum(not np.isfinite(r["chamfer"]) for r in per_shape)
    result["per_shape"] = per_shape
    result["grid"] = grid
    (Path(run_dir) / "eval.json").write_text(json.dumps(result, indent=1))
    return result


DEPTH_GUESSES = ("mean", "true")


def view_aligned_ellipsoid_iou(ds, depth: str = "mean") -> float:
    """How far one silhouette determines an ellipsoid: the mean novel-view IoU (64x64 or the dataset's size) of a
    guess that reproduces each ellipsoid's training silhouette exactly (orthographically) but puts its third
    axis along the training camera's view direction, over the dataset's ellipsoids.

    An ellipsoid ``{x: x^T M^-1 x <= 1}`` casts (orthographically) the shadow given by the image-plane 2x2 block
    of ``M`` in the camera's frame; the rest of ``M`` (the depth axis's tilt and length) no silhouette from that
    view shows. The guess zeroes the tilt and takes the squared depth semi-axis as the mean of the shadow's two
    (``depth="mean"``, a guess from the image alone) or the true one (``depth="true"``, an oracle: what is
    left is the tilt alone).
    """
    if depth not in DEPTH_GUESSES:
        raise ValueError(f"`depth` must be one of {DEPTH_GUESSES}, got {depth!r}")
    ious = []
    for i, family in enumerate(ds.families):
        if family != "ellipsoid":
            continue
        size, rot = ds.sizes[i].double(), ds.rotations[i].double()
        _, fwd, right, up = camera_frame(ds.azimuth[i : i + 1].double(), ds.elevation[i : i + 1].double(),
                                         ds.distance)
        basis = torch.stack([right[0], up[0], fwd[0]], dim=1)  # camera frame -> world
        m = basis.T @ rot @ torch.diag(size**2) @ rot.T @ basis
        guess = torch.zeros_like(m)
        guess[:2, :2] = m[:2, :2]
        guess[2, 2] = torch.linalg.eigvalsh(m[:2, :2]).mean() if depth == "mean" else m[2, 2]
        axes2, frame = torch.linalg.eigh(basis @ guess @ basis.T)
        if torch.linalg.det(frame) < 0:
            frame[:, 0] = -frame[:, 0]
        pred = _silhouettes("ellipsoid", axes2.sqrt(), frame, ds.novel_azimuth[i], ds.novel_elevation[i], ds.distance,
                            ds.fov, ds.resolution)
        ious.append(silhouette_iou(pred, ds.novel_silhouettes[i]).mean().item())
    if not ious:
        raise ValueError("the dataset has no ellipsoids")
    return float(np.mean(ious))


def mirror_union_iou(ds) -> dict:
    """The mean novel-view IoU, per family and overall, of the union of each true shape with its mirror image across
    the plane through the origin facing its training camera: a mirror-symmetric shape, as the mirror prior
    (``--mirror-weight``) asks for, built from the truth itself.

    Its novel-view silhouettes miss no pixel of the truth; its extra pixels are the price of the symmetry. (Under
    perspective it is also larger than the shape in the training view: the mirror image, whose near parts were far,
    casts another silhouette.) Exact silhouettes at the dataset's resolution. Not a proven bound: another
    symmetric shape could score higher.
    """
    _, fwd, _, _ = camera_frame(ds.azimuth.double(), ds.elevation.double(), ds.distance)
    mirrors = view_mirrors(fwd)
    ious = {}
    for i, family in enumerate(ds.families):
        size, rot = ds.sizes[i].double(), ds.rotations[i].double()
        mirrored = _silhouettes(family, size, mirrors[i] @ rot, ds.novel_azimuth[i], ds.novel_elevation[i],
                                ds.distance, ds.fov, ds.resolution).float()
        union = torch.maximum(mirrored, ds.novel_silhouettes[i])
        ious.setdefault(family, []).append(silhouette_iou(union, ds.novel_silhouettes[i]).mean().item())
    out = {fam: float(np.mean(v)) for fam, v in ious.items()}
    out["all"] = float(np.mean([x for v in ious.values() for x in v]))
    return out


def _table(r: dict) -> str:
    lines = [f"{'':<10} {'novel MSE':>10} {'novel IoU':>10} {'depth err':>10} {'normal err':>11} {'Chamfer':>9} "
             f"{'vol IoU':>8}"]
    nan = float("nan")
    for fam in list(FAMILIES) + ["all"]:
        sfx = "" if fam == "all" else f"_{fam}"
        if f"novel_iou{sfx}" not in r:
            continue
        lines.append(f"{fam:<10} {r[f'novel_mse{sfx}']:>10.4f} {r[f'novel_iou{sfx}']:>10.3f} "
                     f"{r.get(f'novel_depth_error{sfx}', nan):>10.4f} {r.get(f'novel_normal_error{sfx}', nan):>10.1f}d "
                     f"{r.get(f'chamfer{sfx}', nan):>9.4f} {r.get(f'volume_iou{sfx}', nan):>8.3f}")
    frames = [f"{fam} {r[f'frame_error_{fam}']:.1f} deg" for fam in ("box", "ellipsoid") if f"frame_error_{fam}" in r]
    if frames:
        lines.append("frames from the true axes (mean, mod the cube's rotations): " + ", ".join(frames))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="sdfsrn-eval", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", nargs="?", help="a run directory of sdfsrn-train")
    p.add_argument("--ellipsoid-baseline", action="store_true",
                   help="print what one silhouette determines of an ellipsoid (no run needed): the novel-view IoU "
                        "of view-aligned guesses on the built-in dataset")
    p.add_argument("--mirror-baseline", action="store_true",
                   help="print the novel-view IoU per family of each true shape united with its mirror image across "
                        "its training view's plane: a mirror-symmetric guess built from the truth (no run needed)")
    p.add_argument("--grid", type=int, default=64, help="marching-cubes grid per side (default 64)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.ellipsoid_baseline or args.mirror_baseline:
        from .data import make_dataset

        ds = make_dataset()
        if args.ellipsoid_baseline:
            for depth in DEPTH_GUESSES:
                print(f"view-aligned ellipsoid guess, {depth} depth: novel-view IoU "
                      f"{view_aligned_ellipsoid_iou(ds, depth):.3f}")
        if args.mirror_baseline:
            print("true shape united with its mirror image: novel-view IoU "
                  + ", ".join(f"{k} {v:.3f}" for k, v in mirror_union_iou(ds).items()))
        if args.run_dir is None:
            return 0
    if args.run_dir is None:
        p.error("give a run directory (or --ellipsoid-baseline / --mirror-baseline)")
    try:
        r = evaluate_run(args.run_dir, args.grid, args.device, progress=not args.no_progress)
    except (TrainError, ImportError) as err:
        print(f"sdfsrn-eval: error: {err}", file=sys.stderr)
        return 2
    print(_table(r))
    print(f"wrote {Path(args.run_dir) / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
