"""Training driver: learns encoder + decoder from one silhouette per shape and evaluates on novel views.

``sdfsrn-train --preset quick`` (or ``python -m sdfsrn_fast.train``) trains on the built-in synthetic shapes with
silhouette supervision only; ``--preset study`` is the original study's configuration. Every setting can be
overridden on the command line (``--help`` lists them) and the resolved configuration is saved with the run.
Runs under ``torchrun --nproc_per_node=N`` with shapes sharded across ranks (gloo on CPU, nccl on CUDA).
Python API: :func:`train` takes a :class:`Config` and optionally your own encoder module.

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (written
atomically after every epoch; ``--resume RUN_DIR`` continues exactly) and, at the end, ``summary.json`` and the
figures (see :mod:`sdfsrn_fast.figures`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from . import render
from .cameras import camera_frame, orbit_rays, sphere_near_far
from .data import FAMILIES, ShapeDataset, load_dataset, make_dataset
from .models import Encoder, SDFDecoder

__all__ = ["Config", "PRESETS", "TrainResult", "train", "preset_config", "evaluate_novel_views", "main", "load_run",
           "symmetry_losses", "view_mirrors", "resolve_device"]

EVAL_RESOLUTION = 64  # IoU is always measured on 64x64 novel-view silhouettes (threshold 0.5)


@dataclass
class Config:
    """Everything a run depends on. Presets fill it; command-line flags override single fields."""

    preset: str = "quick"
    out: str = "runs/quick"
    dataset: Optional[str] = None  # a .npz written by ShapeDataset.save; None: make it in code
    num_shapes: int = 50
    data_seed: int = 0
    seed: int = 0
    epochs: int = 300
    batch_size: int = 10
    rays: int = 32  # training rays per image side
    rays_per_step: int = 0  # rays drawn at random from each rays x rays image per step; 0: all of them
    samples: int = 32
    eval_samples: int = 64
    hidden: int = 128
    latent: int = 128
    activation: str = "relu"
    softplus_beta: float = 100.0
    lr: float = 5e-4
    lr_decay: float = 0.1  # final learning rate = lr * lr_decay (cosine)
    tau_start: float = 0.05
    tau_end: float = 0.01
    tau_min_ratio: float = 0.5  # tau_min = tau * tau_min_ratio
    grad_eps: float = 1e-4
    jitter: bool = True  # random per-ray sample offsets, so that training sees between the samples
    eikonal_weight: float = 0.01
    eikonal_points: int = 512  # random points per shape for the eikonal and symmetry terms
    # Priors on the unseen depth (see the README's results): each shape mirror-symmetric about the plane through
    # the origin that faces its training camera (exact for spheres, the view-aligned guess for ellipsoids), and
    # point-symmetric about the origin (exact for all three built-in families).
    mirror_weight: float = 0.0
    central_weight: float = 0.0
    fit_sphere_steps: int = 200
    init_radius: float = 0.45
    backend: str = "auto"
    encoder: Optional[str] = None  # "package.module:Class", called as Class(latent_dim=latent)
    eval_every: int = 50
    device: str = "auto"
    figures: bool = True


PRESETS = {
    # Finishes in minutes on a 2-core laptop CPU (measured: see the README).
    "quick": dict(epochs=300, rays=64, rays_per_step=1024, samples=32, hidden=128, eval_samples=64, eval_every=100,
                  mirror_weight=1.0, central_weight=1.0),
    # The original study: 50 shapes, 64x64, 64 samples per ray, hidden 256, latent 128, 300 epochs.
    "study": dict(epochs=300, rays=64, samples=64, hidden=256, eval_samples=64, eval_every=50),
}
# Fields that must match to resume a run from its checkpoint.
_RESUME_FIELDS = ("num_shapes", "data_seed", "dataset", "seed", "batch_size", "rays", "rays_per_step", "samples",
                  "hidden", "latent", "activation", "softplus_beta", "encoder", "lr", "tau_start", "tau_end",
                  "tau_min_ratio", "eikonal_weight", "eikonal_points", "mirror_weight", "central_weight", "jitter",
                  "grad_eps")


class TrainError(RuntimeError):
    """A problem with the run's inputs, reported as one line by the command-line tools."""


def preset_config(name: str, **overrides) -> Config:
    if name not in PRESETS:
        raise TrainError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = Config(preset=name, out=f"runs/{name}", **PRESETS[name])
    unknown = [k for k in overrides if k not in {f.name for f in dataclasses.fields(Config)}]
    if unknown:
        raise TrainError(f"unknown setting(s) {unknown}")
    return dataclasses.replace(cfg, **overrides)


# ----------------------------------------------------------------------------------------------- setup


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA, else MPS, else CPU) or a device name checked to exist here; a TrainError otherwise."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as err:
            raise TrainError(f"unknown device {name!r}: {err}") from None
        mps = getattr(torch.backends, "mps", None)
        if (device.type == "cuda" and not torch.cuda.is_available()) or (
                device.type == "mps" and not (mps is not None and mps.is_available())):
            raise TrainError(f"device {name!r} is not available here; use --device cpu (or auto)")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise TrainError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _dist_setup():
    """(rank, world, local_rank) from torchrun's environment; initialises the process group if world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world, local_rank


def build_encoder(cfg: Config, encoder=None) -> torch.nn.Module:
    """The default CNN, the module given, or ``cfg.encoder`` ("package.module:Class") imported and built."""
    if encoder is not None:
        return encoder
    if not cfg.encoder:
        return Encoder(latent_dim=cfg.latent, resolution=EVAL_RESOLUTION)
    if ":" not in cfg.encoder:
        raise TrainError(f"--encoder must be 'package.module:Class', got {cfg.encoder!r}")
    module_name, cls_name = cfg.encoder.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise TrainError(f"cannot import encoder {cfg.encoder!r}: {err}") from None
    try:
        return cls(latent_dim=cfg.latent)
    except TypeError as err:
        raise TrainError(f"encoder {cfg.encoder!r} must accept latent_dim={cfg.latent}: {err}") from None


def _check_encoder(encoder, images: torch.Tensor, latent: int) -> None:
    with torch.no_grad():
        z = encoder(images[:2])
    if not isinstance(z, torch.Tensor) or z.shape != (images[:2].shape[0], latent):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise TrainError(f"encoder must map images [B, 3, H, W] to latents [B, {latent}], returned {shape}")


def _load_data(cfg: Config) -> ShapeDataset:
    if cfg.dataset:
        try:
            return load_dataset(cfg.dataset)
        except (FileNotFoundError, ValueError) as err:
            raise TrainError(str(err)) from None
    return make_dataset(num_shapes=cfg.num_shapes, resolution=EVAL_RESOLUTION, seed=cfg.data_seed)


def _rays(ds: ShapeDataset, az, el, resolution: int, device):
    o, d = orbit_rays(az.reshape(-1), el.reshape(-1), ds.distance, ds.fov, resolution, resolution)
    near, far, valid = sphere_near_far(o, d)
    return tuple(t.to(device) for t in (o, d, near, far, valid))


def _training_targets(ds: ShapeDataset, resolution: int) -> torch.Tensor:
    if resolution == ds.resolution:
        return ds.silhouettes.reshape(len(ds), -1)
    return torch.stack([ds.exact_silhouettes(i, ds.azimuth[i], ds.elevation[i], resolution)[0]
                        for i in range(len(ds))]).reshape(len(ds), -1)


def tau_at(cfg: Config, epoch: int) -> float:
    """Geometric annealing from tau_start (epoch 0) to tau_end (last epoch)."""
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** frac


def lr_at(cfg: Config, epoch: int) -> float:
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.lr * (cfg.lr_decay + (1 - cfg.lr_decay) * 0.5 * (1 + math.cos(math.pi * frac)))


# ------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def predict_silhouettes(encoder, decoder, ds: ShapeDataset, indices, az, el, cfg: Config, device, batch_views=12):
    """Predicted silhouettes [len(indices), V, 64, 64] of shapes ``indices`` from angles az, el [len, V]."""
    encoder.eval()
    z_all = encoder(ds.images[list(indices)].to(device))
    encoder.train()
    V = az.shape[1]
    z = z_all.repeat_interleave(V, dim=0)
    rays = _rays(ds, az.reshape(-1), el.reshape(-1), EVAL_RESOLUTION, device)
    out = []
    for s in range(0, z.shape[0], batch_views):
        part = [t[s : s + batch_views] for t in rays]
        out.append(render(decoder, z[s : s + batch_views], *part, num_samples=cfg.eval_samples, tau=cfg.tau_end,
                          tau_min=cfg.tau_end * cfg.tau_min_ratio, backend=cfg.backend))
    return torch.cat(out).reshape(len(indices), V, EVAL_RESOLUTION, EVAL_RESOLUTION).cpu()


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


# ------------------------------------------------------------------------------------------- checkpoint


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def read_checkpoint(run_dir, device="cpu") -> dict:
    path = Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        raise TrainError(f"no checkpoint in {run_dir} (expected {path})")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainError(f"cannot read checkpoint {path}: truncated or not written by sdfsrn-train ({why})") from None


def load_run(run_dir, device="cpu", encoder: Optional[torch.nn.Module] = None):
    """(config, encoder, decoder, checkpoint) of a run directory, for evaluation. A run trained with an encoder
    passed in Python (not ``--encoder``) needs that encoder's module again here."""
    ckpt = read_checkpoint(run_dir, device)
    cfg = Config(**ckpt["config"])
    encoder = build_encoder(cfg, encoder)
    decoder = SDFDecoder(cfg.latent, cfg.hidden, cfg.activation, cfg.softplus_beta, geometric_init=False)
    try:
        encoder.load_state_dict(ckpt["encoder"])
    except RuntimeError:
        raise TrainError(f"the checkpoint's encoder does not fit {type(encoder).__name__}; a run trained with a "
                         "custom encoder needs it passed again (load_run(..., encoder=...))") from None
    decoder.load_state_dict(ckpt["decoder"])
    return cfg, encoder.to(device), decoder.to(device), ckpt


# ------------------------------------------------------------------------------------------------ train


def _allreduce_grads(params, world: int) -> None:
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def _batches(cfg: Config, n: int, epoch: int, rank: int, world: int):
    """This rank's index batches for an epoch: one permutation from (seed, epoch) shared by every rank; each
    global batch of batch_size shapes is split across ranks (wrapping around so that every rank takes as
    many steps)."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = max(cfg.batch_size // world, 1)
    global_batch = per_rank * world
    steps = math.ceil(n / global_batch)
    if world > 1:
        perm = perm.repeat(math.ceil(steps * global_batch / n))[: steps * global_batch]
    out = []
    for k in range(steps):
        chunk = perm[k * global_batch : (k + 1) * global_batch]
        out.append(chunk[rank * per_rank : (rank + 1) * per_rank])  # world 1: the whole chunk
    return out, g


def _step_rays(cfg: Config, rays, targets, idx, g: torch.Generator):
    """The rays (origins, directions, near, far, valid) and targets of shapes ``idx`` for one step: all of each
    image's rays, or ``cfg.rays_per_step`` of them drawn at random (fine pixels at the cost of coarse ones)."""
    rays, target = [t[idx] for t in rays], targets[idx]
    R = target.shape[1]
    if cfg.rays_per_step <= 0 or cfg.rays_per_step >= R:
        return rays, target
    pick = torch.rand(len(idx), R, generator=g).argsort(dim=1)[:, : cfg.rays_per_step].to(target.device)
    take = lambda t: t.gather(1, pick if t.dim() == 2 else pick[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
    return [take(t) for t in rays], take(target)


def _ball_points(batch: int, num_points: int, g: torch.Generator, device) -> torch.Tensor:
    """[batch, num_points, 3] points uniform in the unit ball."""
    p = torch.randn(batch, num_points, 3, generator=g)
    return (p / p.norm(dim=-1, keepdim=True) * torch.rand(batch, num_points, 1, generator=g) ** (1 / 3)).to(device)


def _eikonal(decoder, z, num_points: int, g: torch.Generator, device) -> torch.Tensor:
    p = _ball_points(z.shape[0], num_points, g, device).requires_grad_(True)
    (grad,) = torch.autograd.grad(decoder(z, p).sum(), p, create_graph=True)
    return ((grad.norm(dim=-1) - 1) ** 2).mean()


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


@dataclass
class TrainResult:
    summary: dict  # the last epoch's metrics, wall time (also in summary.json)
    encoder: torch.nn.Module
    decoder: SDFDecoder


def train(config: Config, encoder: Optional[torch.nn.Module] = None, resume: bool = False,
          progress: bool = True, overwrite: bool = False) -> TrainResult:
    """Trains encoder + decoder; returns the summary (also written to ``summary.json``) and the trained modules.

    Args:
        config: the run's settings.
        encoder: optional module mapping images [B, 3, 64, 64] to latents [B, config.latent]; replaces the
            default CNN (and ``config.encoder``). The decoder and renderer are unchanged.
        resume: continue the run in ``config.out`` from its checkpoint.
        progress: show a progress bar (rank 0).
        overwrite: start afresh even where ``config.out`` holds a run; without it, that is an error (so that a
            forgotten ``--resume`` never replaces a run's checkpoint).
    """
    cfg = config
    _check_config(cfg)
    rank, world, local_rank = _dist_setup()
    device = resolve_device(cfg.device, local_rank)
    out = Path(cfg.out)
    if not resume and not overwrite and (out / "checkpoint.pt").exists():
        raise TrainError(f"{out} already holds a run; continue it with --resume {out}, or start it over with "
                         "--overwrite (or choose another --out)")
    ds = _load_data(cfg)
    if len(ds) < world:
        raise TrainError(f"{len(ds)} shapes cannot be sharded over {world} processes")
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg, encoder).to(device)
    images = ds.images.to(device)
    _check_encoder(encoder, images, cfg.latent)
    decoder = SDFDecoder(cfg.latent, cfg.hidden, cfg.activation, cfg.softplus_beta, geometric_init=True,
                         init_radius=cfg.init_radius).to(device)
    params = list(encoder.parameters()) + list(decoder.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = _resume(cfg, out, encoder, decoder, opt, device, write=rank == 0)
    else:
        if cfg.fit_sphere_steps > 0:
            decoder.fit_sphere(radius=cfg.init_radius, steps=cfg.fit_sphere_steps, seed=cfg.seed)
            opt = torch.optim.Adam(params, lr=cfg.lr)  # fresh moments after the fit
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            (out / "metrics.jsonl").write_text("")
    if world > 1:  # identical start on every rank
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, 0)
    rays = _rays(ds, ds.azimuth, ds.elevation, cfg.rays, device)
    mirrors = view_mirrors(camera_frame(ds.azimuth, ds.elevation, ds.distance)[0]).to(device)
    point_reflection = -torch.eye(3, device=device)
    targets = _training_targets(ds, cfg.rays).to(device)

    bar = None
    if progress and rank == 0:
        try:
            from tqdm import tqdm

            bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="train", unit="epoch", dynamic_ncols=True)
        except ImportError:
            bar = None
    t_start = time.time()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            tau = tau_at(cfg, epoch)
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            batches, g = _batches(cfg, len(ds), epoch, rank, world)
            loss_sum, count = torch.zeros(4, dtype=torch.float64), 0
            for idx in batches:
                idx_d = idx.to(device)
                z = encoder(images[idx_d])
                batch_rays, target = _step_rays(cfg, rays, targets, idx_d, g)
                jitter = (torch.rand(target.shape, generator=g) - 0.5).to(device) if cfg.jitter else None
                sil = render(decoder, z, *batch_rays, num_samples=cfg.samples, tau=tau,
                             tau_min=tau * cfg.tau_min_ratio, grad_eps=cfg.grad_eps, jitter=jitter,
                             backend=cfg.backend)
                mse = ((sil - target) ** 2).mean()
                loss = mse
                eik, mirror, central = (torch.zeros((), device=device) for _ in range(3))
                if cfg.eikonal_weight > 0:
                    eik = _eikonal(decoder, z, cfg.eikonal_points, g, device)
                    loss = loss + cfg.eikonal_weight * eik
                if cfg.mirror_weight > 0 or cfg.central_weight > 0:
                    points = _ball_points(len(idx), cfg.eikonal_points, g, device)
                    mirror, central = symmetry_losses(decoder, z, points, [mirrors[idx_d], point_reflection])
                    loss = loss + cfg.mirror_weight * mirror + cfg.central_weight * central
                if not torch.isfinite(loss):
                    raise TrainError(f"loss became {loss.item()} at epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    _allreduce_grads(params, world)
                opt.step()
                terms = [mse.item(), eik.item(), mirror.item(), central.item()]
                loss_sum += torch.tensor(terms, dtype=torch.float64) * len(idx)
                count += len(idx)
            stats = torch.cat([loss_sum, torch.tensor([float(count)], dtype=torch.float64)])
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(stats)
            mean = (stats[:4] / stats[4]).tolist()
            row = {"epoch": epoch + 1, "train_mse": mean[0], "eikonal": mean[1], "mirror": mean[2], "central": mean[3],
                   "tau": tau, "lr": lr_at(cfg, epoch), "epoch_time": None}
            last = epoch + 1 == cfg.epochs
            if rank == 0 and (last or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)):
                row.update(evaluate_novel_views(encoder, decoder, ds, cfg, device))
            row["epoch_time"] = time.time() - t0
            history.append(row)
            if rank == 0:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                _save_atomic({"config": dataclasses.asdict(cfg), "epoch": epoch + 1, "encoder": encoder.state_dict(),
                              "decoder": decoder.state_dict(), "optimizer": opt.state_dict(), "history": history},
                             out / "checkpoint.pt")
            if bar is not None:
                post = {"mse": f"{row['train_mse']:.4f}", "tau": f"{tau:.3f}"}
                if "novel_iou" in row:
                    post["novel IoU"] = f"{row['novel_iou']:.3f}"
                bar.set_postfix(post)
                bar.update(1)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if rank == 0:
            done = history[-1]["epoch"] if history else start_epoch
            print(f"interrupted after epoch {done}; the checkpoint holds it: resume with "
                  f"sdfsrn-train --resume {out}", file=sys.stderr)
        raise
    if bar is not None:
        bar.close()
    summary = dict(history[-1]) if history else {}
    summary["wall_time_s"] = time.time() - t_start
    summary["epochs"] = cfg.epochs
    if rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if cfg.figures:
            from .figures import make_figures

            make_figures(out, encoder, decoder, ds, cfg, device, history)
        print(f"done: {cfg.epochs} epochs in {summary['wall_time_s'] / 60:.1f} min; train MSE "
              f"{summary.get('train_mse', float('nan')):.4f}; novel-view IoU {summary.get('novel_iou', float('nan')):.3f} "
              + " ".join(f"{f} {summary[f'novel_iou_{f}']:.3f}" for f in FAMILIES if f"novel_iou_{f}" in summary)
              + f"; run in {out}")
    return TrainResult(summary, encoder, decoder)


def _check_config(cfg: Config) -> None:
    from . import available_backends

    if cfg.backend != "auto" and cfg.backend not in available_backends():
        raise TrainError(f"unknown or unavailable backend {cfg.backend!r}; available: {available_backends()}")
    for name in ("rays_per_step", "eikonal_weight", "mirror_weight", "central_weight"):
        if not getattr(cfg, name) >= 0:
            raise TrainError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("epochs", "batch_size", "rays", "samples", "eval_samples", "hidden", "latent", "num_shapes"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("lr", "tau_start", "tau_end", "tau_min_ratio"):
        if not getattr(cfg, name) > 0:
            raise TrainError(f"{name} must be > 0, got {getattr(cfg, name)}")


def _resume(cfg: Config, out: Path, encoder, decoder, opt, device, write: bool = True):
    ckpt = read_checkpoint(out, device)
    saved_cfg = Config(**ckpt["config"])
    diff = [k for k in _RESUME_FIELDS if getattr(saved_cfg, k) != getattr(cfg, k)]
    if diff:
        raise TrainError(f"cannot resume {out}: its config differs in {', '.join(diff)} "
                         f"({', '.join(f'{k}={getattr(saved_cfg, k)!r}' for k in diff)})")
    try:
        encoder.load_state_dict(ckpt["encoder"])
    except RuntimeError:
        raise TrainError(f"cannot resume {out}: its encoder's weights do not fit {type(encoder).__name__}") from None
    decoder.load_state_dict(ckpt["decoder"])
    opt.load_state_dict(ckpt["optimizer"])
    if ckpt["epoch"] >= cfg.epochs:
        raise TrainError(f"{out} already finished {ckpt['epoch']} epochs; pass --epochs N with N larger to go on")
    if write:  # rank 0 only
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        # metrics.jsonl may hold epochs after the checkpoint (interrupted between the two writes): keep it in step
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ckpt["history"]))
    return ckpt["epoch"], list(ckpt["history"])


# -------------------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdfsrn-train", description="Train SDF-SRN on the built-in synthetic shapes "
                                "from one silhouette per shape; evaluate on 6 novel views.")
    p.add_argument("--preset", default=None, help=f"one of {sorted(PRESETS)} (default quick)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue the run in RUN_DIR")
    p.add_argument("--overwrite", action="store_true", help="start afresh in --out even if it holds a run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    for f in dataclasses.fields(Config):
        if f.name == "preset":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, default=None, type=lambda s: s.lower() in ("1", "true", "yes", "on"),
                           metavar="BOOL")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, default=None, type=kind, metavar=f.name.upper())
    return p


def config_from_args(args) -> tuple[Config, bool]:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if f.name != "preset" and getattr(args, f.name, None) is not None}
    if args.resume:
        cfg_path = Path(args.resume) / "config.json"
        if not cfg_path.is_file():
            raise TrainError(f"cannot resume: {cfg_path} not found")
        saved = json.loads(cfg_path.read_text())
        if args.preset and args.preset != saved.get("preset"):
            raise TrainError(f"cannot resume {args.resume}: it was trained with preset {saved.get('preset')!r}, "
                             f"not {args.preset!r}")
        known = {f.name for f in dataclasses.fields(Config)}
        cfg = Config(**{k: v for k, v in saved.items() if k in known})
        return dataclasses.replace(cfg, out=args.resume, **{k: v for k, v in overrides.items() if k != "out"}), True
    return preset_config(args.preset or "quick", **overrides), False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg, resume = config_from_args(args)
        train(cfg, resume=resume, progress=not args.no_progress, overwrite=args.overwrite)
    except TrainError as err:
        print(f"sdfsrn-train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
