"""A canonical frame per shape: a rotation R [3, 3] (columns: the frame's axes in world coordinates), and the decoder
sees each shape in its own frame: the rays turned into it (``o R``, ``d R``; rows are points), the light too. The
decoder's xyz enters through one first-layer matrix shared by all shapes, so boxes turned every which way are hard to
fit; with each shape's true frame the shading preset reached novel-view IoU 0.924 against 0.861-0.867
(docs/results.md, the decoder's frame).

Two sources of the frame:
- ``--proxy-frame`` (:class:`ProxyFramed`): fitted once to each training image, a box or an ellipsoid proxy
  (:mod:`.proxies`), then fixed;
- ``--learned-frame`` (:class:`Framed`): a second small CNN predicts it from the image, learning through the rays'
  gradients (the compiled backend and the reference give them). It starts at the identity (its last layer's weights
  zero), so a run begins as one without it; it did not find the shapes' axes (docs/results.md, a learned frame).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from ..models import Encoder

__all__ = ["rotation_6d", "Framed", "ProxyFramed", "frames_of", "image_keys", "to_frame", "normals_to_world",
           "light_and_mirrors_to_frame"]

IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def rotation_6d(x: torch.Tensor) -> torch.Tensor:
    """Rotations [B, 3, 3] from 6 numbers each [B, 6] by Gram-Schmidt (Zhou et al. 2019, continuous in its input):
    the first column along x[:, :3], the second along what of x[:, 3:] is orthogonal to it, the third their cross
    product."""
    a, b = x[:, :3], x[:, 3:]
    e1 = F.normalize(a, dim=-1)
    e2 = F.normalize(b - (e1 * b).sum(-1, keepdim=True) * e1, dim=-1)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2)], dim=-1)


class Framed(nn.Module):
    """An image encoder together with the frame network: ``framed(images)`` is the encoder's latent, as before;
    ``framed.frames(images)`` the rotations [B, 3, 3]. The frame network is the study's CNN with 6 outputs,
    starting at the identity."""

    def __init__(self, encoder: nn.Module, resolution: int = 64):
        super().__init__()
        self.encoder = encoder
        self.frame_net = Encoder(latent_dim=6, resolution=resolution)
        with torch.no_grad():
            self.frame_net.fc2.weight.zero_()
            self.frame_net.fc2.bias.copy_(torch.tensor(IDENTITY_6D))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def frames(self, images: torch.Tensor) -> torch.Tensor:
        return rotation_6d(self.frame_net(images).float())


def image_keys(images: torch.Tensor) -> torch.Tensor:
    """One float64 number per image [B, C, H, W] (its pixels weighted by a fixed ramp), by which
    :class:`ProxyFramed` finds an image again."""
    ramp = torch.linspace(0.5, 1.5, images[0].numel(), dtype=torch.float64, device=images.device)
    return images.flatten(1).double() @ ramp


class ProxyFramed(nn.Module):
    """An image encoder together with a fixed frame per known image (``--proxy-frame``: fitted to each training image
    by :func:`~.proxies.fit_proxy_frames`): ``framed(images)`` is the encoder's latent; ``framed.frames(images)``
    looks each image up among those given to :meth:`set_frames` (an image it was not given is an error: its frame
    needs its camera and light too, so fit it and add it). The frames are buffers, kept in the checkpoint, and get
    no gradient."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("table", torch.zeros(0, 3, 3))
        self.register_buffer("keys", torch.zeros(0, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def set_frames(self, images: torch.Tensor, frames: torch.Tensor) -> None:
        """Frames [N, 3, 3] of ``images`` [N, C, H, W], replacing those held."""
        if frames.shape != (images.shape[0], 3, 3):
            raise ValueError(f"frames must be [{images.shape[0]}, 3, 3] for {images.shape[0]} images, got "
                             f"{tuple(frames.shape)}")
        self.keys = image_keys(images).to(self.keys.device)
        self.table = frames.detach().float().to(self.table.device)

    def frames(self, images: torch.Tensor) -> torch.Tensor:
        keys = image_keys(images)
        if len(self.keys) == 0:
            raise ValueError("ProxyFramed holds no frames yet: give them with set_frames(images, frames)")
        gap, idx = (keys[:, None] - self.keys[None]).abs().min(1)
        unknown = gap > 1e-6 * keys.abs().clamp_min(1)
        if unknown.any():
            raise ValueError(f"no frame for image(s) {unknown.nonzero()[:, 0].tolist()} of this batch: ProxyFramed "
                             f"knows only the {len(self.keys)} images given to set_frames")
        return self.table[idx]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("table", "keys"):  # a checkpoint's frames, however many images it holds
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def frames_of(encoder: nn.Module, images: torch.Tensor) -> Optional[torch.Tensor]:
    """The rotations [B, 3, 3] of a :class:`Framed` or :class:`ProxyFramed` encoder for ``images``, or None for a plain
    encoder."""
    return encoder.frames(images) if isinstance(encoder, (Framed, ProxyFramed)) else None


def to_frame(rays, frame: Optional[torch.Tensor]):
    """(origins, directions, near, far, valid) [B, R, ...] turned into each shape's frame [B, 3, 3] (None: unchanged).
    A rotation about the origin moves no ray's entry into or exit from the bounding sphere: near, far and valid
    stay."""
    if frame is None:
        return rays
    o, d, *rest = rays
    with torch.autocast(o.device.type, enabled=False):  # the rays keep their dtype under autocast
        return (o @ frame.to(o.dtype), d @ frame.to(d.dtype), *rest)


def light_and_mirrors_to_frame(lights: torch.Tensor, mirrors: torch.Tensor, frame: Optional[torch.Tensor]):
    """Light directions [B, 3] and view mirrors [B, 3, 3] in each shape's frame (``l R``, ``R^T M R``), in their
    dtype also under autocast (None: unchanged)."""
    if frame is None:
        return lights, mirrors
    with torch.autocast(lights.device.type, enabled=False):
        frame = frame.to(lights.dtype)
        return (lights[:, None] @ frame)[:, 0], frame.transpose(1, 2) @ mirrors @ frame


def normals_to_world(normal: torch.Tensor, frame: Optional[torch.Tensor]) -> torch.Tensor:
    """Normals [B, R, 3] in each shape's frame back in world coordinates (``n R^T``)."""
    if frame is None:
        return normal
    with torch.autocast(normal.device.type, enabled=False):
        return normal @ frame.to(normal.dtype).transpose(-1, -2)
