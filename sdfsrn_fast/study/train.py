"""Training driver: learns encoder + decoder from one silhouette per shape and evaluates on novel views.

``sdfsrn-train --preset quick`` (or ``python -m sdfsrn_fast.study.train``) trains on the built-in synthetic shapes
with silhouette supervision only; ``--preset study`` is the original study's configuration. Every setting can be
overridden on the command line (``--help`` lists them) and the resolved configuration is saved with the run.
Runs under ``torchrun --nproc_per_node=N`` with shapes sharded across ranks (gloo on CPU, nccl on CUDA).
Python API: :func:`train` takes a :class:`Config` and optionally your own encoder module.

A run directory holds ``config.json``, ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (written
atomically after every epoch; ``--resume RUN_DIR`` continues exactly) and, at the end, ``summary.json`` and the
figures (see :mod:`sdfsrn_fast.study.figures`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .. import render
from ..cameras import camera_frame
from ..models import SDFDecoder
from .config import (RESUME_FIELDS, Config, PRESETS, TrainError, autocast_dtype, check_config, preset_config,
                     resolve_device, resolve_precision)
from .data import FAMILIES, ShapeDataset, shading, shading_error
from ..backends.compiled import CompiledOrEager
from .priors import ball_points, curvature_points, curvature_term, eikonal_term, field, symmetry_losses, view_mirrors
from .runs import build_encoder, check_encoder, load_data, read_checkpoint, save_atomic
from . import snapshots
from .frames import Framed, frames_of, light_and_mirrors_to_frame, to_frame
from .proxies import fit_proxy_frames
from .views import camera_rays, evaluate_novel_views

__all__ = ["Config", "PRESETS", "TrainError", "TrainResult", "train", "preset_config", "tau_at", "lr_at", "main"]


def tau_at(cfg: Config, epoch: int) -> float:
    """Geometric annealing from tau_start (epoch 0) to tau_end (last epoch)."""
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** frac


def lr_at(cfg: Config, epoch: int) -> float:
    frac = epoch / max(cfg.epochs - 1, 1)
    return cfg.lr * (cfg.lr_decay + (1 - cfg.lr_decay) * 0.5 * (1 + math.cos(math.pi * frac)))


# ----------------------------------------------------------------------------------------------- setup


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


def training_targets(ds: ShapeDataset, resolution: int) -> torch.Tensor:
    """Each shape's training silhouette at ``resolution`` x ``resolution``, flattened: [N, resolution**2]."""
    if resolution == ds.resolution:
        return ds.silhouettes.reshape(len(ds), -1)
    return torch.stack([ds.exact_silhouettes(i, ds.azimuth[i], ds.elevation[i], resolution)[0]
                        for i in range(len(ds))]).reshape(len(ds), -1)


PROXY_FILE = "proxy_frames.json"  # --proxy-frame: each training image's proxy, its loss and half-axes, the fit's time


@dataclass
class _Run:
    """A run in progress: settings, data on the device, the modules and the optimizer, and what was done so far."""

    cfg: Config
    out: Path
    rank: int
    world: int
    device: torch.device
    ds: ShapeDataset
    images: torch.Tensor
    rays: tuple  # (origins, directions, near, far, valid) of every shape's training view
    targets: torch.Tensor
    colors: Optional[torch.Tensor]  # [N, R, 3] the training images at the rays' pixels (shading runs only)
    interior: Optional[torch.Tensor]  # [N, R] bool: pixels shading_margin or more inside the true silhouette
    mirrors: torch.Tensor  # [N, 3, 3] reflections across the planes facing the training cameras
    amp_dtype: Optional[torch.dtype]  # mixed precision: the model runs under torch.autocast in this dtype
    encoder: torch.nn.Module
    decoder: SDFDecoder
    params: list
    opt: torch.optim.Optimizer
    start_epoch: int = 0
    history: list = dataclasses.field(default_factory=list)
    scaler: Optional[torch.amp.GradScaler] = None
    snaps: Optional[snapshots.Snapshots] = None  # prediction snapshots for the report page (rank 0)
    priors: object = None  # prior_terms, compiled where cfg.compile


def _setup(cfg: Config, encoder, resume: bool, overwrite: bool, progress: bool = False) -> _Run:
    """Checks the settings, builds data, modules and optimizer, and resumes or starts the run directory."""
    check_config(cfg)
    rank, world, local_rank = _dist_setup()
    device = resolve_device(cfg.device, local_rank)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))  # saved as resolved
    out = Path(cfg.out)
    if not resume and not overwrite and (out / "checkpoint.pt").exists():
        raise TrainError(f"{out} already holds a run; continue it with --resume {out}, or start it over with "
                         "--overwrite (or choose another --out)")
    ds = load_data(cfg)
    if len(ds) < world:
        raise TrainError(f"{len(ds)} shapes cannot be sharded over {world} processes")
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg, encoder).to(device)
    images = ds.images.to(device)
    check_encoder(encoder, images, cfg.latent)
    decoder = SDFDecoder(cfg.latent, cfg.hidden, cfg.activation, cfg.softplus_beta, geometric_init=True,
                         init_radius=cfg.init_radius).to(device)
    params = list(encoder.parameters()) + list(decoder.parameters())
    if cfg.shading_weight > 0 and cfg.rays != ds.resolution:
        raise TrainError(f"--shading-weight compares rays with the training images' pixels: --rays must be the "
                         f"images' resolution, {ds.resolution}, got {cfg.rays}")
    colors = ds.images.flatten(2).transpose(1, 2).to(device) if cfg.shading_weight > 0 else None
    targets = training_targets(ds, cfg.rays).to(device)
    interior = interior_pixels(targets, cfg.rays, cfg.shading_margin) if cfg.shading_weight > 0 else None
    run = _Run(cfg, out, rank, world, device, ds, images, camera_rays(ds, ds.azimuth, ds.elevation, cfg.rays, device),
               targets, colors, interior,
               view_mirrors(camera_frame(ds.azimuth, ds.elevation, ds.distance)[0]).to(device),
               autocast_dtype(cfg, device), encoder, decoder, params, _optimizer(cfg, encoder, decoder))
    run.scaler = torch.amp.GradScaler(device.type, enabled=run.amp_dtype == torch.float16)
    run.priors = CompiledOrEager(prior_terms, "the training's regularisers") if cfg.compile else prior_terms
    if resume:
        _resume(run)
    else:
        if cfg.fit_sphere_steps > 0:
            decoder.fit_sphere(radius=cfg.init_radius, steps=cfg.fit_sphere_steps, seed=cfg.seed)
            run.opt = _optimizer(cfg, encoder, decoder)  # fresh moments after the fit
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
            (out / "metrics.jsonl").write_text("")
        if cfg.proxy_frame:
            _fit_proxy_frames(run, progress)
    if rank == 0 and cfg.snapshot_every > 0:
        path = out / snapshots.FILE
        run.snaps = snapshots.load(path, run.start_epoch) if resume and path.is_file() else snapshots.plan(ds)
    if world > 1:  # identical start on every rank
        import torch.distributed as dist

        for p in params:
            dist.broadcast(p.data, 0)
    return run


def _fit_proxy_frames(run: _Run, progress: bool) -> None:
    """``--proxy-frame``: each training image's frame from its fitted proxy, set in the encoder (every rank fits
    alike), and what was fitted in ``proxy_frames.json``."""
    t0 = time.time()
    fit = fit_proxy_frames(run.ds, seed=run.cfg.seed, progress=progress and run.rank == 0)
    run.encoder.set_frames(run.images, fit.frames.to(run.device))
    if run.rank == 0:
        images = [dict(shape=i, proxy=p, loss=round(l, 6), half_axes=[round(h, 4) for h in half])
                  for i, (p, l, half) in enumerate(zip(fit.proxy, fit.loss.tolist(), fit.half_axes.tolist()))]
        (run.out / PROXY_FILE).write_text(json.dumps(dict(fit_time_s=round(time.time() - t0, 1), images=images),
                                                     indent=1))


def _optimizer(cfg: Config, encoder, decoder) -> torch.optim.Optimizer:
    """Adam over encoder and decoder; a learned frame's network in a group of its own, its learning rate
    ``cfg.frame_lr_scale`` times the schedule's (each group's ``scale``)."""
    frame = list(encoder.frame_net.parameters()) if isinstance(encoder, Framed) else []
    ids = {id(p) for p in frame}
    rest = [p for p in list(encoder.parameters()) + list(decoder.parameters()) if id(p) not in ids]
    groups = [dict(params=rest, scale=1.0)] + ([dict(params=frame, scale=cfg.frame_lr_scale)] if frame else [])
    return torch.optim.Adam([dict(g, lr=cfg.lr * g["scale"]) for g in groups], lr=cfg.lr)


def _resume(run: _Run) -> None:
    cfg, out = run.cfg, run.out
    ckpt = read_checkpoint(out, run.device)
    saved_cfg = Config(**ckpt["config"])
    diff = [k for k in RESUME_FIELDS if getattr(saved_cfg, k) != getattr(cfg, k)]
    if diff:
        raise TrainError(f"cannot resume {out}: its config differs in {', '.join(diff)} "
                         f"({', '.join(f'{k}={getattr(saved_cfg, k)!r}' for k in diff)})")
    try:
        run.encoder.load_state_dict(ckpt["encoder"])
    except RuntimeError:
        raise TrainError(f"cannot resume {out}: its encoder's weights do not fit "
                         f"{type(run.encoder).__name__}") from None
    run.decoder.load_state_dict(ckpt["decoder"])
    run.opt.load_state_dict(ckpt["optimizer"])
    if ckpt["epoch"] >= cfg.epochs:
        raise TrainError(f"{out} already finished {ckpt['epoch']} epochs; pass --epochs N with N larger to go on")
    if run.rank == 0:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
        # metrics.jsonl may hold epochs after the checkpoint (interrupted between the two writes): keep it in step
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ckpt["history"]))
    run.start_epoch, run.history = ckpt["epoch"], list(ckpt["history"])


# ------------------------------------------------------------------------------------------- one epoch

# The loss terms of a step, as the metrics rows name them (each row holds their means over the epoch's shapes).
TERMS = ("train_mse", "eikonal", "mirror", "central", "axes", "shading", "curvature")


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


def interior_pixels(targets: torch.Tensor, resolution: int, margin: int) -> torch.Tensor:
    """[N, R] bool: the pixels of the silhouettes ``targets`` [N, R] whose (2 margin + 1)-pixel square lies inside."""
    sil = (targets > 0.5).float().reshape(-1, 1, resolution, resolution)
    if margin > 0:
        sil = -torch.nn.functional.max_pool2d(-sil, 2 * margin + 1, stride=1, padding=margin)
    return sil.reshape(targets.shape) > 0.5


def _step_rays(cfg: Config, rays, targets, idx, g: torch.Generator, extras=()):
    """The rays (origins, directions, near, far, valid), targets and per-ray ``extras`` ([N, R] or [N, R, C]
    tensors, or None) of shapes ``idx`` for one step: all of each image's rays, or ``cfg.rays_per_step`` of them
    drawn at random (fine pixels at the cost of coarse ones)."""
    rays, target = [t[idx] for t in rays], targets[idx]
    extras = [None if t is None else t[idx] for t in extras]
    R = target.shape[1]
    if cfg.rays_per_step <= 0 or cfg.rays_per_step >= R:
        return rays, target, extras
    pick = torch.rand(len(idx), R, generator=g).argsort(dim=1)[:, : cfg.rays_per_step].to(target.device)
    take = lambda t: t.gather(1, pick if t.dim() == 2 else pick[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
    return [take(t) for t in rays], take(target), [None if t is None else take(t) for t in extras]


def shading_loss(out, target: torch.Tensor, colors: torch.Tensor, lights: torch.Tensor, ambient: float,
                 diffuse: float, interior: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The shading cue: the predicted surface (``out``, :class:`~sdfsrn_fast.RenderOutput` [B, n]) shaded with the
    training images' light ``lights`` [B, 3] and shading model, times a per-image albedo, against the images'
    colours [B, n, 3], on the rays that both the prediction and the true silhouette ``target`` [B, n] cover: the
    squared error summed over RGB, averaged over those rays. The albedo [B, 3] is the least-squares fit of the
    image to the predicted shading on those rays, without gradient (estimated from the image, never read from the
    dataset). ``interior`` [B, n] bool: the rays the loss may use (default all inside the true silhouette)."""
    mask = out.hit & (target > 0.5 if interior is None else interior)
    err = shading_error(shading(out.normal, mask, lights[:, None, :], ambient, diffuse), colors)  # [B, n]
    return torch.where(mask, err, 0).sum() / mask.sum().clamp_min(1)


def _step(run: _Run, idx: torch.Tensor, g: torch.Generator, epoch: int, tau: float) -> list:
    """One optimisation step on shapes ``idx``; returns the loss terms (``TERMS``).
    With a mixed precision the encoder, the renderer and the regularisers run under ``torch.autocast``."""
    with torch.autocast(run.device.type, dtype=run.amp_dtype or torch.bfloat16, enabled=run.amp_dtype is not None):
        terms, loss = _losses(run, idx, g, tau, run.cfg.shading_weight > 0 and epoch >= run.cfg.shading_from)
    if not torch.isfinite(loss):
        raise TrainError(f"loss became {loss.item()} at epoch {epoch}")
    run.opt.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()  # float16: scaled against underflow; otherwise a no-op
    if run.world > 1:
        _allreduce_grads(run.params, run.world)
    run.scaler.step(run.opt)
    run.scaler.update()
    return [t.item() for t in terms]


def _losses(run: _Run, idx: torch.Tensor, g: torch.Generator, tau: float, shade: bool = False):
    """The loss terms (``TERMS``) of one step and their weighted sum; ``shade``: with
    the shading term (the render then gives the surface too)."""
    cfg, device, decoder = run.cfg, run.device, run.decoder
    idx_d = idx.to(device)
    images = run.images[idx_d]
    z, frame = run.encoder(images), frames_of(run.encoder, images)
    batch_rays, target, (colors, interior) = _step_rays(cfg, run.rays, run.targets, idx_d, g,
                                                          (run.colors, run.interior))
    batch_rays = to_frame(batch_rays, frame)  # each shape in its own frame (--learned-frame), light and mirrors too
    lights, mirrors = light_and_mirrors_to_frame(run.ds.lights.to(device)[idx_d], run.mirrors[idx_d], frame)
    jitter = (torch.rand(target.shape, generator=g) - 0.5).to(device) if cfg.jitter else None
    out = render(decoder, z, *batch_rays, num_samples=cfg.samples, tau=tau, tau_min=tau * cfg.tau_min_ratio,
                 grad_eps=cfg.grad_eps, jitter=jitter, backend=cfg.backend, surface=shade)
    sil = out.silhouette if shade else out
    mse = ((sil - target) ** 2).mean()
    loss, terms = mse, {"train_mse": mse}
    if shade:
        terms["shading"] = shading_loss(out, target, colors, lights, run.ds.ambient, run.ds.diffuse, interior)
        loss = loss + cfg.shading_weight * terms["shading"]
    points, maps = prior_points(cfg, mirrors, g, device)
    priors = run.priors(decoder, z, points, maps, cfg.eikonal_weight > 0, curvature_pairs(cfg))
    for name, value in priors.items():
        loss = loss + getattr(cfg, f"{name}_weight") * value
    terms.update(priors)
    zero = torch.zeros((), device=device)
    return [terms.get(name, zero) for name in TERMS], loss  # a term off logs 0


# The reflections across the three coordinate planes, [3, 3, 3]: the axes prior's maps.
AXIS_MIRRORS = torch.diag_embed(1 - 2 * torch.eye(3))


def prior_points(cfg: Config, mirrors: torch.Tensor, g: torch.Generator, device):
    """The random points of one step's regularisers (only those with a weight above 0: a prior off costs no decoder
    call) for :func:`prior_terms`, and the symmetry maps of the priors on, by name (``mirrors``: the shapes' view
    mirrors). The curvature term pairs the eikonal term's points with partners, so one gradient serves both."""
    B, P = mirrors.shape[0], cfg.eikonal_points
    maps = {"mirror": mirrors, "central": -torch.eye(3, device=device), "axes": AXIS_MIRRORS.to(device)}
    maps = {k: m for k, m in maps.items() if getattr(cfg, f"{k}_weight") > 0}
    points = {}
    if cfg.eikonal_weight > 0 or cfg.curvature_weight > 0:
        points["ball"] = ball_points(B, P, g, device)
    if maps:
        points["symmetry"] = ball_points(B, P, g, device)
    pairs = curvature_pairs(cfg)
    if pairs:
        points["ball"] = curvature_points(points["ball"], g, pairs=pairs)  # [B, P + K, 3]
    return points, maps


def curvature_pairs(cfg: Config) -> int:
    """How many of each shape's eikonal points the curvature term pairs with partners (0: the term is off)."""
    return min(cfg.curvature_points, cfg.eikonal_points) if cfg.curvature_weight > 0 else 0


def prior_terms(decoder, z, points: dict, maps: dict, eikonal_on: bool, pairs: int = 0) -> dict:
    """The regularisers' unweighted values by name (eikonal, mirror, central, axes, curvature) at the points of
    :func:`prior_points` (the curvature term on if ``pairs`` > 0: the last that many ball points are
    partners). Tensor code only (the xyz gradients written out, no double backward), so that training runs it as
    one ``torch.compile`` graph (``Config.compile``)."""
    terms = {}
    if "ball" in points:
        f, grad = field(decoder, z, points["ball"])
        if eikonal_on:
            terms["eikonal"] = eikonal_term(grad[:, : grad.shape[1] - pairs])
        if pairs:
            terms["curvature"] = curvature_term(f, grad, pairs=pairs)
    if maps:  # "axes" is three maps [3, 3, 3], its term their mean; the others one map each
        groups = {name: (m.unbind(0) if name == "axes" else (m,)) for name, m in maps.items()}
        losses = iter(symmetry_losses(decoder, z, points["symmetry"], [m for g in groups.values() for m in g]))
        terms.update({name: sum(next(losses) for _ in g) / len(g) for name, g in groups.items()})
    return terms


def _train_epoch(run: _Run, epoch: int) -> dict:
    """Every step of one epoch; returns the epoch's metrics row (mean loss terms over all ranks' shapes)."""
    cfg = run.cfg
    tau = tau_at(cfg, epoch)
    for group in run.opt.param_groups:
        group["lr"] = lr_at(cfg, epoch) * group.get("scale", 1.0)
    batches, g = _batches(cfg, len(run.ds), epoch, run.rank, run.world)
    loss_sum, count = torch.zeros(len(TERMS), dtype=torch.float64), 0
    for idx in batches:
        loss_sum += torch.tensor(_step(run, idx, g, epoch, tau), dtype=torch.float64) * len(idx)
        count += len(idx)
    stats = torch.cat([loss_sum, torch.tensor([float(count)], dtype=torch.float64)])
    if run.world > 1:
        import torch.distributed as dist

        dist.all_reduce(stats)
    mean = (stats[:-1] / stats[-1]).tolist()
    return {"epoch": epoch + 1, **dict(zip(TERMS, mean)), "tau": tau, "lr": lr_at(cfg, epoch), "epoch_time": None}


# -------------------------------------------------------------------------- evaluation and checkpoints


def _evaluation_due(cfg: Config, epoch: int) -> bool:
    """The last epoch always, and every ``eval_every`` epochs."""
    return epoch + 1 == cfg.epochs or (cfg.eval_every > 0 and (epoch + 1) % cfg.eval_every == 0)


def _save(run: _Run, row: dict) -> None:
    """Appends the epoch's row to metrics.jsonl and writes the checkpoint (rank 0)."""
    run.history.append(row)
    if run.rank != 0:
        return
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    save_atomic({"config": dataclasses.asdict(run.cfg), "epoch": row["epoch"], "encoder": run.encoder.state_dict(),
                 "decoder": run.decoder.state_dict(), "optimizer": run.opt.state_dict(), "history": run.history},
                run.out / "checkpoint.pt")


def _finish(run: _Run, wall_time: float) -> dict:
    """summary.json, the figures and the closing line (rank 0); returns the summary."""
    cfg, out = run.cfg, run.out
    summary = dict(run.history[-1]) if run.history else {}
    summary["wall_time_s"] = wall_time
    if (out / PROXY_FILE).is_file():  # before the epochs, not in their wall time
        summary["proxy_fit_time_s"] = json.loads((out / PROXY_FILE).read_text())["fit_time_s"]
    summary["epochs"] = cfg.epochs
    if run.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        if cfg.figures:
            from .figures import make_figures
            from .report import write_report

            make_figures(out, run.encoder, run.decoder, run.ds, cfg, run.device, run.history)
            write_report(out)
        nan = float("nan")
        print(f"done: {cfg.epochs} epochs in {wall_time / 60:.1f} min; train MSE "
              f"{summary.get('train_mse', nan):.4f}; novel-view IoU {summary.get('novel_iou', nan):.3f} "
              + " ".join(f"{f} {summary[f'novel_iou_{f}']:.3f}" for f in FAMILIES if f"novel_iou_{f}" in summary)
              + f"; run in {out}")
    return summary


def _progress_bar(run: _Run, progress: bool):
    if not progress or run.rank != 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=run.cfg.epochs, initial=run.start_epoch, desc="train", unit="epoch", dynamic_ncols=True)


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
    run = _setup(config, encoder, resume, overwrite, progress)
    cfg = run.cfg
    bar = _progress_bar(run, progress)
    t_start = time.time()
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            t0 = time.time()
            row = _train_epoch(run, epoch)
            if run.rank == 0 and _evaluation_due(cfg, epoch):
                row.update(evaluate_novel_views(run.encoder, run.decoder, run.ds, cfg, run.device))
            if run.snaps is not None and snapshots.due(cfg, epoch):
                t_snap = time.time()
                snapshots.take(run.encoder, run.decoder, run.ds, run.snaps, cfg, run.device, epoch + 1,
                               run.out / snapshots.FILE)
                row["snapshot_time"] = time.time() - t_snap
            row["epoch_time"] = time.time() - t0
            _save(run, row)
            if bar is not None:
                post = {"mse": f"{row['train_mse']:.4f}", "tau": f"{row['tau']:.3f}"}
                if "novel_iou" in row:
                    post["novel IoU"] = f"{row['novel_iou']:.3f}"
                bar.set_postfix(post)
                bar.update(1)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if run.rank == 0:
            done = run.history[-1]["epoch"] if run.history else run.start_epoch
            print(f"interrupted after epoch {done}; the checkpoint holds it: resume with "
                  f"sdfsrn-train --resume {run.out}", file=sys.stderr)
        raise
    if bar is not None:
        bar.close()
    return TrainResult(_finish(run, time.time() - t_start), run.encoder, run.decoder)


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
