"""A run directory on disk: its dataset, its encoder, atomic checkpoints, and loading a finished run back."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Optional

import torch

from ..models import Encoder, SDFDecoder
from .config import Config, TrainError
from .data import ShapeDataset, load_dataset, make_dataset
from .frames import Framed, ProxyFramed
from .views import EVAL_RESOLUTION

__all__ = ["load_data", "build_encoder", "check_encoder", "save_atomic", "read_checkpoint", "load_run"]


def load_data(cfg: Config) -> ShapeDataset:
    """The run's dataset: ``cfg.dataset`` read from disk, or the built-in shapes made in code."""
    if cfg.dataset:
        try:
            return load_dataset(cfg.dataset)
        except (FileNotFoundError, ValueError) as err:
            raise TrainError(str(err)) from None
    return make_dataset(num_shapes=cfg.num_shapes, resolution=EVAL_RESOLUTION, seed=cfg.data_seed)


def build_encoder(cfg: Config, encoder=None) -> torch.nn.Module:
    """The default CNN, the module given, or ``cfg.encoder`` ("package.module:Class") imported and built; with
    ``cfg.learned_frame`` joined by the frame network (:class:`~.frames.Framed`), with ``cfg.proxy_frame`` by a
    table of fitted frames (:class:`~.frames.ProxyFramed`, empty until set or loaded)."""
    encoder = _image_encoder(cfg, encoder)
    if isinstance(encoder, (Framed, ProxyFramed)):
        return encoder
    if cfg.learned_frame:
        return Framed(encoder, EVAL_RESOLUTION)
    return ProxyFramed(encoder) if cfg.proxy_frame else encoder


def _image_encoder(cfg: Config, encoder=None) -> torch.nn.Module:
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


def check_encoder(encoder, images: torch.Tensor, latent: int) -> None:
    with torch.no_grad():
        z = encoder(images[:2])
    if not isinstance(z, torch.Tensor) or z.shape != (images[:2].shape[0], latent):
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise TrainError(f"encoder must map images [B, 3, H, W] to latents [B, {latent}], returned {shape}")


def save_atomic(obj, path: Path) -> None:
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
