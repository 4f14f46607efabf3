"""The scripts a lent GPU runs, checked without one: ``benchmarks/gpu_check.sh`` runs every step of its core part
and writes its summary and archive (with ``true`` standing in for Python: a broken step list or quoting shows here,
not in the GPU's time), and ``benchmarks/targets.py`` reads the issue's three targets off the H200 run's JSON as
docs/performance.md reports them."""

import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_core_steps_run_and_write_their_summary(tmp_path):
    env = dict(os.environ, PYTHON="true")
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(tmp_path), "core"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = (tmp_path / "summary.txt").read_text()
    core = ["tests", "host_ops", "bench_study", "targets", "bench_looped_loads", "bench_persistent", "bench_tile_loads",
            "load_modes", "profile"]
    for step in core:
        assert f"== {step}:" in summary
    assert summary.count("   exit 0 after") == len(core)
    assert "== train_bf16:" not in summary  # the rest's steps are not the core's
    with tarfile.open(tmp_path / "gpu_check.tgz") as tar:
        assert "./summary.txt" in tar.getnames()


def test_targets_reads_the_h200_run():
    proc = subprocess.run([sys.executable, "benchmarks/targets.py", "benchmarks/results_gpu_h200_2026-11-28.json",
                           "study_all_backends"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("forward+backward: triton 9.69 ms, compiled 13.71 ms: 1.42x (target >= 5x: not met)")
    assert lines[1].startswith("peak memory: triton 117 MB, compiled 554 MB: 0.211 (target <= 0.2: not met)")
    assert "11.5% of the bf16 matmul rate" in lines[2] and "not met" in lines[2]
