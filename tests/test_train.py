"""The training driver: convergence on a few shapes, exact resume, atomic checkpoints, a swapped encoder,
2-process data parallel training, evaluation and figures, and one-line errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdfsrn_fast import train as train_mod
from sdfsrn_fast.train import TrainError, preset_config, train

from tiny_encoder import TinyEncoder

HERE = Path(__file__).parent


def tiny(out, **kw):
    """A few shapes, a few epochs, small everything: seconds on a laptop CPU."""
    base = dict(out=str(out), num_shapes=6, epochs=12, rays=12, samples=12, hidden=32, latent=16, eval_samples=16,
                fit_sphere_steps=30, eval_every=0, figures=False, batch_size=3, eikonal_points=64, tau_start=0.02)
    base.update(kw)
    return preset_config("quick", **base)


def metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls(tmp_path):
    """6 shapes, 30 epochs (4 s here): the training silhouette MSE falls at least 2x (we saw 0.058 -> 0.020)."""
    result = train(tiny(tmp_path / "run", epochs=30), progress=False)
    rows = metrics(tmp_path / "run")
    assert len(rows) == 30 and rows[-1]["epoch"] == 30
    assert rows[-1]["train_mse"] < rows[0]["train_mse"] / 2
    assert "novel_iou" in rows[-1] and 0 <= rows[-1]["novel_iou"] <= 1  # the last epoch is always evaluated
    assert result.summary["train_mse"] == rows[-1]["train_mse"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["hidden"] == 32 and cfg["preset"] == "quick"


class Interrupt(Exception):
    pass


def test_resume_continues_exactly(tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(tiny(full, epochs=4), progress=False)

    part = tmp_path / "part"
    saves = {"n": 0}
    real_save = train_mod._save_atomic

    def save_then_stop(obj, path):
        real_save(obj, path)
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt  # as if ^C came right after epoch 2's checkpoint

    monkeypatch.setattr(train_mod, "_save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(part, epochs=4), progress=False)
    monkeypatch.setattr(train_mod, "_save_atomic", real_save)
    assert len(metrics(part)) == 2
    assert train_mod.main(["--resume", str(part), "--no-progress", "--figures", "false"]) == 0
    a, b = metrics(full), metrics(part)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["train_mse"] == rb["train_mse"]  # bit for bit: same data order, jitter and optimizer state
    wa = torch.load(full / "checkpoint.pt", weights_only=False)["decoder"]
    wb = torch.load(part / "checkpoint.pt", weights_only=False)["decoder"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_interrupted_save_leaves_no_half_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls = {"n": 0}
    real = torch.save

    def dying_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint dies half-way through writing
            Path(f).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(run, epochs=3), progress=False)
    monkeypatch.setattr(torch, "save", real)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)  # the first one, whole
    assert ckpt["epoch"] == 1


def test_custom_encoder_python_api_and_cli(tmp_path):
    enc = TinyEncoder(latent_dim=16)
    result = train(tiny(tmp_path / "api", epochs=2), encoder=enc, progress=False)
    assert result.encoder is enc
    assert train_mod.main(["--out", str(tmp_path / "cli"), "--encoder", "tiny_encoder:TinyEncoder", "--epochs", "2",
                           "--num-shapes", "6", "--rays", "12", "--samples", "12", "--hidden", "32", "--latent",
                           "16", "--eval-samples", "16", "--fit-sphere-steps", "10", "--figures", "false",
                           "--no-progress"]) == 0
    ckpt = torch.load(tmp_path / "cli" / "checkpoint.pt", weights_only=False)
    assert set(ckpt["encoder"]) == set(TinyEncoder(16).state_dict())


def test_figures_and_eval(tmp_path):
    run = tmp_path / "run"
    train(tiny(run, epochs=3, figures=True), progress=False)
    for name in ("views_sphere.png", "views_box.png", "views_ellipsoid.png", "convergence.png", "curves.png"):
        assert (run / name).stat().st_size > 1000, name
    from sdfsrn_fast.evaluate import main as eval_main

    assert eval_main([str(run), "--grid", "24", "--no-progress"]) == 0
    r = json.loads((run / "eval.json").read_text())
    assert len(r["per_shape"]) == 6
    for key in ("novel_mse", "novel_iou", "novel_iou_box", "chamfer", "volume_iou"):
        assert key in r
    assert 0 <= r["volume_iou"] <= 1


def test_shape_metrics_of_the_truth_are_perfect():
    """The 3-D metrics of an analytic SDF against itself: Chamfer ~0, volumetric IoU 1."""
    from sdfsrn_fast.data import make_dataset
    from sdfsrn_fast.evaluate import shape_metrics

    ds = make_dataset(num_shapes=3, resolution=16)
    for i in range(3):
        exact = lambda z, p, i=i: ds.sdf(i, p[0])[None]  # noqa: E731
        m = shape_metrics(exact, torch.zeros(1), ds, i, resolution=32)
        # both sides subsample the same vertices differently: a hair above 0
        assert m["volume_iou"] == 1.0 and m["chamfer"] < 1e-3
    shrunk = lambda z, p: ds.sdf(0, p[0])[None] + 0.1  # noqa: E731  (shape 0 is a sphere: radius - 0.1)
    m = shape_metrics(shrunk, torch.zeros(1), ds, 0, resolution=32)
    assert abs(m["chamfer"] - 0.1) < 0.02 and m["volume_iou"] < 0.9


def _cli_error(capsys, argv):
    assert train_mod.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sdfsrn-train: error:")
    return err[0]


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert "preset" in _cli_error(capsys, ["--preset", "huge"])
    assert "not found" in _cli_error(capsys, ["--dataset", str(tmp_path / "missing.npz"), "--out", str(tmp_path)])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert "corrupt" in _cli_error(capsys, ["--dataset", str(bad), "--out", str(tmp_path)])
    assert "backend" in _cli_error(capsys, ["--backend", "warp-drive", "--out", str(tmp_path)])
    assert "cannot import encoder" in _cli_error(capsys, ["--encoder", "no_such_module:Enc", "--out", str(tmp_path)])
    assert "latents" in _cli_error(capsys, ["--encoder", "tiny_encoder:WrongShapeEncoder", "--latent", "16",
                                            "--out", str(tmp_path)])
    assert "resume" in _cli_error(capsys, ["--resume", str(tmp_path / "nothing-here")])


def test_resume_with_incompatible_config(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(run, epochs=1), progress=False)
    line = _cli_error(capsys, ["--resume", str(run), "--hidden", "64", "--epochs", "3"])
    assert "hidden" in line
    line = _cli_error(capsys, ["--resume", str(run), "--preset", "study"])
    assert "preset" in line


def test_two_process_data_parallel(tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks end with identical weights and the loss falls."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt")
    w1 = torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    rows = metrics(tmp_path)
    assert rows[-1]["train_mse"] < rows[0]["train_mse"]

