"""``pytest benchmarks --benchmark-only``: render, backend x mode x precision x named shape.

The cases, FLOP counts and memory measurement live in :mod:`sdfsrn_fast.bench` (shared with
``python -m sdfsrn_fast.bench``, which prints one comparison table). By default: every backend at the tiny shape
in float32, and the fast backends at the study shape (forward+backward, with and without the surface outputs,
float32 and bfloat16 autocast), each with its peak memory from a fresh process, and the fast backends'
forward+backward with the smooth activations (study shape, float32): a few minutes on a 2-core CPU. The decoder's
activation is ReLU where a case's id does not name another.
``--bench-full``: every backend (the baselines too) x {forward, forward+backward, surface} x every precision x
{tiny, study, large} (large: the fast backends only).
"""

import pytest
import torch

from sdfsrn_fast import bench
from sdfsrn_fast.models import ACTIVATIONS

PRECISIONS = ["32", "bf16"] + (["tf32"] if torch.cuda.is_available() else [])  # tf32: CUDA's tensor cores
ROUNDS = {"tiny": 10, "study": 3, "large": 2}


def cases(full: bool) -> list:
    out = []
    for shape in bench.SHAPES:
        for mode in bench.MODES:
            for precision in PRECISIONS:
                for backend in bench.available_bench_backends():
                    baseline = backend in bench.BASELINES
                    if mode == "surface" and backend == "reference_compiled":
                        continue  # torch.compile(reference) renders silhouettes only
                    if full:
                        keep = not (shape == "large" and baseline)
                    elif shape == "tiny":
                        keep = precision == "32"
                    else:
                        keep = shape == "study" and not baseline and mode != "forward"
                    if keep:
                        out.append((backend, shape, mode, precision, "relu"))
                    if (shape == "study" and mode == "forward_backward" and precision == "32" and not baseline):
                        out += [(backend, shape, mode, precision, act) for act in ACTIVATIONS if act != "relu"]
    return out


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        chosen = cases(metafunc.config.getoption("--bench-full"))
        metafunc.parametrize("case", chosen, ids=["-".join(c[1:4] + c[:1] + c[4:] * (c[4] != "relu"))
                                                  for c in chosen])


def test_render(benchmark, case):
    backend, shape, mode, precision, activation = case
    data = bench.make_case(shape, activation=activation)
    step = bench.make_step(backend, data, mode, precision)
    try:
        step()
    except RuntimeError as err:
        if "cannot run this call" in str(err):  # e.g. triton at exact float32 on CUDA
            pytest.skip(str(err))
        raise
    benchmark.group = f"{shape}-{mode}-{precision}" + f"-{activation}" * (activation != "relu")
    with bench.recording() as rec:
        benchmark.pedantic(step, rounds=ROUNDS[shape], iterations=1, warmup_rounds=1)
    t = benchmark.stats.stats.median
    benchmark.extra_info.update(bench.rates(backend, data, mode, t, rec))
    if shape != "tiny":  # peak memory from a fresh process (at the tiny shape it is noise)
        memory = bench.measure_subprocess(backend, shape, mode, rounds=1, precision=precision, activation=activation)
        benchmark.extra_info.update(peak_memory_mb=memory["peak_bytes"] / 2**20,
                                    peak_memory_method=memory["peak_method"])
    assert t > 0
