"""The public ``render()``: checks its arguments once, then hands them to a backend chosen per call.

Backends register here in order of preference for ``backend="auto"``. Each says whether it can run in this
process at all (``available``) and whether it can take this call (``supports``: device, dtype, decoder kind).
Nothing is imported or compiled at import time; a backend loads its heavy parts on first use.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .backends import compiled, triton_version
from .backends.reference import render_reference
from .models import SDFDecoder

__all__ = ["render", "available_backends"]


@dataclass(frozen=True)
class _Backend:
    name: str
    run: Callable[..., torch.Tensor]
    # None when the backend can run in this process, else the reason it cannot.
    unavailable: Callable[[], Optional[str]]
    # None when the backend can take this call (decoder, dict of the tensor arguments), else the reason it cannot.
    unsupported: Callable[[object, dict], Optional[str]]
    # device types on which backend="auto" may pick it (None: any it supports)
    auto_devices: Optional[tuple] = None
    # called before the backend takes a call: None when ready (it may build an extension first), else why not;
    # by name its error is raised, for "auto" the next backend is tried
    prepare: Optional[Callable[[bool], Optional[str]]] = None
    # None when backend="auto" should pick it for this call (it can take it), else why another backend is better
    auto_unsuited: Optional[Callable[[object, dict], Optional[str]]] = None


def _run_reference(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter,
                   compute_dtype):
    # under autocast the decoder's layers run in the autocast dtype by themselves
    return render_reference(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, jitter)


# The triton backend's checks import nothing: triton loads when a call runs on it.
TRITON_MAX_WIDTH = 256  # hidden and latent widths its kernels take


def _triton_unavailable() -> Optional[str]:
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "it needs a CUDA GPU (or TRITON_INTERPRET=1 to run its kernels on the CPU, slowly, for tests)"
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    return None


def _triton_unsupported(decoder, args) -> Optional[str]:
    if not isinstance(decoder, SDFDecoder):
        return "it renders SDFDecoder only, not a generic callable"
    if max(decoder.hidden_dim, decoder.latent_dim) > TRITON_MAX_WIDTH:
        return (f"hidden and latent widths up to {TRITON_MAX_WIDTH}, got {decoder.hidden_dim} and "
                f"{decoder.latent_dim}")
    device = args["z"].device
    if device.type != "cuda" and not (device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1"):
        return f"its tensors must be on a CUDA device, got {device}"
    # its dots run on the tensor cores (IEEE float64 dots spill: docs); exact float32 is a bfloat16 screen refined
    # in float32 (backends/triton.py, `screens`)
    if device.type == "cuda" and args["origins"].dtype == torch.float64:
        return "float64 is the compiled backend's on CUDA"
    if device.type == "cuda" and triton_version() < (3, 9):  # (the device's capability only where it matters)
        reason = _triton_toolchain_unsupported(torch.cuda.get_device_capability(device), triton_version(),
                                               decoder.hidden_dim)
        if reason is not None:
            return reason
    return compiled.unsupported(decoder, args)  # the same rule for ray gradients


def _triton_toolchain_unsupported(capability: tuple, version: tuple, hidden: int) -> Optional[str]:
    """Triton before 3.9 compiles the forward kernel for sm_100-class GPUs (B200, B300: tcgen05) at hidden widths
    above 64 to nothing but a trap (``python -m sdfsrn_fast.bench --gpu-compile --archs 100`` under triton 3.6:
    4 registers, ``BPT.TRAP``; 3.9 compiles it to tcgen05 dots; neither run on such a GPU)."""
    if 10 <= capability[0] < 12 and version < (3, 9) and hidden > 64:
        return (f"triton {'.'.join(map(str, version))} compiles its forward kernel for "
                f"sm_{capability[0]}{capability[1]} at hidden width {hidden} to a trap; it needs triton >= 3.9")
    return None


def _triton_auto_unsuited(decoder, args) -> Optional[str]:
    """Under ``auto``, float32 without autocast goes to the triton backend only as tf32 at hidden widths up to 128.
    tf32 above 128: on an NVIDIA H200 the study shape's forward+backward took 12.71 ms against the compiled backend's
    10.68 ms (2026-11-28); at H = 256 its kernels spill 752-1064 B on sm_90 (``python -m sdfsrn_fast.bench
    --gpu-compile``, docs/performance.md). Exact float32 (a bfloat16 screen, refined in float32, and the compiled
    backend's backward run eagerly): not yet timed on a GPU."""
    if args["origins"].dtype != torch.float32 or _autocast_dtype(args["z"].device) is not None:
        return None
    if torch.get_float32_matmul_precision() == "highest":
        return "exact float32: the triton backend's bfloat16 screen and refinement are not yet timed on a GPU"
    if decoder.hidden_dim > 128:
        return "tf32 at hidden width > 128: the compiled backend's cuBLAS tf32 is faster"
    return None


def _run_triton(*args):
    from .backends.triton import render_triton

    return render_triton(*args)


_CPP_READY = [False]  # set once the extension has loaded (in an eager call): what torch.compile may use


def _cpp_unavailable() -> Optional[str]:
    if torch.compiler.is_compiling():  # no file-system probes while tracing
        return None if _CPP_READY[0] else "its extension is built on first use outside torch.compile"
    from .backends import cpp

    return cpp.unavailable()


def _cpp_unsupported(decoder, args) -> Optional[str]:
    if not isinstance(decoder, SDFDecoder):
        return "it renders SDFDecoder only, not a generic callable"
    if args["z"].device.type != "cpu":
        return f"its tensors must be on the CPU, got {args['z'].device}"
    if args["origins"].dtype not in (torch.float32, torch.float64):
        return f"float32 or float64 rays, got {args['origins'].dtype}"
    return compiled.unsupported(decoder, args)  # the same rule for ray gradients


def _cpp_prepare(by_name: bool) -> Optional[str]:
    """Builds or loads the extension on first use (its error raised when asked for by name; for "auto", which tries
    the next backend, a warning once); under torch.compile only an extension already loaded is used."""
    if _CPP_READY[0]:
        return None
    if torch.compiler.is_compiling():
        return "its extension is not built yet (call render once outside torch.compile to build it)"
    from .backends import cpp

    if by_name:
        cpp.load()
    elif cpp.try_load() is not None:
        return cpp.BUILD["error"]
    _CPP_READY[0] = True
    return None


def _run_cpp(*args):
    from .backends.cpp import render_cpp

    return render_cpp(*args)


_BACKENDS: dict[str, _Backend] = {
    "triton": _Backend("triton", _run_triton, _triton_unavailable, _triton_unsupported, auto_devices=("cuda",),
                       auto_unsuited=_triton_auto_unsuited),
    "compiled": _Backend("compiled", compiled.render_compiled, lambda: None, compiled.unsupported),
    # after compiled: slower than it at the study shape in training (docs/performance.md), so by name only for now
    "cpp": _Backend("cpp", _run_cpp, _cpp_unavailable, _cpp_unsupported, prepare=_cpp_prepare),
    "reference": _Backend("reference", _run_reference, lambda: None, lambda decoder, args: None),
}


def available_backends() -> list[str]:
    """Names of the backends that can run in this process, in the order ``backend="auto"`` tries them."""
    return [name for name, b in _BACKENDS.items() if b.unavailable() is None]


def _pick_backend(name: str, decoder, args: dict) -> _Backend:
    if name == "auto":
        device = args["z"].device.type
        for b in _BACKENDS.values():
            if b.auto_devices is not None and device not in b.auto_devices:
                continue
            if b.unavailable() is None and b.unsupported(decoder, args) is None:
                if b.auto_unsuited is not None and b.auto_unsuited(decoder, args) is not None:
                    continue
                if b.prepare is None or b.prepare(False) is None:
                    return b
        raise RuntimeError("render: no backend can take this call")  # unreachable: reference takes all
    if name not in _BACKENDS:
        raise ValueError(f"render: unknown `backend` {name!r}; choose 'auto' or one of {list(_BACKENDS)}")
    b = _BACKENDS[name]
    reason = b.unavailable() or b.unsupported(decoder, args) or (b.prepare(True) if b.prepare else None)
    if reason is not None:
        raise RuntimeError(f"render: backend {name!r} cannot run this call: {reason}")
    return b


def _check_inputs(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter):
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


def _as_tensor(value) -> torch.Tensor:
    """A temperature as the 0-d float64 tensor the custom ops take (on the CPU unless given elsewhere)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


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
) -> torch.Tensor:
    """Soft silhouettes of SDFs along rays (``shared/SPEC.md``).

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

    Precision: outside autocast every backend computes in the rays' dtype, exact to its round-off. Inside
    ``torch.autocast(device_type, dtype=torch.bfloat16)`` (or float16) with float32 rays and decoder, the decoder's
    matmuls take that dtype's operands, forward and backward; the per-sample SDF, the soft minimum, the
    silhouettes and the gradients handed back stay float32, and ``z`` may come in the autocast dtype.

    Returns:
        silhouettes [B, R] in [0, 1], in the rays' dtype, on their device.
    """
    checked = _check_inputs(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps,
                            jitter)
    compute_dtype = _autocast_dtype(z.device) if origins.dtype == torch.float32 else None
    z = z.to(origins.dtype)  # a copy if z came in autocast's dtype; autograd carries the gradient back
    args = dict(z=z, origins=origins, directions=directions, near=near, far=far, jitter=jitter)
    b = _pick_backend(backend, decoder, args)
    try:
        if b.name == "reference":
            sil = b.run(decoder, z, origins, directions, near, far, valid, num_samples, tau, tau_min, grad_eps, jitter,
                        compute_dtype)
        else:
            sil = b.run(decoder, z, origins, directions, near, far, valid, num_samples, _as_tensor(tau),
                        _as_tensor(tau_min), float(grad_eps), jitter, compute_dtype)
    finally:
        # on CUDA the value checks are read once the render is queued (see _value_checks); where the backend raised,
        # a bad value, if there is one, says more than the error it caused there
        checked()
    return sil
