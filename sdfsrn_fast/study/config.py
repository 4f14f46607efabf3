"""A training run's settings: :class:`Config`, the presets, and the checks that make bad settings one clear line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from ..models import ACTIVATIONS

__all__ = ["Config", "PRESETS", "PRECISIONS", "RESUME_FIELDS", "TrainError", "preset_config", "check_config",
           "resolve_device", "autocast_dtype", "resolve_precision", "native_bfloat16", "supervision"]


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
    # Priors on the unseen depth (see docs/results.md): each shape mirror-symmetric about the plane through
    # the origin that faces its training camera (exact for spheres, the view-aligned guess for ellipsoids), and
    # point-symmetric about the origin (exact for all three built-in families).
    mirror_weight: float = 0.0
    central_weight: float = 0.0
    # Each shape mirror-symmetric about its frame's three coordinate planes (true of the three built-in families in
    # their own frames; central symmetry is the three reflections composed). With --proxy-frame the frames lie along
    # the shapes' axes (the shading preset); with --learned-frame it is a pull towards a consistent frame.
    axes_weight: float = 0.0
    # The shading cue (docs/results.md): the predicted surface shaded with the dataset's light and shading model,
    # against the training image on the pixels both silhouettes cover, from epoch shading_from on (0: silhouette
    # supervision only, the study's own).
    shading_weight: float = 0.0
    shading_from: int = 0
    shading_margin: int = 0  # pixels next to the true contour (within this many) left out of the shading loss
    # How fast the normals turn near the surface (priors.curvature): against the lens-shaped and extruded shapes that
    # one view, its shading and central symmetry allow (docs/results.md, the shading track).
    curvature_weight: float = 0.0
    curvature_points: int = 512  # of the eikonal points per shape, how many the curvature term pairs with partners
    # A canonical frame per shape, predicted from its image by a second CNN (frames.py): the rays and the light turned
    # into it before the decoder sees them; learned through the rays' gradients (docs/results.md, the decoder's frame).
    learned_frame: bool = False
    frame_lr_scale: float = 1.0  # the frame network's learning rate, as a multiple of lr
    # A frame per shape fitted once to its training image instead: a box or an ellipsoid proxy (the built-in families'
    # forms) fitted to its silhouette and shading, the better one's axes (proxies.py; kept in the checkpoint).
    proxy_frame: bool = False
    fit_sphere_steps: int = 200
    init_radius: float = 0.45
    backend: str = "auto"
    # The regularisers (eikonal, symmetry, curvature) as one torch.compile graph (20-50 s to compile). Training steps
    # on a 2-core CPU: smoothrelu 552 -> 426 ms, softplus 949 -> 919, ReLU 509 -> 567 (docs/performance.md).
    compile: bool = False
    # "32", or mixed: "bf16" (any device), "16" (float16; CUDA and MPS); "auto": bf16 on CPUs with native bfloat16
    # matmuls (AVX512-BF16 or AMX), else 32. A run saves the precision it resolved to.
    precision: str = "32"
    encoder: Optional[str] = None  # "package.module:Class", called as Class(latent_dim=latent)
    eval_every: int = 50
    snapshot_every: int = 25  # epochs between prediction snapshots for the report page (0: none)
    device: str = "auto"
    figures: bool = True


PRESETS = {
    # Finishes in minutes on a 2-core laptop CPU (measured: see the README).
    # precision "auto": bfloat16 on CPUs with native bfloat16 matmuls, where it trained as well as float32 in less
    # time (docs/results.md, Mixed precision).
    "quick": dict(epochs=300, rays=64, rays_per_step=1024, samples=32, hidden=128, eval_samples=64, eval_every=100,
                  mirror_weight=1.0, central_weight=1.0, precision="auto"),
    # The original study: 50 shapes, 64x64, 64 samples per ray, hidden 256, latent 128, 300 epochs.
    "study": dict(epochs=300, rays=64, samples=64, hidden=256, eval_samples=64, eval_every=50),
    # Silhouette + shading, one view: the quick preset with the shading loss after a silhouette-only start, a smooth
    # decoder (smoothrelu: smooth normals at nearly ReLU's cost; ReLU's normals are piecewise constant), each shape
    # seen in the frame of a box or ellipsoid proxy fitted to its image and held symmetric about that frame's three
    # planes (instead of the mirror prior, which contradicts shading), the curvature prior against the lens-shaped
    # and extruded shapes that one view allows, on 128 pairs a shape; the shading compared 2 pixels or more inside
    # the true contour, where a silhouette off by a pixel would mix background into it; the regularisers compiled
    # (docs/results.md, the shading track).
    "shading": dict(epochs=300, rays=64, rays_per_step=1024, samples=32, hidden=128, eval_samples=64, eval_every=100,
                    mirror_weight=0.0, axes_weight=10.0, precision="auto", activation="smoothrelu",
                    softplus_beta=100.0, shading_weight=1.0, shading_from=50, shading_margin=2,
                    curvature_weight=1.0, curvature_points=128, compile=True, proxy_frame=True),
}
# Fields that must match to resume a run from its checkpoint.
RESUME_FIELDS = ("num_shapes", "data_seed", "dataset", "seed", "batch_size", "rays", "rays_per_step", "samples",
                 "hidden", "latent", "activation", "softplus_beta", "encoder", "lr", "tau_start", "tau_end",
                 "tau_min_ratio", "eikonal_weight", "eikonal_points", "mirror_weight", "central_weight", "axes_weight",
                 "jitter", "grad_eps", "shading_weight", "shading_from", "shading_margin", "curvature_weight",
                 "curvature_points", "learned_frame", "frame_lr_scale", "proxy_frame")


def supervision(shading_weight: float, proxy_frame: bool = False) -> str:
    """How a run is supervised, as its page, figures and the README label it (the proxies' frames too: they know
    the built-in families' forms)."""
    label = "silhouette + shading, one view" if shading_weight > 0 else "silhouette only, one view"
    return label + "; box / ellipsoid proxy frames" if proxy_frame else label


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


PRECISIONS = {"32": None, "bf16": torch.bfloat16, "16": torch.float16, "auto": None}


def native_bfloat16(device: torch.device) -> bool:
    """Whether this device multiplies bfloat16 natively: a CPU with AVX512-BF16 or AMX tiles (CUDA and MPS: not
    measured here, so no)."""
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` made concrete for this device; the others checked against it."""
    if precision == "auto":
        return "bf16" if native_bfloat16(device) else "32"
    if precision == "16" and device.type not in ("cuda", "mps"):
        raise TrainError(f"--precision 16 (float16) is for CUDA and MPS; on {device.type} use bf16")
    return precision


def autocast_dtype(cfg: Config, device: torch.device):
    """The dtype training runs the model in under ``torch.autocast`` (None: float32, no autocast)."""
    return PRECISIONS[resolve_precision(cfg.precision, device)]


def check_config(cfg: Config) -> None:
    from .. import available_backends

    if cfg.activation not in ACTIVATIONS:
        raise TrainError(f"unknown activation {cfg.activation!r}; choose one of {list(ACTIVATIONS)}")
    if cfg.precision not in PRECISIONS:
        raise TrainError(f"unknown precision {cfg.precision!r}; choose one of {list(PRECISIONS)}")
    if cfg.learned_frame and cfg.proxy_frame:
        raise TrainError("--learned-frame and --proxy-frame are two sources of one frame: choose one")
    if cfg.learned_frame and cfg.backend in ("cpp", "triton"):
        raise TrainError(f"--learned-frame learns through the rays' gradients, which backend {cfg.backend!r} does not "
                         "give; use --backend auto, compiled or reference")
    if cfg.backend != "auto" and cfg.backend not in available_backends():
        raise TrainError(f"unknown or unavailable backend {cfg.backend!r}; available: {available_backends()}")
    for name in ("rays_per_step", "eikonal_weight", "mirror_weight", "central_weight", "axes_weight", "shading_weight",
                 "shading_from", "shading_margin", "curvature_weight"):
        if not getattr(cfg, name) >= 0:
            raise TrainError(f"{name} must be >= 0, got {getattr(cfg, name)}")
    for name in ("epochs", "batch_size", "rays", "samples", "eval_samples", "hidden", "latent", "num_shapes",
                 "eikonal_points", "curvature_points"):
        if getattr(cfg, name) < 1:
            raise TrainError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("lr", "tau_start", "tau_end", "tau_min_ratio", "frame_lr_scale"):
        if not getattr(cfg, name) > 0:
            raise TrainError(f"{name} must be > 0, got {getattr(cfg, name)}")


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
