"""The scripts a lent GPU runs, checked without one: ``benchmarks/gpu_check.sh`` runs the steps of each of its parts
and writes their summary and archive (with ``true`` standing in for Python and Nsight Compute: a broken step list or
quoting shows here, not in the GPU's time), and ``benchmarks/targets.py`` reads the issue's three targets off the
H200 run's JSON as docs/performance.md reports them."""

import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PARTS = {
    "core": ["tests", "bench_study", "targets", "bench_reference_compiled", "bench_large", "train_bf16"],
    "tune": ["bench_default_loads", "bench_tile_loads", "bench_grouped_loads", "load_modes", "host_ops", "profile",
             "ncu_forward"],
    "rest": ["kernel_resources", "bench_forward_block64", "train_fp32"],
}


def _run_gpu_check(tmp_path, part):
    env = dict(os.environ, PYTHON="true", NCU="true")
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tmp_path), part], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return (tmp_path / "summary.txt").read_text()


@pytest.mark.parametrize("part", list(PARTS))
def test_gpu_check_parts_run_their_steps_and_write_their_summary(tmp_path, part):
    summary = _run_gpu_check(tmp_path, part)
    steps = [line.split(":")[0][3:] for line in summary.splitlines() if line.startswith("== ")]
    assert steps == PARTS[part]
    assert summary.count("   exit 0 after") == len(steps)
    with tarfile.open(tmp_path / "gpu_check.tgz") as tar:
        assert "./summary.txt" in tar.getnames()


def test_gpu_check_stopped_from_outside_leaves_the_finished_steps(tmp_path):
    """The device's time limit may stop the script mid-step: the steps before are already in OUT_DIR."""
    python = tmp_path / "python"
    python.write_text('#!/bin/sh\ncase "$*" in *"--shapes study"*) sleep 60 ;; esac\n')  # bench_study hangs
    python.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=str(python), NCU="true")
    proc = subprocess.run(["timeout", "5", "bash", "benchmarks/gpu_check.sh", str(out), "core"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 124  # stopped by the outer timeout, inside bench_study
    summary = (out / "summary.txt").read_text()
    assert "== tests:" in summary and "   exit 0 after" in summary and "== bench_study:" in summary
    with tarfile.open(out / "gpu_check.tgz") as tar:
        assert "./tests.log" in tar.getnames()


def test_gpu_check_step_limits_keep_the_core_under_8_minutes():
    """The issue asks the GPU run (CUDA tests, study and large benchmarks, 20 study epochs) in under 8 minutes: the
    core part's step limits, read off the script, sum to less."""
    limits = {}
    for line in open(os.path.join(ROOT, "benchmarks", "gpu_check.sh")):
        if line.startswith("step "):
            name, limit = line.split()[1:3]
            limits[name] = int(limit)
    assert sorted(limits) == sorted(sum(PARTS.values(), []))  # every step in exactly one part
    assert sum(limits[name] for name in PARTS["core"]) < 8 * 60


def test_targets_reads_the_h200_run():
    proc = subprocess.run([sys.executable, "benchmarks/targets.py", "benchmarks/results_gpu_h200_2026-11-28.json",
                           "study_all_backends"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("forward+backward: triton 9.69 ms, compiled 13.71 ms: 1.42x (target >= 5x: not met)")
    assert lines[1].startswith("peak memory: triton 117 MB, compiled 554 MB: 0.211 (target <= 0.2: not met)")
    assert "11.5% of the bf16 matmul rate" in lines[2] and "not met" in lines[2]
