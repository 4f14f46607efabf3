"""``pytest benchmarks --benchmark-only``: a user's training step (the study's CNN encoder + render + loss +
backward) in eager mode and with its loss function under ``torch.compile``, per named shape. The step is
:func:`sdfsrn_fast.bench.make_train_step`; ``python -m sdfsrn_fast.bench --train-step`` times both in one run."""

import pytest

from sdfsrn_fast import bench

CASES = [(shape, mode) for shape in ("tiny", "study") for mode in bench.TRAIN_STEP_MODES]
ROUNDS = {"tiny": 10, "study": 3}


@pytest.mark.parametrize("shape,mode", CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_train_step(benchmark, shape, mode):
    step = bench.make_train_step(bench.make_case(shape), mode)
    benchmark.group = f"train-step-{shape}"
    benchmark.pedantic(step, rounds=ROUNDS[shape], iterations=1, warmup_rounds=1)
    assert benchmark.stats.stats.median > 0
