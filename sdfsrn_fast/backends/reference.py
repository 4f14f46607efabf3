"""The reference renderer: the render contract (docs/contract.md) in a few lines of plain PyTorch.

Autograd runs through everything, any float dtype (float64 included) works, and the decoder may be an
``SDFDecoder`` or any callable ``(z[B, L], points[B, N, 3]) -> sdf[B, N]``. It is the yardstick every fast
backend is tested against, not a fast path: it evaluates every sample of every ray (invalid rays included,
masked afterwards) and keeps all of the decoder's activations for backward, so its memory grows with
B x R x S x hidden.
"""

from __future__ import annotations

import torch

__all__ = ["sample_points", "soft_silhouette", "render_reference", "render"]


def sample_points(origins, directions, near, far, num_samples: int, jitter=None) -> torch.Tensor:
    """Midpoint samples ``p_k = o + t_k d``, ``t_k = near + (k + 0.5 [+ jitter]) (far - near) / S``.

    Args:
        origins, directions: [B, R, 3]. near, far: [B, R]. jitter: optional [B, R] in [-0.5, 0.5).

    Returns:
        points [B, R, S, 3].
    """
    k = torch.arange(num_samples, dtype=near.dtype, device=near.device) + 0.5
    k = k if jitter is None else k + jitter[..., None]
    t = near[..., None] + k * ((far - near) / num_samples)[..., None]
    return origins[..., None, :] + t[..., None] * directions[..., None, :]


def soft_silhouette(sdf: torch.Tensor, valid: torch.Tensor, tau: float, tau_min: float) -> torch.Tensor:
    """``sigmoid(-m / tau)`` with ``m = -tau_min * logsumexp_k(-sdf_k / tau_min)``; 0 on invalid rays.

    Args:
        sdf: [B, R, S] signed distances along each ray. valid: [B, R] bool.
    """
    m = -tau_min * torch.logsumexp(-sdf / tau_min, dim=-1)
    return torch.where(valid, torch.sigmoid(-m / tau), torch.zeros_like(m))


def render_reference(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, jitter=None):
    """Soft silhouettes [B, R]; arguments as in :func:`sdfsrn_fast.render` (already checked there)."""
    B, R, _ = origins.shape
    points = sample_points(origins, directions, near, far, num_samples, jitter)
    sdf = decoder(z, points.reshape(B, R * num_samples, 3)).reshape(B, R, num_samples)
    # under torch.autocast the decoder's matmuls (and so its output) are in the autocast dtype; the SDF values, the
    # soft minimum and the silhouette are in the rays' dtype (docs/contract.md, Precision)
    return soft_silhouette(sdf.to(origins.dtype), valid, tau, tau_min)


def render(decoder, call) -> torch.Tensor:
    """The backend's entry (:class:`~._ops.RenderCall`); under autocast the decoder's layers take its dtype by
    themselves."""
    return render_reference(decoder, call.z, call.origins, call.directions, call.near, call.far, call.valid,
                            call.num_samples, call.tau, call.tau_min, call.jitter)


def unavailable():
    return None


def unsupported(decoder, call):
    return None
