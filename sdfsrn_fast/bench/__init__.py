"""Benchmarks of ``render``: named shapes, the backends to compare, FLOP counts, and peak memory measured in a
fresh subprocess. ``python -m sdfsrn_fast.bench`` prints one table from one run (and writes its JSON);
``pytest benchmarks --benchmark-only`` runs the same cases under pytest-benchmark; :mod:`.triton_tools` holds the
triton backend's tools (compilation without a GPU, host-call counts).

Timings on a shared or small machine are noisy: compare backends as ratios within one run. Peak memory is the
growth of the resident set (CPU: VmHWM after resetting it, minus VmRSS before the timed rounds, in a process
that ran nothing else; CUDA: ``torch.cuda.max_memory_allocated``), measured after one warm-up call, so that
compilation is not counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import torch

from ..backends._instrument import Recorder, recording, tuning

__all__ = ["SHAPES", "BACKENDS", "PRECISIONS", "make_case", "make_step", "measure", "rates", "mlp_flops", "gemm_size",
           "gemm_gflops", "measure_subprocess", "recording", "tuning"]


@dataclass(frozen=True)
class Shape:
    batch: int
    resolution: int
    samples: int
    hidden: int
    latent: int


SHAPES = {
    "tiny": Shape(1, 16, 16, 64, 32),
    "study": Shape(4, 64, 64, 256, 128),  # the original study's configuration
    "large": Shape(8, 128, 128, 256, 128),  # fast backends only
}
BASELINES = ("reference", "reference_compiled")  # torch.compile(reference): the peer a user would try first
BACKENDS = BASELINES + ("compiled",)
# "surface": forward+backward with surface=True and a loss on silhouettes, depth and normals (the cost of the
# surface outputs against "forward_backward", the same backend in the same run)
MODES = ("forward", "forward_backward", "surface")
# "32": float32; "bf16": the same call inside torch.autocast(dtype=torch.bfloat16) (docs/contract.md, Precision);
# "tf32": float32 with torch.set_float32_matmul_precision("high") (CUDA's tensor cores; the triton backend's float32)
PRECISIONS = {"32": torch.float32, "bf16": torch.bfloat16, "tf32": torch.float32}


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def mlp_flops(hidden: int, latent: int, dense: bool) -> int:
    """Forward FLOPs of the decoder at one point. ``dense``: the latent goes through layers 1 and 3 at every
    point (the reference); otherwise its share ``W_z z`` is computed once per shape (the fast backends)."""
    x = latent + 3 if dense else 3
    return 2 * (x * hidden + hidden * hidden + (hidden + x) * hidden + hidden * hidden + hidden)


def make_case(shape: str, device=None, seed: int = 0, activation: str = "relu") -> dict:
    """Decoder (with ``activation``), latents, rays and a target silhouette for a named shape. The decoder has a
    surface (geometric init: a sphere of radius 0.5), as in training; a random decoder's flat SDF would hide the
    sparse backward."""
    from .. import SDFDecoder
    from ..cameras import orbit_rays, sphere_near_far

    s = SHAPES[shape]
    device = torch.device(device) if device is not None else default_device()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    decoder = SDFDecoder(latent_dim=s.latent, hidden_dim=s.hidden, activation=activation).to(device)
    az = torch.rand(s.batch, generator=g) * 2 * math.pi
    el = (torch.rand(s.batch, generator=g) - 0.3) * 1.0
    o, d = orbit_rays(az, el, 2.5, math.radians(50), s.resolution, s.resolution)
    near, far, valid = sphere_near_far(o, d)
    target = ((torch.linalg.cross(o, d, dim=-1).norm(dim=-1) < 0.4) & valid).float()
    z = (0.1 * torch.randn(s.batch, s.latent, generator=g)).requires_grad_(True)
    to = lambda t: t.to(device)  # noqa: E731
    return dict(shape=s, decoder=decoder, z=to(z.detach()).requires_grad_(True),
                rays=tuple(map(to, (o, d, near, far, valid))), target=to(target), device=device)


_REFERENCE_COMPILED = None


def _reference_compiled():
    global _REFERENCE_COMPILED
    if _REFERENCE_COMPILED is None:
        from ..backends.reference import render_reference

        _REFERENCE_COMPILED = torch.compile(render_reference)
    return _REFERENCE_COMPILED


def make_step(backend: str, case: dict, mode: str, precision: str = "32"):
    """A no-argument callable running one forward (no grad), one forward+backward, or one forward+backward with the
    surface outputs (``mode="surface"``) of ``backend``, in float32 or under ``torch.autocast``
    (``precision="bf16"``)."""
    from .. import render

    dec, z, rays, target, s = case["decoder"], case["z"], case["rays"], case["target"], case["shape"]
    sync = torch.cuda.synchronize if case["device"].type == "cuda" else (lambda: None)
    amp = PRECISIONS[precision]

    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")

    def sil(surface=False):
        with torch.autocast(case["device"].type, dtype=amp, enabled=amp != torch.float32):
            if backend == "reference_compiled":
                if surface:
                    raise RuntimeError("torch.compile(reference) cannot run this call: it renders silhouettes only")
                return _reference_compiled()(dec, z, *rays, s.samples, 0.01, 0.005)
            return render(dec, z, *rays, num_samples=s.samples, backend=backend, surface=surface)

    def forward():
        with torch.no_grad():
            sil()
        sync()

    def forward_backward():
        dec.zero_grad(set_to_none=True)
        z.grad = None
        ((sil() - target) ** 2).mean().backward()
        sync()

    def surface():
        dec.zero_grad(set_to_none=True)
        z.grad = None
        out = sil(surface=True)
        # a loss on every output: the silhouettes' as above, depth against 2.5 and normals facing the camera
        hit = out.hit
        ((out.silhouette - target) ** 2).mean().add((out.depth - 2.5 * hit).square().mean()).add(
            (out.normal * rays[1]).sum(-1).add(hit.float()).square().mean()).backward()
        sync()

    return {"forward": forward, "forward_backward": forward_backward, "surface": surface}[mode]


TRAIN_STEP_MODES = ("eager", "torch.compile")


def make_train_step(case: dict, mode: str, backend: str = "compiled"):
    """A no-argument callable running one training step of a user's model: the study's CNN encoder on 64x64
    images, ``render`` and a silhouette loss, backward, as eager code or with the loss function under
    ``torch.compile`` (default mode; the temperatures passed as 0-d tensors, as an annealing loop would)."""
    from .. import Encoder, render

    dec, rays, target, s = case["decoder"], case["rays"], case["target"], case["shape"]
    torch.manual_seed(1)
    encoder = Encoder(latent_dim=s.latent, resolution=64).to(case["device"])
    images = torch.rand(s.batch, 3, 64, 64, device=case["device"])
    tau, tau_min = torch.tensor(0.01), torch.tensor(0.005)
    sync = torch.cuda.synchronize if case["device"].type == "cuda" else (lambda: None)

    def loss_fn(images, tau, tau_min):
        z = encoder(images)
        sil = render(dec, z, *rays, num_samples=s.samples, tau=tau, tau_min=tau_min, backend=backend)
        return ((sil - target) ** 2).mean()

    fn = torch.compile(loss_fn) if mode == "torch.compile" else loss_fn

    def step():
        encoder.zero_grad(set_to_none=True)
        dec.zero_grad(set_to_none=True)
        fn(images, tau, tau_min).backward()
        sync()

    return step


def measure_train_steps(shape: str = "study", rounds: int = 5) -> list[dict]:
    """Eager and ``torch.compile``-d training steps (:func:`make_train_step`) in this process, timed in alternation
    after one warm-up call each (which compiles); median seconds per step."""
    case = make_case(shape)
    steps = {mode: make_train_step(case, mode) for mode in TRAIN_STEP_MODES}
    times = {mode: [] for mode in TRAIN_STEP_MODES}
    for step in steps.values():
        step()
    for _ in range(rounds):
        for mode, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[mode].append(time.perf_counter() - t0)
    return [dict(mode=mode, shape=shape, times=t, time=statistics.median(t), device=str(case["device"]),
                 threads=torch.get_num_threads()) for mode, t in times.items()]


def evaluated_points(backend: str, case: dict, mode: str, rec: Recorder) -> tuple[int, int, int]:
    """(forward, backward, refined) samples at which the decoder ran in the last call of ``backend`` that ``rec``
    recorded; refined: recomputed in float32 after the forward's bfloat16 screen (0 without a screen)."""
    s = case["shape"]
    if backend in BASELINES:
        dense = s.batch * s.resolution**2 * s.samples
        return dense, dense if mode != "forward" else 0, 0
    backward = rec.value("backward_points") if mode != "forward" else 0
    return rec.value("forward_points"), backward, rec.value("refined_points")


def flop_counts(backend: str, case: dict, mode: str, points: tuple[int, int, int]) -> tuple[float, float]:
    """(evaluated, dense-equivalent) FLOPs of one call. Backward costs 2x forward per point; the fast backends
    also recompute the forward there, so 3x per backward point (autograd's reference keeps activations: 2x).
    A screened forward counts its bfloat16 pass and its float32 recomputations alike."""
    s = case["shape"]
    dense = backend in BASELINES
    f = mlp_flops(s.hidden, s.latent, dense)
    evaluated = (points[0] + points[2]) * f + (2 if dense else 3) * points[1] * f
    n = s.batch * s.resolution**2 * s.samples
    equivalent = n * mlp_flops(s.hidden, s.latent, True) * (1 if mode == "forward" else 3)
    return float(evaluated), float(equivalent)


def rates(backend: str, case: dict, mode: str, seconds: float, rec: Recorder) -> dict:
    """Throughput of one call that took ``seconds``; ``rec``: a recording of it (the fused backends' sample counts
    are those of the last call recorded)."""
    s = case["shape"]
    points = evaluated_points(backend, case, mode, rec)
    flops, dense_flops = flop_counts(backend, case, mode, points)
    rays = s.batch * s.resolution**2
    return dict(forward_points=points[0], backward_points=points[1], refined_points=points[2],
                gflops=flops / seconds / 1e9,
                dense_gflops=dense_flops / seconds / 1e9, rays_per_s=rays / seconds,
                points_per_s=rays * s.samples / seconds)


def _read_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak resident set (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure(backend: str, shape: str, mode: str, rounds: int = 3, precision: str = "32",
            tune: dict | None = None, activation: str = "relu") -> dict:
    """Runs in THIS process: one warm-up call, then ``rounds`` timed calls (under :func:`tuning` with ``tune``).
    Call it in a fresh process for an honest peak memory (see :func:`measure_subprocess`)."""
    with tuning(**(tune or {})), recording() as rec:
        return _measure(backend, shape, mode, rounds, precision, rec, activation) | dict(tune=tune or {})


def _measure(backend: str, shape: str, mode: str, rounds: int, precision: str, rec: Recorder,
             activation: str = "relu") -> dict:
    import gc
    import resource

    case = make_case(shape, activation=activation)
    step = make_step(backend, case, mode, precision)
    step()  # warm-up: compiles, allocates caches
    gc.collect()
    cuda = case["device"].type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _read_status("VmRSS")
    exact_peak = _reset_peak()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    if cuda:
        peak, how = torch.cuda.max_memory_allocated() - base, "cuda max_memory_allocated"
    elif exact_peak and base_rss is not None:
        peak, how = _read_status("VmHWM") - base_rss, "VmHWM after reset - VmRSS before"
    else:
        peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss (includes setup)"
    t = statistics.median(times)
    return dict(backend=backend, shape=shape, mode=mode, precision=precision, activation=activation,
                device=str(case["device"]), times=times,
                time=t,
                peak_bytes=peak, peak_method=how, **rates(backend, case, mode, t, rec), threads=torch.get_num_threads())


def measure_subprocess(backend: str, shape: str, mode: str, rounds: int = 3, tune: dict | None = None,
                       precision: str = "32", activation: str = "relu") -> dict | None:
    """:func:`measure` in a fresh Python process (so that its peak memory is its own); on CUDA in this process
    (``max_memory_allocated`` is exact there, and compiled kernels are not compiled again); ``None`` where the
    backend does not take the call."""
    if default_device().type == "cuda":
        try:
            return measure(backend, shape, mode, rounds, precision, tune, activation)
        except RuntimeError as e:
            if "cannot run this call" in str(e):
                return None
            raise
    cmd = [sys.executable, "-m", "sdfsrn_fast.bench", "--worker", backend, shape, mode, precision, "--rounds",
           str(rounds), "--activation", activation, "--tune", *(f"{k}={v}" for k, v in (tune or {}).items())]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0 and "cannot run this call" in out.stderr:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"benchmark worker {backend}/{shape}/{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_size(device: torch.device) -> int:
    """The side of :func:`gemm_gflops`'s square matmul: large enough to fill the device."""
    return 8192 if device.type == "cuda" else 2048


def gemm_gflops(precision: str = "32", n: int | None = None, reps: int = 5, device=None) -> float:
    """This machine's matrix-multiply throughput (n x n x n; default 2048 on a CPU, 8192 on a GPU, random data) in
    a precision, best of ``reps`` and, for float32, of the two matmuls the kernels may use: aten's (MKL on x86
    CPUs) and :func:`sdfsrn_fast.backends.fused.linear` (oneDNN on CPUs). bfloat16: aten's (oneDNN on CPUs, cuBLAS
    on CUDA), bfloat16 in and out."""
    from ..backends.fused import linear

    device = torch.device(device) if device is not None else default_device()
    n = n or gemm_size(device)
    dtype = PRECISIONS[precision]
    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for matmul in (torch.mm, linear):
        for _ in range(reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            matmul(a, b)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def grad_eps_error(values, shape: str = "study", fit_steps: int = 150) -> list[dict]:
    """Relative gradient error (per tensor, worst and global) of each ``grad_eps`` against the exact gradient
    (grad_eps = 0), and the backward time, on a trained-like decoder (fitted to a sphere's SDF)."""
    from .. import render

    case = make_case(shape)
    dec, z, rays, target, s = case["decoder"], case["z"], case["rays"], case["target"], case["shape"]
    dec.fit_sphere(radius=0.45, steps=fit_steps)
    params = [z, *dec.parameters()]

    def grads(eps):
        with recording() as rec:
            sil = render(dec, z, *rays, num_samples=s.samples, grad_eps=eps, backend="compiled")
            t0 = time.perf_counter()
            g = torch.autograd.grad(((sil - target) ** 2).mean(), params)
        kept = rec.value("backward_points") / max(rec.value("forward_points"), 1)
        return g, time.perf_counter() - t0, kept

    grads(0.0)  # warm-up (compile)
    exact, t_exact, kept = grads(0.0)
    rows = [dict(grad_eps=0.0, worst=0.0, global_=0.0, backward_s=t_exact, kept=kept)]
    flat_exact = torch.cat([g.flatten() for g in exact])
    for eps in values:
        g, t, kept = grads(eps)
        worst = max(((a - b).norm() / b.norm()).item() for a, b in zip(g, exact))
        glob = ((torch.cat([x.flatten() for x in g]) - flat_exact).norm() / flat_exact.norm()).item()
        rows.append(dict(grad_eps=eps, worst=worst, global_=glob, backward_s=t, kept=kept))
    return rows


def available_bench_backends() -> list[str]:
    from .. import available_backends

    return list(BASELINES) + [b for b in available_backends() if b != "reference"]


def _table(rows: list[dict], peak: dict) -> str:
    """One line per measurement; ``spread``: the fastest and slowest of its timed calls; ``x ref``, ``x c(ref)``:
    speed-up over the baselines at the same precision; ``x 32``: over the same backend in float32; ``/ f+b``: a
    surface row's time over the same backend's silhouette-only forward+backward; ``%peak``: of the matmul rate of
    the row's precision (``peak``)."""
    by = {(r["backend"], r["shape"], r["mode"], r["precision"]): r for r in rows}
    head = (f"{'shape':<6} {'mode':<17} {'backend':<19} {'prec':<5} {'time s':>8} {'spread s':>13} {'x ref':>7} "
            f"{'x c(ref)':>8} {'x 32':>6} {'/ f+b':>6} {'peak MB':>9} {'GFLOP/s':>8} {'%peak':>6} {'dense-eq GFLOP/s':>17} "
            f"{'bwd pts %':>9} {'bf16 only %':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ref = by.get(("reference", r["shape"], r["mode"], r["precision"]))
        cref = by.get(("reference_compiled", r["shape"], r["mode"], r["precision"]))
        f32 = by.get((r["backend"], r["shape"], r["mode"], "32"))
        x_32 = f"{f32['time'] / r['time']:.2f}" if f32 and r["precision"] != "32" else "-"
        x_ref = f"{ref['time'] / r['time']:.1f}" if ref else "-"
        x_cref = f"{cref['time'] / r['time']:.1f}" if cref else "-"
        fb = by.get((r["backend"], r["shape"], "forward_backward", r["precision"]))
        per_fb = f"{r['time'] / fb['time']:.2f}" if fb and r["mode"] == "surface" else "-"
        bwd = f"{100 * r['backward_points'] / max(r['forward_points'], 1):.1f}" if r["mode"] != "forward" else "-"
        refined = r.get("refined_points", 0)
        low = f"{100 * (1 - refined / max(r['forward_points'], 1)):.1f}" if refined else "-"
        spread = f"{min(r['times']):.3f}-{max(r['times']):.3f}"
        lines.append(f"{r['shape']:<6} {r['mode']:<17} {r['backend']:<19} {r['precision']:<5} {r['time']:>8.3f} "
                     f"{spread:>13} "
                     f"{x_ref:>7} {x_cref:>8} {x_32:>6} {per_fb:>6} {r['peak_bytes'] / 2**20:>9.1f} {r['gflops']:>8.1f} "
                     f"{100 * r['gflops'] / peak[r['precision']]:>6.1f} {r['dense_gflops']:>17.1f} {bwd:>9} "
                     f"{low:>11}")
    return "\n".join(lines)
