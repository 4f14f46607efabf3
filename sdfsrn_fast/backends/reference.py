"""The reference renderer: the render contract (docs/contract.md) in a few lines of plain PyTorch.

Autograd runs through everything, any float dtype (float64 included) works, and the decoder may be an
``SDFDecoder`` or any callable ``(z[B, L], points[B, N, 3]) -> sdf[B, N]``. It is the yardstick every fast
backend is tested against, not a fast path: it evaluates every sample of every ray (invalid rays included,
masked afterwards) and keeps all of the decoder's activations for backward, so its memory grows with
B x R x S x hidden.
"""

from __future__ import annotations

import torch

__all__ = ["sample_points", "soft_silhouette", "first_crossing", "render_reference", "render"]


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


@torch.no_grad()
def first_crossing(sdf, near, far, valid, num_samples: int, jitter=None):
    """Where each ray first enters the surface, from its samples (docs/contract.md, Surface): the first sample k
    with ``s_k < 0``, then one secant step between samples k-1 and k (``t_0`` itself for k = 0).

    Args:
        sdf: [..., S] the samples' SDF values. near, far, valid, jitter (optional): [...].

    Returns:
        ``(t0 [...], hit [...] bool)``; t0 is 0 where there is no hit (no negative sample, or an invalid ray).
    """
    neg = sdf < 0
    hit = neg.any(-1) & valid
    k = neg.to(torch.uint8).argmax(-1)  # the first negative sample (0 where there is none)
    s1 = sdf.gather(-1, k[..., None])[..., 0]
    s0 = sdf.gather(-1, (k - 1).clamp_min(0)[..., None])[..., 0]
    step = (far - near) / num_samples
    k1, k0 = k.to(near.dtype) + 0.5, (k - 1).to(near.dtype) + 0.5  # as sample_points: index + 0.5 + jitter
    if jitter is not None:
        k1, k0 = k1 + jitter, k0 + jitter
    t1, t_prev = near + k1 * step, near + k0 * step
    t0 = torch.where(k == 0, t1, t_prev + s0 * (t1 - t_prev) / torch.where(k == 0, 1, s0 - s1))
    return torch.where(hit, t0, 0), hit


def render_reference(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, jitter=None,
                     surface: bool = False):
    """Soft silhouettes [B, R]; arguments as in :func:`sdfsrn_fast.render` (already checked there). With
    ``surface``: ``(sil, t0, hit)``, the crossing of :func:`first_crossing` from the same samples."""
    B, R, _ = origins.shape
    points = sample_points(origins, directions, near, far, num_samples, jitter)
    sdf = decoder(z, points.reshape(B, R * num_samples, 3)).reshape(B, R, num_samples)
    # under torch.autocast the decoder's matmuls (and so its output) are in the autocast dtype; the SDF values, the
    # soft minimum and the silhouette are in the rays' dtype (docs/contract.md, Precision)
    sdf = sdf.to(origins.dtype)
    sil = soft_silhouette(sdf, valid, tau, tau_min)
    if not surface:
        return sil
    return (sil, *first_crossing(sdf.detach(), near, far, valid, num_samples, jitter))


def render(decoder, call):
    """The backend's entry (:class:`~._ops.RenderCall`): ``(sil, t0, hit)``, t0 and hit None without
    ``call.surface``; under autocast the decoder's layers take its dtype by themselves."""
    out = render_reference(decoder, call.z, call.origins, call.directions, call.near, call.far, call.valid,
                           call.num_samples, call.tau, call.tau_min, call.jitter, call.surface)
    return out if call.surface else (out, None, None)


def unavailable():
    return None


def unsupported(decoder, call):
    return None
