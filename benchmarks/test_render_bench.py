"""``pytest benchmarks --benchmark-only``: render, backend x {forward, forward+backward} x precision x named shape.

The cases, FLOP counts and memory measurement live in :mod:`sdfsrn_fast.bench` (shared with
``python -m sdfsrn_fast.bench``, which prints one comparison table). ``large`` runs the fast backends only (on a
CPU only with SDFSRN_BENCH_LARGE=1);
``bf16`` is the same call inside ``torch.autocast(dtype=torch.bfloat16)``.
"""

import os

import pytest
import torch

from sdfsrn_fast import bench

PRECISIONS = ["32", "bf16"] + (["tf32"] if torch.cuda.is_available() else [])  # tf32: CUDA's tensor cores
# ``large`` on a CPU: 16.7 M samples a call, 20-30 s each on 2 cores (the suite passed 30 minutes with it, AMD EPYC,
# 2026-11-28); there it runs when SDFSRN_BENCH_LARGE=1, on a GPU always.
LARGE = torch.cuda.is_available() or os.environ.get("SDFSRN_BENCH_LARGE") == "1"
CASES = [
    (backend, shape, mode, precision)
    for shape in bench.SHAPES
    for mode in bench.MODES
    for precision in PRECISIONS
    for backend in bench.available_bench_backends()
    if not (shape == "large" and (backend in bench.BASELINES or not LARGE))
]
ROUNDS = {"tiny": 10, "study": 3, "large": 2}


@pytest.mark.parametrize("backend,shape,mode,precision", CASES, ids=["-".join(c[1:] + c[:1]) for c in CASES])
def test_render(benchmark, backend, shape, mode, precision):
    case = bench.make_case(shape)
    step = bench.make_step(backend, case, mode, precision)
    try:
        step()
    except RuntimeError as err:
        if "cannot run this call" in str(err):  # e.g. triton at exact float32 on CUDA
            pytest.skip(str(err))
        raise
    benchmark.group = f"{shape}-{mode}-{precision}"
    with bench.recording() as rec:
        benchmark.pedantic(step, rounds=ROUNDS[shape], iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.median
    benchmark.extra_info.update(bench.rates(backend, case, mode, t, rec))
    memory = bench.measure_subprocess(backend, shape, mode, rounds=1, precision=precision)  # a fresh process
    benchmark.extra_info.update(peak_memory_mb=memory["peak_bytes"] / 2**20, peak_memory_method=memory["peak_method"])
    assert t > 0
