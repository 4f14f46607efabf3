"""The public ``render()``: checks its arguments once, describes the call (:class:`~.backends._ops.RenderCall`) and
hands it to a backend chosen per call.

Backends are listed here in order of preference for ``backend="auto"``; each module answers for itself whether it
can run in this process (``unavailable``), whether it can take this call (``unsupported``), whether ``auto``
should leave the call to another (``auto_unsuited``) and what it must build first (``prepare``): the dispatcher
asks, it does not know. Nothing is imported or compiled at import time; a backend loads its heavy parts on first
use.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from ._surface import RenderOutput, surface as surface_pass
from .backends import compiled, cpp, reference, triton
from .backends._ops import RenderCall, decoder_weights
from .models import SDFDecoder

__all__ = ["render", "available_backends"]

# backend="auto" tries them in this order, on the devices given (None: any the backend supports)
_BACKENDS = {"triton": triton, "cpp": cpp, "compiled": compiled, "reference": reference}
_AUTO = (("triton", ("cuda",)), ("cpp", ("cpu",)), ("compiled", None), ("reference", None))


def available_backends() -> list[str]:
    """Names of the backends that can run in this process, in the order ``auto`` tries them."""
    return [name for name, b in _BACKENDS.items() if b.unavailable() is None]


def _why_not(b, decoder, call: RenderCall, auto: bool) -> Optional[str]:
    """None when backend module ``b`` takes the call (for ``auto``: and is suited to it), once it has prepared
    (built) what it needs; else the reason."""
    reason = b.unavailable() or b.unsupported(decoder, call)
    if reason is None and auto and hasattr(b, "auto_unsuited"):
        reason = b.auto_unsuited(decoder, call)
    if reason is None and hasattr(b, "prepare"):
        try:
            b.prepare()
        except RuntimeError as err:
            reason = str(err)
    return reason


def _pick_backend(name: str, decoder, call: RenderCall):
    """The backend module that takes the call: by name (a clear error where it cannot), or ``auto``'s first choice
    that takes it (a failed build falls through to the next)."""
    if name == "auto":
        for candidate, devices in _AUTO:
            if devices is None or call.z.device.type in devices:
                if _why_not(_BACKENDS[candidate], decoder, call, auto=True) is None:
                    return _BACKENDS[candidate]
        raise RuntimeError("render: no backend can take this call")  # unreachable: reference takes all
    if name not in _BACKENDS:
        raise ValueError(f"render: unknown `backend` {name!r}; choose 'auto' or one of {list(_BACKENDS)}")
    reason = _why_not(_BACKENDS[name], decoder, call, auto=False)
    if reason is not None:
        raise RuntimeError(f"render: backend {name!r} cannot run this call: {reason}")
    return _BACKENDS[name]


def _check_inputs(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter,
                  surface=False):
    """Raises a clear error for a bad argument; returns the function that finishes the value checks (NaN, inf, jitter's
    range: :func:`_value_checks`), to be called once the backend has been handed the work."""
    if not callable(decoder):
        raise TypeError(f"render: `decoder` must be an SDFDecoder or a callable (z, points) -> sdf, got {decoder!r}")
    tensors = {"z": z, "origins": origins, "directions": directions, "near": near, "far": far, "valid": valid}
    if jitter is not None:
        tensors["jitter"] = jitter
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"render: `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if z.dim() != 2:
        raise ValueError(f"render: `z` must be [B, L], got shape {tuple(z.shape)}")
    B = z.shape[0]
    if B == 0:
        raise ValueError("render: empty batch: `z` has batch size 0")
    if origins.dim() != 3 or origins.shape[0] != B or origins.shape[2] != 3:
        raise ValueError(f"render: `origins` must be [B={B}, R, 3] (B from `z`), got {tuple(origins.shape)}")
    R = origins.shape[1]
    if R == 0:
        raise ValueError("render: `origins` has no rays (R = 0)")
    if directions.shape != origins.shape:
        raise ValueError(f"render: `directions` must be {tuple(origins.shape)} like `origins`, "
                         f"got {tuple(directions.shape)}")
    for name in ("near", "far", "valid") + (("jitter",) if jitter is not None else ()):
        if tensors[name].shape != (B, R):
            raise ValueError(f"render: `{name}` must be [B, R] = [{B}, {R}], got {tuple(tensors[name].shape)}")
    if valid.dtype != torch.bool:
        raise TypeError(f"render: `valid` must be a bool tensor, got {valid.dtype}")
    if not z.is_floating_point():
        raise TypeError(f"render: `z` must be a floating-point tensor, got {z.dtype}")
    dtype = origins.dtype  # the rays' dtype is the computation's; z may be in autocast's lower one
    for name in ("directions", "near", "far") + (("jitter",) if jitter is not None else ()):
        if tensors[name].dtype != dtype:
            raise TypeError(f"render: `{name}` is {tensors[name].dtype} but `origins` is {dtype}; use one dtype")
    if z.dtype != dtype and not (z.dtype == _autocast_dtype(z.device) and dtype == torch.float32):
        raise TypeError(f"render: `z` is {z.dtype} but the rays are {dtype}; use one dtype (or autocast's lower "
                        "dtype for z, with float32 rays)")
    for name, t in tensors.items():
        if t.device != z.device:
            raise ValueError(f"render: `{name}` is on {t.device} but `z` is on {z.device}; use one device")
    if isinstance(decoder, SDFDecoder):
        p = decoder.layers[0].weight
        if p.device != z.device or p.dtype != dtype:
            raise ValueError(f"render: `decoder` weights are {p.dtype} on {p.device} but the rays are {dtype} on "
                             f"{origins.device}")
        if z.shape[1] != decoder.latent_dim:
            raise ValueError(f"render: `z` has {z.shape[1]} features but `decoder.latent_dim` is {decoder.latent_dim}")
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"render: `num_samples` must be an int >= 1, got {num_samples!r}")
    for name, value in (("tau", tau), ("tau_min", tau_min)):
        if isinstance(value, torch.Tensor):
            if value.dim() != 0 or not value.is_floating_point():
                raise ValueError(f"render: `{name}` must be a number or a 0-d float tensor, got {value.dtype} "
                                 f"of shape {tuple(value.shape)}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"render: `{name}` must be a number or a 0-d float tensor, got {value!r}")
    if not isinstance(grad_eps, (int, float)) or not 0 <= grad_eps < 1:
        raise ValueError(f"render: `grad_eps` must be in [0, 1), got {grad_eps!r}")
    if not isinstance(surface, bool):
        raise TypeError(f"render: `surface` must be True or False, got {surface!r}")
    if torch.compiler.is_compiling():
        return _no_value_checks  # the checks below read tensor values: eager calls only
    for name, value in (("tau", tau), ("tau_min", tau_min)):
        v = float(value)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"render: `{name}` must be a positive finite number, got {v!r}")
    return _value_checks(tensors, jitter)


def _no_value_checks() -> None:
    pass


def _value_checks(tensors: dict, jitter) -> Callable[[], None]:
    """Starts the checks of the tensors' values and returns the function that raises where one fails.

    Every check is one flag of one tensor, read once (one wait for the device instead of one a check; the rays in one
    pass, which of them is bad looked up only when one is). On the CPU the flags are read here and the function
    returned does nothing. On CUDA they are copied to (pinned) host memory without waiting, and the function returned,
    called once the backend has queued its work, waits for that copy only: the GPU goes on from the checks to the
    render without an idle gap while the host reads them (where reading them here would leave it idle while the host
    prepares the launches, every call)."""
    ray_names = ("origins", "directions", "near", "far")
    z = tensors["z"]
    bad = [torch.isnan(z).any(), ~torch.isfinite(torch.cat([tensors[n].reshape(-1) for n in ray_names])).all()]
    if jitter is not None:
        bad.append(((jitter < -0.5) | (jitter >= 0.5)).any())
    flags = torch.stack(bad)

    def raise_bad(bad: list) -> None:
        if bad[0]:
            raise ValueError("render: `z` contains NaN")
        if bad[1]:
            name = next(n for n in ray_names if not torch.isfinite(tensors[n]).all())
            raise ValueError(f"render: `{name}` contains NaN or inf")
        if jitter is not None and bad[2]:
            raise ValueError("render: `jitter` must lie in [-0.5, 0.5)")

    if flags.device.type != "cuda":
        raise_bad(flags.tolist())
        return _no_value_checks
    host = flags.to("cpu", non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(flags.device))  # the copy's stream (flags' device, not the current one)

    def finish() -> None:
        copied.synchronize()
        raise_bad(host.tolist())

    return finish


def _autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The dtype of the autocast region the call is in (for ``device``'s type), or None outside autocast."""
    if device.type in ("cpu", "cuda", "mps") and torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def render(
    decoder,
    z: torch.Tensor,
    origins: torch.Tensor,
    directions: torch.Tensor,
    near: torch.Tensor,
    far: torch.Tensor,
    valid: torch.Tensor,
    num_samples: int = 64,
    tau: float | torch.Tensor = 0.01,
    tau_min: float | torch.Tensor = 0.005,
    grad_eps: float = 1e-4,
    jitter: Optional[torch.Tensor] = None,
    backend: str = "auto",
    surface: bool = False,
):
    """Soft silhouettes of SDFs along rays (the contract: docs/contract.md).

    Equivalent PyTorch::

        t = near[..., None] + (torch.arange(S) + 0.5) * ((far - near) / S)[..., None]      # [B, R, S]
        sdf = decoder(z, (origins[..., None, :] + t[..., None] * directions[..., None, :]).flatten(1, 2))
        m = -tau_min * torch.logsumexp(-sdf.view(B, R, S) / tau_min, dim=-1)
        sil = torch.where(valid, torch.sigmoid(-m / tau), 0)

    Args:
        decoder: an :class:`SDFDecoder` (every backend) or any callable ``(z[B, L], points[B, N, 3]) -> [B, N]``.
        z: latents [B, L].
        origins, directions: rays [B, R, 3] (see :func:`sdfsrn_fast.cameras.orbit_rays`).
        near, far, valid: [B, R] from :func:`sdfsrn_fast.cameras.sphere_near_far`; invalid rays render 0.
        num_samples: S, samples per ray (midpoints of S equal intervals of [near, far]).
        tau: silhouette temperature. tau_min: soft-minimum temperature. Numbers or 0-d tensors; inside
            ``torch.compile`` pass a temperature that changes between calls (annealing) as a 0-d tensor: a Python
            float is a constant of the compiled graph, and each new value recompiles it.
        grad_eps: fast backends may drop samples with soft-min weight below it in backward; 0 is exact.
            The reference is always exact.
        jitter: optional per-ray sample offset [B, R] in [-0.5, 0.5) of one interval.
        backend: ``"auto"`` or a name from :func:`available_backends`.
        surface: also find the surface: where each ray first crosses it in the same march (the first negative
            sample, refined by one secant step), its depth (differentiable by implicit differentiation) and the
            unit normal there (differentiable through the depth and directly), from one decoder evaluation with its
            xyz gradient per hit ray, in the rays' dtype (float32 under autocast too).

    Precision: outside autocast every backend computes in the rays' dtype, exact to its round-off. Inside
    ``torch.autocast(device_type, dtype=torch.bfloat16)`` (or float16) with float32 rays and decoder, the decoder's
    matmuls take that dtype's operands, forward and backward; the per-sample SDF, the soft minimum, the
    silhouettes and the gradients handed back stay float32, and ``z`` may come in the autocast dtype.

    Returns:
        silhouettes [B, R] in [0, 1], in the rays' dtype, on their device; with ``surface=True`` a
        :class:`RenderOutput` ``(silhouette, depth [B, R], normal [B, R, 3], hit [B, R] bool)``, depth and normal 0
        where hit is False::

            out = render(decoder, z, *rays, surface=True)
            out.depth, out.normal, out.hit
    """
    checked = _check_inputs(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps,
                            jitter, surface)
    compute_dtype = _autocast_dtype(z.device) if origins.dtype == torch.float32 else None
    weights, activation, beta = (), "relu", 100.0
    if isinstance(decoder, SDFDecoder):
        weights, activation, beta = decoder_weights(decoder), decoder.activation, decoder.softplus_beta
    # z in the rays' dtype: a copy if it came in autocast's dtype; autograd carries the gradient back
    call = RenderCall(z.to(origins.dtype), origins, directions, near, far, valid, jitter, weights, num_samples, tau,
                      tau_min, float(grad_eps), activation, beta, compute_dtype, surface)
    b = _pick_backend(backend, decoder, call)
    try:
        sil, t0, hit = b.render(decoder, call)
        if surface:
            depth, normal = surface_pass(decoder, call, t0, hit)
    finally:
        # on CUDA the value checks are read once the render is queued (see _value_checks); where the backend raised,
        # a bad value, if there is one, says more than the error it caused there
        checked()
    return RenderOutput(sil, depth, normal, hit) if surface else sil
