"""Benchmarks of ``render``: named shapes, the backends to compare, FLOP counts, and peak memory measured in a
fresh subprocess. ``python -m sdfsrn_fast.bench`` prints one table from one run (and writes its JSON);
``pytest benchmarks --benchmark-only`` runs the same cases under pytest-benchmark.

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

__all__ = ["SHAPES", "BACKENDS", "PRECISIONS", "make_case", "make_step", "measure", "rates", "mlp_flops", "gemm_size",
           "gemm_gflops", "OpCounter", "SYNCING_OPS", "host_ops", "main"]


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
MODES = ("forward", "forward_backward")
# "32": float32; "bf16": the same call inside torch.autocast(dtype=torch.bfloat16) (shared/SPEC.md, Precision);
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


def make_case(shape: str, device=None, seed: int = 0) -> dict:
    """Decoder, latents, rays and a target silhouette for a named shape. The decoder has a surface (geometric
    init: a sphere of radius 0.5), as in training; a random decoder's flat SDF would hide the sparse backward."""
    from . import SDFDecoder
    from .cameras import orbit_rays, sphere_near_far

    s = SHAPES[shape]
    device = torch.device(device) if device is not None else default_device()
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    decoder = SDFDecoder(latent_dim=s.latent, hidden_dim=s.hidden).to(device)
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
        from .backends.reference import render_reference

        _REFERENCE_COMPILED = torch.compile(render_reference)
    return _REFERENCE_COMPILED


# aten calls after which the host waits for the device: a result whose size (nonzero, ...) or value (.item()) it reads
SYNCING_OPS = frozenset({"aten.nonzero.default", "aten._local_scalar_dense.default", "aten.repeat_interleave.Tensor",
                         "aten.bincount.default", "aten.masked_select.default", "aten.unique_consecutive.default",
                         "aten._unique2.default", "aten.is_nonzero.default"})


class OpCounter:
    """Counts the aten calls made under it (``with OpCounter() as c: ...; c.total, c.syncs, c.counts``). A custom op
    counts as one call: call a backend's functions directly to count what it does inside."""

    def __enter__(self):
        import collections

        from torch.utils._python_dispatch import TorchDispatchMode

        counts = self.counts = collections.Counter()

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counts[str(func)] += 1
                return func(*args, **(kwargs or {}))

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def syncs(self) -> int:
        return sum(n for op, n in self.counts.items() if op in SYNCING_OPS)


def host_ops(shape: str = "tiny", precision: str = "32") -> dict:
    """What the triton backend's host side issues around its kernels in one forward and one backward at ``shape``:
    ``{"forward": OpCounter, "backward": OpCounter, "launches": {"forward": n, "backward": n}}``. The kernels run
    for real (in the interpreter without a GPU), outside the counting, so that the interpreter's own work is not
    counted. The same Python runs on a GPU, where each counted call that is not a view is a kernel launch or an
    allocation, and each syncing one a wait."""
    from torch.utils._python_dispatch import _disable_current_modes

    from .backends import triton as tb
    from .backends.fused import decoder_weights

    case = make_case(shape)
    s = case["shape"]
    weights = [w.detach() for w in decoder_weights(case["decoder"])]
    amp = PRECISIONS[precision]
    compute = amp if amp in (torch.bfloat16, torch.float16) else None
    args = (case["z"].detach(), *case["rays"], None, weights, s.samples, 0.01, 0.005, "relu", 100.0, compute)
    sil, sdf, lse = tb.triton_forward(*args)
    z, o, d, near, far, valid = args[:6]
    passes = {"forward": lambda: tb.triton_forward(*args),
              "backward": lambda: tb.triton_backward(torch.ones_like(sil), sil, sdf, lse, z, o, d, near, far, valid,
                                                     None, weights, s.samples, 0.01, 0.005, 1e-4, "relu", 100.0,
                                                     compute)}
    names = [n for n in ("_render_fwd_kernel", "_render_bwd_kernel", "_keep_kernel") if hasattr(tb, n)]
    real = {name: getattr(tb, name) for name in names}
    launches = {}

    class Launch:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def launch(*a, **k):
                launches[current[0]] = launches.get(current[0], 0) + 1
                with _disable_current_modes():  # the launch itself is not the host side's aten calls
                    return self.kernel[grid](*a, **k)

            return launch

    out, current = {}, [None]
    try:
        for name in names:
            setattr(tb, name, Launch(real[name]))
        for name, run in passes.items():
            current[0] = name
            with OpCounter() as out[name]:
                run()
    finally:
        for name, fn in real.items():
            setattr(tb, name, fn)
    out["launches"] = launches
    return out


def make_step(backend: str, case: dict, mode: str, precision: str = "32"):
    """A no-argument callable running one forward (no grad) or one forward+backward of ``backend``, in float32 or
    under ``torch.autocast`` (``precision="bf16"``)."""
    from . import render

    dec, z, rays, target, s = case["decoder"], case["z"], case["rays"], case["target"], case["shape"]
    sync = torch.cuda.synchronize if case["device"].type == "cuda" else (lambda: None)
    amp = PRECISIONS[precision]

    torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")

    def sil():
        with torch.autocast(case["device"].type, dtype=amp, enabled=amp != torch.float32):
            if backend == "reference_compiled":
                return _reference_compiled()(dec, z, *rays, s.samples, 0.01, 0.005)
            return render(dec, z, *rays, num_samples=s.samples, backend=backend)

    def forward():
        with torch.no_grad():
            sil()
        sync()

    def forward_backward():
        dec.zero_grad(set_to_none=True)
        z.grad = None
        ((sil() - target) ** 2).mean().backward()
        sync()

    return forward if mode == "forward" else forward_backward


TRAIN_STEP_MODES = ("eager", "torch.compile")


def make_train_step(case: dict, mode: str, backend: str = "compiled"):
    """A no-argument callable running one training step of a user's model: the study's CNN encoder on 64x64
    images, ``render`` and a silhouette loss, backward, as eager code or with the loss function under
    ``torch.compile`` (default mode; the temperatures passed as 0-d tensors, as an annealing loop would)."""
    from . import Encoder, render

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


def evaluated_points(backend: str, case: dict, mode: str) -> tuple[int, int, int]:
    """(forward, backward, refined) samples at which the decoder ran in the last call of ``backend``; refined:
    recomputed in float32 after the forward's bfloat16 screen (0 without a screen)."""
    s = case["shape"]
    if backend in BASELINES:
        dense = s.batch * s.resolution**2 * s.samples
        return dense, dense if mode == "forward_backward" else 0, 0
    from .backends.fused import stat

    backward = stat("backward_points") if mode == "forward_backward" else 0
    return stat("forward_points"), backward, stat("refined_points")


def flop_counts(backend: str, case: dict, mode: str, points: tuple[int, int, int]) -> tuple[float, float]:
    """(evaluated, dense-equivalent) FLOPs of one call. Backward costs 2x forward per point; the fast backends
    also recompute the forward there, so 3x per backward point (autograd's reference keeps activations: 2x).
    A screened forward counts its bfloat16 pass and its float32 recomputations alike."""
    s = case["shape"]
    dense = backend in BASELINES
    f = mlp_flops(s.hidden, s.latent, dense)
    evaluated = (points[0] + points[2]) * f + (2 if dense else 3) * points[1] * f
    n = s.batch * s.resolution**2 * s.samples
    equivalent = n * mlp_flops(s.hidden, s.latent, True) * (3 if mode == "forward_backward" else 1)
    return float(evaluated), float(equivalent)


def rates(backend: str, case: dict, mode: str, seconds: float) -> dict:
    """Throughput of one call that took ``seconds`` (call right after it: the fused backends' sample counts
    are those of their last call)."""
    s = case["shape"]
    points = evaluated_points(backend, case, mode)
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


def measure(backend: str, shape: str, mode: str, rounds: int = 3, precision: str = "32") -> dict:
    """Runs in THIS process: one warm-up call, then ``rounds`` timed calls. Call it in a fresh process for an
    honest peak memory (see :func:`measure_subprocess`)."""
    import gc
    import resource

    case = make_case(shape)
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
    return dict(backend=backend, shape=shape, mode=mode, precision=precision, device=str(case["device"]), times=times,
                time=t,
                peak_bytes=peak, peak_method=how, **rates(backend, case, mode, t),
                chunk=os.environ.get("SDFSRN_CHUNK"), threads=torch.get_num_threads())


def measure_subprocess(backend: str, shape: str, mode: str, rounds: int = 3, env: dict | None = None,
                       precision: str = "32") -> dict:
    """:func:`measure` in a fresh Python process (so that its peak memory is its own); on CUDA in this process
    (``max_memory_allocated`` is exact there, and compiled kernels are not compiled again), ``None`` where the
    backend does not take the precision."""
    if default_device().type == "cuda" and not env:
        try:
            return measure(backend, shape, mode, rounds, precision)
        except RuntimeError as e:
            if "cannot run this call" in str(e):
                return None
            raise
    cmd = [sys.executable, "-m", "sdfsrn_fast.bench", "--worker", backend, shape, mode, precision, "--rounds",
           str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if out.returncode != 0 and "cannot run this call" in out.stderr:  # e.g. triton at exact float32
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
    from .backends.fused import linear

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
    from . import render

    case = make_case(shape)
    dec, z, rays, target, s = case["decoder"], case["z"], case["rays"], case["target"], case["shape"]
    dec.fit_sphere(radius=0.45, steps=fit_steps)
    params = [z, *dec.parameters()]

    def grads(eps):
        sil = render(dec, z, *rays, num_samples=s.samples, grad_eps=eps, backend="compiled")
        t0 = time.perf_counter()
        g = torch.autograd.grad(((sil - target) ** 2).mean(), params)
        return g, time.perf_counter() - t0

    grads(0.0)  # warm-up (compile)
    exact, t_exact = grads(0.0)
    from .backends.fused import stat

    rows = [dict(grad_eps=0.0, worst=0.0, global_=0.0, backward_s=t_exact, kept=stat("backward_points") /
                 max(stat("forward_points"), 1))]
    flat_exact = torch.cat([g.flatten() for g in exact])
    for eps in values:
        g, t = grads(eps)
        worst = max(((a - b).norm() / b.norm()).item() for a, b in zip(g, exact))
        glob = ((torch.cat([x.flatten() for x in g]) - flat_exact).norm() / flat_exact.norm()).item()
        rows.append(dict(grad_eps=eps, worst=worst, global_=glob, backward_s=t,
                         kept=stat("backward_points") / max(stat("forward_points"), 1)))
    return rows


def available_bench_backends() -> list[str]:
    from . import available_backends

    return list(BASELINES) + [b for b in available_backends() if b != "reference"]


def _table(rows: list[dict], peak: dict) -> str:
    """One line per measurement; ``x ref``, ``x c(ref)``: speed-up over the baselines at the same precision;
    ``x 32``: over the same backend in float32; ``%peak``: of the matmul rate of the row's precision (``peak``)."""
    by = {(r["backend"], r["shape"], r["mode"], r["precision"]): r for r in rows}
    head = (f"{'shape':<6} {'mode':<17} {'backend':<19} {'prec':<5} {'time s':>8} {'x ref':>7} {'x c(ref)':>8} "
            f"{'x 32':>6} {'peak MB':>9} {'GFLOP/s':>8} {'%peak':>6} {'dense-eq GFLOP/s':>17} {'bwd pts %':>9} "
            f"{'bf16 only %':>11}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ref = by.get(("reference", r["shape"], r["mode"], r["precision"]))
        cref = by.get(("reference_compiled", r["shape"], r["mode"], r["precision"]))
        f32 = by.get((r["backend"], r["shape"], r["mode"], "32"))
        x_32 = f"{f32['time'] / r['time']:.2f}" if f32 and r["precision"] != "32" else "-"
        x_ref = f"{ref['time'] / r['time']:.1f}" if ref else "-"
        x_cref = f"{cref['time'] / r['time']:.1f}" if cref else "-"
        bwd = f"{100 * r['backward_points'] / max(r['forward_points'], 1):.1f}" if r["mode"] != "forward" else "-"
        refined = r.get("refined_points", 0)
        low = f"{100 * (1 - refined / max(r['forward_points'], 1)):.1f}" if refined else "-"
        lines.append(f"{r['shape']:<6} {r['mode']:<17} {r['backend']:<19} {r['precision']:<5} {r['time']:>8.3f} "
                     f"{x_ref:>7} {x_cref:>8} {x_32:>6} {r['peak_bytes'] / 2**20:>9.1f} {r['gflops']:>8.1f} "
                     f"{100 * r['gflops'] / peak[r['precision']]:>6.1f} {r['dense_gflops']:>17.1f} {bwd:>9} "
                     f"{low:>11}")
    return "\n".join(lines)


def gpu_compile(archs, widths, dots, json_path=None, activation: str = "relu") -> int:
    """``--gpu-compile``: every triton kernel compiled for each arch, width and dot precision, with ``activation``;
    one table; 1 where a kernel spills at H <= 128, exceeds the architecture's shared memory, uses no tensor-core
    instruction or compiles to a trap."""
    from .backends.triton import SHARED_LIMIT, compile_report

    unknown = [a for a in archs if a not in SHARED_LIMIT]
    if unknown:
        raise SystemExit(f"--archs: sm_{unknown[0]} is not one of the known targets {sorted(SHARED_LIMIT)}")
    rows = []
    head = (f"{'arch':<6} {'kernel':<9} {'H':>4} {'dot':<5} {'BLOCK_M':>7} {'warps':>5} {'regs':>5} {'spill B':>8} "
            f"{'smem KB':>8} {'HGMMA':>6} {'UTCHMMA':>7} {'HMMA':>6} {'FFMA':>7} {'s':>5}  problems")
    print(f"activation: {activation}")
    print(head)
    print("-" * len(head))
    for arch in archs:
        for dot in dots:
            for hidden in widths:
                for kernel in ("forward", "backward"):
                    r = compile_report(arch, kernel, hidden, dot, activation)
                    rows.append(r)
                    print(f"{r['arch']:<6} {kernel:<9} {hidden:>4} {dot:<5} {r['block_m']:>7} {r['warps']:>5} "
                          f"{r['registers']:>5} {r['spill_bytes']:>8} {r['shared_bytes'] / 1024:>8.1f} "
                          f"{r['hgmma']:>6} {r['utchmma']:>7} {r['hmma']:>6} {r['ffma']:>7} {r['compile_s']:>5.1f}  "
                          f"{'; '.join(r['problems']) or '-'}", flush=True)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(dict(triton_aot=rows), f, indent=1)
    bad = [r for r in rows if r["problems"]]
    if bad:
        print(f"{len(bad)} kernel(s) with problems", file=sys.stderr)
    return 1 if bad else 0


def print_host_ops(shapes, precisions) -> None:
    """``--host-ops``: one line per shape, precision and pass (the triton backend runs in its interpreter without a
    GPU, as ``main`` arranges)."""
    print(f"{'shape':<6} {'precision':<9} {'pass':<9} {'aten calls':>10} {'not views':>9} {'syncing':>7} "
          f"{'triton launches':>15}  syncing calls")
    views = ("aten.view.", "aten.t.", "aten.slice.", "aten.select.", "aten.unsqueeze.", "aten.squeeze.",
             "aten.transpose.", "aten.permute.", "aten.unbind.", "aten.expand.", "aten.detach.", "aten.alias.",
             "aten._reshape_alias.")
    for shape in shapes:
        for precision in precisions:
            out = host_ops(shape, precision)
            for name in ("forward", "backward"):
                c = out[name]
                work = sum(n for op, n in c.counts.items() if not op.startswith(views))
                syncing = ", ".join(f"{op} x{n}" for op, n in c.counts.items() if op in SYNCING_OPS)
                print(f"{shape:<6} {precision:<9} {name:<9} {c.total:>10} {work:>9} {c.syncs:>7}  "
                      f"{out['launches'].get(name, 0):>15}  {syncing}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m sdfsrn_fast.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", nargs="+", default=["tiny", "study"], choices=list(SHAPES))
    p.add_argument("--backends", nargs="+", default=None, help="default: the baselines and every available fast one")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--precisions", nargs="+", default=["32", "bf16"], choices=list(PRECISIONS),
                   help="float32, bfloat16 autocast, tf32 (default: 32 bf16)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default="bench.json", help="where to write the results")
    p.add_argument("--sweep-chunk", nargs="*", type=int, default=None, metavar="N",
                   help="instead: time the compiled backend's no-grad forward at the study shape per chunk size")
    p.add_argument("--grad-eps", nargs="*", type=float, default=None, metavar="EPS",
                   help="instead: gradient error and backward time of these grad_eps against grad_eps=0 (study shape)")
    p.add_argument("--train-step", action="store_true",
                   help="instead: a user's training step (CNN encoder + render + loss + backward), eager against "
                        "torch.compile, at the first of --shapes")
    p.add_argument("--gpu-compile", action="store_true",
                   help="instead: compile the triton kernels ahead of time for --archs (no GPU needed) and print "
                        "registers, spills, shared memory and tensor-core instructions; exit 1 on a problem")
    p.add_argument("--host-ops", action="store_true",
                   help="instead: count the aten calls and syncs the triton backend's host side issues in one forward "
                        "and one backward at each of --shapes and --precisions")
    p.add_argument("--archs", nargs="+", type=int, default=[80, 90],
                   help="--gpu-compile: sm_XX targets (those of backends.triton.SHARED_LIMIT)")
    p.add_argument("--widths", nargs="+", type=int, default=[64, 128, 256], help="--gpu-compile: hidden widths")
    p.add_argument("--dots", nargs="+", default=["bf16", "fp16", "tf32"], help="--gpu-compile: dot precisions")
    p.add_argument("--activation", default="relu", choices=["relu", "softplus"], help="--gpu-compile: the decoder's")
    p.add_argument("--worker", nargs=4, metavar=("BACKEND", "SHAPE", "MODE", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        backend, shape, mode, precision = args.worker
        print(json.dumps(measure(backend, shape, mode, rounds=args.rounds, precision=precision)))
        return
    if args.gpu_compile:
        sys.exit(gpu_compile(args.archs, args.widths, args.dots, args.json, args.activation))
    if args.host_ops:
        if not torch.cuda.is_available():
            os.environ.setdefault("TRITON_INTERPRET", "1")  # read when triton is imported, which has not happened yet
        print_host_ops(args.shapes, args.precisions)
        return
    peak = {prec: gemm_gflops(prec) for prec in args.precisions}
    sgemm = gemm_gflops("32") if "32" not in peak else peak["32"]
    for prec, rate in peak.items():
        n = gemm_size(default_device())
        print(f"matmul {prec} ({n}^3, {default_device()}, {torch.get_num_threads()} threads): {rate:.1f} GFLOP/s")
    rows = []
    if args.train_step:
        rows = measure_train_steps(args.shapes[0], max(args.rounds, 5))
        for r in rows:
            print(f"training step, {r['shape']} shape, {r['mode']:<13}: {r['time']:.3f} s (median of "
                  f"{len(r['times'])}: {', '.join(f'{t:.3f}' for t in r['times'])})")
        print(f"torch.compile / eager: {rows[1]['time'] / rows[0]['time']:.2f}x the time")
    elif args.grad_eps is not None:
        rows = grad_eps_error(args.grad_eps or [1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
        print(f"{'grad_eps':>9} {'worst tensor rel err':>21} {'global rel err':>15} {'backward s':>11} {'kept %':>7}")
        for r in rows:
            print(f"{r['grad_eps']:>9g} {r['worst']:>21.2e} {r['global_']:>15.2e} {r['backward_s']:>11.3f} "
                  f"{100 * r['kept']:>7.1f}")
    elif args.sweep_chunk is not None:
        for chunk in args.sweep_chunk or [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]:
            r = measure_subprocess("compiled", "study", "forward", args.rounds, env={"SDFSRN_CHUNK": str(chunk)})
            rows.append(r)
            print(f"chunk {chunk:>6}: {r['time']:.3f} s  {r['gflops']:.1f} GFLOP/s  "
                  f"({100 * r['gflops'] / sgemm:.0f}% of sgemm)", flush=True)
    else:
        backends = args.backends or available_bench_backends()
        try:
            from tqdm import tqdm
        except ImportError:  # progress is optional
            tqdm = None
        jobs = [(b, s, m, prec) for s in args.shapes for m in args.modes for prec in args.precisions
                for b in backends if not (s == "large" and b in BASELINES)]
        bar = tqdm(jobs, desc="benchmarks") if tqdm else jobs
        say = tqdm.write if tqdm else print
        for b, s, m, prec in bar:
            if tqdm:
                bar.set_postfix_str(f"{s}/{m}/{b}/{prec}")
            try:
                row = measure_subprocess(b, s, m, args.rounds, precision=prec)
            except Exception as e:  # one failing case must not lose the others' numbers
                say(f"FAILED {s}/{m}/{b}/{prec}: {type(e).__name__}: {str(e)[-2000:]}")
                continue
            if row is None:
                say(f"skipped {s}/{m}/{b}/{prec}: the backend does not take that precision here")
            else:
                rows.append(row)
                say(f"{s}/{m}/{b}/{prec}: {row['time'] * 1e3:.2f} ms, peak {row['peak_bytes'] / 2**20:.1f} MB")
        print(_table(rows, peak))
    with open(args.json, "w") as f:
        json.dump(dict(sgemm_gflops=sgemm, matmul_gflops=peak, shapes={k: asdict(v) for k, v in SHAPES.items()},
                       results=rows), f,
                  indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
