"""The training driver: convergence on a few shapes, exact resume, atomic checkpoints, a swapped encoder,
2-process data parallel training, evaluation and figures, and one-line errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sdfsrn_fast.models import SDFDecoder
from sdfsrn_fast.study import priors
from sdfsrn_fast.study import train as train_mod
from sdfsrn_fast.study.config import native_bfloat16
from sdfsrn_fast.study.train import TrainError, preset_config, train

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
    # the quick preset's precision "auto" is saved as what it resolved to on this machine
    assert cfg["precision"] == ("bf16" if native_bfloat16(torch.device("cpu")) else "32")
    assert cfg["mirror_weight"] == cfg["central_weight"] == 1.0  # the quick preset's priors are on and logged
    assert rows[-1]["mirror"] > 0 and rows[-1]["central"] > 0
    assert rows[-1]["curvature"] == 0  # off unless asked for


def test_symmetry_losses_vanish_exactly_for_symmetric_shapes():
    """Mirror across the view plane: a ball off the origin within that plane is symmetric (0); moved towards the
    camera it is not (> 0, growing with the offset). Point symmetry: only the centred ball is symmetric."""
    view = torch.tensor([[0.0, 0.0, 2.5]])
    mirror, central = priors.view_mirrors(view), -torch.eye(3)
    assert torch.allclose(mirror[0], torch.diag(torch.tensor([1.0, 1.0, -1.0])))
    points = priors.ball_points(1, 2000, torch.Generator().manual_seed(0), "cpu")

    def ball(centre):
        return lambda z, p: (p - torch.tensor(centre)).norm(dim=-1) - 0.4

    def losses(centre):
        return priors.symmetry_losses(ball(centre), None, points, [mirror, central])

    assert losses([0.0, 0.0, 0.0]) == [0, 0]
    off_axis = losses([0.3, -0.2, 0.0])
    assert off_axis[0] < 1e-12 and off_axis[1] > 0.01
    (near, _), (far, _) = losses([0.0, 0.0, 0.1]), losses([0.0, 0.0, 0.3])
    assert 0.005 < near < far


def test_axes_prior_vanishes_only_for_shapes_aligned_with_the_axes():
    """The axes prior (the mean over the three coordinate planes' reflections, as ``prior_terms`` computes it): 0 for
    a box along the axes, positive for the same box turned, and its central term 0 for both."""
    points = priors.ball_points(1, 2000, torch.Generator().manual_seed(0), "cpu")
    half = torch.tensor([0.5, 0.3, 0.2])

    def box(rot):
        def f(z, p):
            q = (p @ rot).abs() - half
            return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
        return f

    turn = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.5, 0.2], [0.5, 0.0, -0.3], [-0.2, 0.3, 0.0]]))
    maps = {"central": -torch.eye(3), "axes": train_mod.AXIS_MIRRORS}
    aligned = train_mod.prior_terms(box(torch.eye(3)), None, {"symmetry": points}, maps, False)
    turned = train_mod.prior_terms(box(turn), None, {"symmetry": points}, maps, False)
    assert aligned["axes"] < 1e-12 and turned["axes"] > 1e-3
    assert aligned["central"] < 1e-12 and turned["central"] < 1e-12


def test_curvature_prior_closed_form_plane_sphere_lens():
    """A plane's normals never turn (0); a ball of radius r near its surface: E |grad f(p) - grad f(p + e u)|^2 =
    (2/3) e^2 / r^2 to first order; a lens (two balls intersected, the shape one view leaves open) turns more."""
    g = torch.Generator()
    pair = lambda n, step=0.02: priors.curvature_points(  # noqa: E731
        priors.ball_points(1, n, g.manual_seed(0), "cpu"), g, step)
    z = torch.zeros(1, 1)
    plane = priors.curvature(lambda z, p: p[..., 2] - 0.1, z, pair(4000))
    assert plane.item() < 1e-10
    r, e = 0.4, 0.02
    points = pair(20000, e)
    sphere = priors.curvature(lambda z, p: p.norm(dim=-1) - r, z, points).item()
    assert abs(sphere - 2 / 3 * e**2 / r**2) < 0.15 * sphere

    def lens(z, p):
        shift = torch.tensor([0.0, 0.0, 0.1])
        return torch.maximum((p - shift).norm(dim=-1), (p + shift).norm(dim=-1)) - r

    assert priors.curvature(lens, z, points).item() > 1.5 * sphere


def test_curvature_pairs_of_the_first_points_only():
    """``pairs=K``: partners (at the step's distance) for the first K of the P points only, and the term over
    [P points, K partners] equals the term over those K points and their partners alone; training's eikonal term
    keeps all P points."""
    g = torch.Generator().manual_seed(0)
    p = priors.ball_points(2, 64, g, "cpu")
    full = priors.curvature_points(p, g, pairs=16)
    assert full.shape == (2, 80, 3) and torch.equal(full[:, :64], p)
    torch.testing.assert_close((full[:, 64:] - p[:, :16]).norm(dim=-1), torch.full((2, 16), 0.02))
    sphere = lambda z, x: x.norm(dim=-1) - 0.5  # noqa: E731
    z = torch.zeros(2, 1)
    term = priors.curvature(sphere, z, full, band=0.5, pairs=16)
    assert term.item() > 0
    torch.testing.assert_close(term, priors.curvature(sphere, z, torch.cat([p[:, :16], full[:, 64:]], 1), band=0.5))
    dec = SDFDecoder(8, 16)
    zz = 0.1 * torch.randn(2, 8)
    terms = train_mod.prior_terms(dec, zz, {"ball": full}, {}, True, 16)
    torch.testing.assert_close(terms["eikonal"], priors.eikonal(dec, zz, p))
    torch.testing.assert_close(terms["curvature"], priors.curvature(dec, zz, full, pairs=16))


@pytest.mark.parametrize("activation", ["relu", "softplus", "smoothrelu"])
def test_priors_written_out_gradient_equals_autograd(activation):
    """An SDFDecoder's eikonal and curvature terms (its written-out xyz gradient, what training compiles) equal the
    autograd ones of the same decoder as a plain callable, values and gradients, in float64."""
    torch.manual_seed(0)
    dec = SDFDecoder(8, 16, activation, softplus_beta=20.0).double()
    dec.fit_sphere(radius=0.5, steps=20)
    z = (0.1 * torch.randn(2, 8, dtype=torch.float64)).requires_grad_(True)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    eik_p = priors.ball_points(2, 64, g(), "cpu").double()
    curv_p = priors.curvature_points(priors.ball_points(2, 64, g(), "cpu"), g()).double()
    plain = lambda zz, p: dec(zz, p)  # noqa: E731
    for term, points in ((priors.eikonal, eik_p), (lambda *a: priors.curvature(*a, band=0.3), curv_p)):
        a, b = term(dec, z, points), term(plain, z, points)
        assert a.item() > 0
        torch.testing.assert_close(a, b)
        params = [z, *dec.parameters()]
        grads = [torch.autograd.grad(t, params, allow_unused=True) for t in (a, b)]  # ReLU: f'' = 0
        for p, ga, gb in zip(params, *grads):
            torch.testing.assert_close(torch.zeros_like(p) if ga is None else ga,
                                       torch.zeros_like(p) if gb is None else gb)


def test_compiled_regularisers_equal_eager(tmp_path):
    """``compile=True``: one step's loss terms and gradients equal eager's, with every regulariser on (eikonal,
    mirror, central, axes, curvature), a learned frame and a smooth activation."""
    runs = [train_mod._setup(tiny(tmp_path / f"c{c}", compile=c, curvature_weight=1.0, activation="smoothrelu",
                                  axes_weight=1.0, learned_frame=True), None, False, True) for c in (True, False)]
    runs[1].encoder.load_state_dict(runs[0].encoder.state_dict())
    runs[1].decoder.load_state_dict(runs[0].decoder.state_dict())
    for idx in (torch.arange(3),):
        out = []
        for run in runs:
            terms, loss = train_mod._losses(run, idx, torch.Generator().manual_seed(0), 0.02)
            out.append((torch.stack(terms), torch.autograd.grad(loss, run.params)))
        (t_c, g_c), (t_e, g_e) = out
        on = [train_mod.TERMS.index(name) for name in ("eikonal", "mirror", "central", "axes", "curvature")]
        assert (t_e[on] > 0).all()
        torch.testing.assert_close(t_c, t_e, rtol=1e-4, atol=1e-7)
        for a, b in zip(g_c, g_e):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6 * max(1.0, b.abs().max().item()))


def test_curvature_weight_trains_and_logs(tmp_path):
    train(tiny(tmp_path / "run", epochs=2, curvature_weight=1.0), progress=False)
    rows = metrics(tmp_path / "run")
    assert all(r["curvature"] > 0 for r in rows)


def test_rays_per_step_draws_matching_rays_and_targets():
    """A random subset of each image's rays, every ray with its own target, different per shape and per step."""
    cfg = tiny("unused", rays=8, rays_per_step=5)
    R = 64
    ray_id = torch.arange(2 * R, dtype=torch.float32).reshape(2, R)  # shape s, ray r -> s * R + r
    rays = [ray_id[..., None].expand(-1, -1, 3), ray_id[..., None].expand(-1, -1, 3), ray_id, ray_id + 1,
            torch.ones(2, R, dtype=torch.bool)]
    g = torch.Generator().manual_seed(0)
    colors = ray_id[..., None].expand(-1, -1, 3) * 2
    (o, d, near, far, valid), target, (c,) = train_mod._step_rays(cfg, rays, ray_id, torch.tensor([1, 0]), g, (colors,))
    assert target.shape == (2, 5) and o.shape == (2, 5, 3) and valid.shape == (2, 5)
    assert torch.equal(o[..., 0], target) and torch.equal(d[..., 2], target) and torch.equal(far, target + 1)
    assert torch.equal(c[..., 1], 2 * target)  # each ray's pixel colour comes with it
    assert (target[0] >= R).all() and (target[1] < R).all()  # shape 1 first, as asked
    assert target[0].unique().numel() == 5  # drawn without repeats
    _, again, _ = train_mod._step_rays(cfg, rays, ray_id, torch.tensor([1, 0]), g)
    assert not torch.equal(again, target)
    all_rays, all_target, _ = train_mod._step_rays(tiny("unused", rays=8), rays, ray_id, torch.tensor([1]), g)
    assert torch.equal(all_target, ray_id[1:]) and torch.equal(all_rays[0], rays[0][1:])


class Interrupt(Exception):
    pass


def test_resume_continues_exactly(tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(tiny(full, epochs=4), progress=False)

    part = tmp_path / "part"
    saves = {"n": 0}
    real_save = train_mod.save_atomic

    def save_then_stop(obj, path):
        real_save(obj, path)
        saves["n"] += 1
        if saves["n"] == 2:
            raise KeyboardInterrupt  # as if ^C came right after epoch 2's checkpoint

    monkeypatch.setattr(train_mod, "save_atomic", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(part, epochs=4), progress=False)
    monkeypatch.setattr(train_mod, "save_atomic", real_save)
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
    from sdfsrn_fast.study.evaluate import main as eval_main

    assert eval_main([str(run), "--grid", "24", "--no-progress"]) == 0
    r = json.loads((run / "eval.json").read_text())
    assert len(r["per_shape"]) == 6
    for key in ("novel_mse", "novel_iou", "novel_iou_box", "chamfer", "volume_iou", "novel_depth_error",
                "novel_normal_error_box"):
        assert key in r
    assert 0 <= r["volume_iou"] <= 1 and r["novel_depth_error"] >= 0 and 0 <= r["novel_normal_error"] <= 180


def test_shape_metrics_of_the_truth_are_perfect():
    """The 3-D metrics of an analytic SDF against itself: Chamfer ~0, volumetric IoU 1."""
    from sdfsrn_fast.study.data import make_dataset
    from sdfsrn_fast.study.evaluate import shape_metrics

    ds = make_dataset(num_shapes=3, resolution=16)
    for i in range(3):
        exact = lambda z, p, i=i: ds.sdf(i, p[0])[None]  # noqa: E731
        m = shape_metrics(exact, torch.zeros(1), ds, i, resolution=32)
        # both sides subsample the same vertices differently: a hair above 0
        assert m["volume_iou"] == 1.0 and m["chamfer"] < 1e-3
    shrunk = lambda z, p: ds.sdf(0, p[0])[None] + 0.1  # noqa: E731  (shape 0 is a sphere: radius - 0.1)
    m = shape_metrics(shrunk, torch.zeros(1), ds, 0, resolution=32)
    assert abs(m["chamfer"] - 0.1) < 0.02 and m["volume_iou"] < 0.9


def test_surface_errors_of_the_truth_and_a_shifted_truth():
    """The novel-view depth and normal errors: 0 for the analytic surface against itself; a sphere 0.1 smaller in
    radius errs by at least 0.1 in depth on the rays both hit (the shift along a ray is at least the radial one, more
    towards the rim), and in normals (a ray meets the smaller sphere at another angle, except through the centre)."""
    from sdfsrn_fast.study.data import make_dataset
    from sdfsrn_fast.study.views import surface_errors

    ds = make_dataset(num_shapes=3, resolution=32)
    depth, normal, hit = ds.surface_maps(0, ds.novel_azimuth[0], ds.novel_elevation[0], 32)
    d_err, n_err = surface_errors(depth, normal, hit, depth, normal, hit)
    assert (d_err == 0).all() and (n_err < 0.01).all()  # arccos of 1 - 1 ulp: a few thousandths of a degree
    ds.sizes[0] -= 0.1  # shape 0 is a sphere
    d2, n2, h2 = ds.surface_maps(0, ds.novel_azimuth[0], ds.novel_elevation[0], 32)
    d_err, n_err = surface_errors(d2, n2, h2, depth, normal, hit)
    assert ((d_err > 0.0999) & (d_err < 0.2)).all() and (n_err > 1).all()


def test_view_aligned_ellipsoid_baseline():
    """The guess is exact where nothing is hidden: a ball (any depth guess), and an ellipsoid whose axis lies along
    the training view (the true depth); on the built-in ellipsoids the image-only guess falls short of 1."""
    from sdfsrn_fast.cameras import camera_frame
    from sdfsrn_fast.study.data import make_dataset
    from sdfsrn_fast.study.evaluate import view_aligned_ellipsoid_iou

    ds = make_dataset(num_shapes=1, resolution=24, num_novel=3, families=("ellipsoid",), seed=3)
    _, fwd, right, up = camera_frame(ds.azimuth, ds.elevation, ds.distance)
    for size, rot, depth in (([0.5] * 3, torch.eye(3), "mean"),
                             ([0.3, 0.6, 0.45], torch.stack([right[0], up[0], fwd[0]], dim=1), "true")):
        ds.sizes[0], ds.rotations[0] = torch.tensor(size), rot
        ds.novel_silhouettes[0] = ds.exact_silhouettes(0, ds.novel_azimuth[0], ds.novel_elevation[0], 24)
        assert view_aligned_ellipsoid_iou(ds, depth) > 0.99
    assert view_aligned_ellipsoid_iou(make_dataset(num_shapes=9, resolution=24), "mean") < 0.95
    with pytest.raises(ValueError, match="depth"):
        view_aligned_ellipsoid_iou(ds, "median")


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
    assert "rays_per_step" in _cli_error(capsys, ["--rays-per-step", "-1", "--out", str(tmp_path)])
    assert "unknown device" in _cli_error(capsys, ["--device", "warp9", "--out", str(tmp_path)])
    assert "unknown activation" in _cli_error(capsys, ["--activation", "tanh", "--out", str(tmp_path)])
    if not torch.cuda.is_available():
        assert "not available" in _cli_error(capsys, ["--device", "cuda", "--out", str(tmp_path)])


def test_mixed_precision_run_saves_and_resumes_its_precision(tmp_path, capsys):
    """--precision bf16 trains (the loss falls as in float32), is saved in config.json, and --resume keeps it;
    float16 on a CPU and unknown precisions are one clear line."""
    run = tmp_path / "run"
    train(tiny(run, epochs=10, precision="bf16"), progress=False)
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    rows = metrics(run)
    assert rows[-1]["train_mse"] < rows[0]["train_mse"] / 2
    assert train_mod.main(["--resume", str(run), "--epochs", "11", "--no-progress", "--figures", "false"]) == 0
    assert json.loads((run / "config.json").read_text())["precision"] == "bf16"
    assert len(metrics(run)) == 11
    assert "unknown precision" in _cli_error(capsys, ["--precision", "8", "--out", str(tmp_path / "x")])
    if not torch.cuda.is_available():
        assert "CUDA and MPS" in _cli_error(capsys, ["--precision", "16", "--device", "cpu",
                                                     "--out", str(tmp_path / "y")])


def test_fresh_run_never_replaces_an_existing_one(tmp_path, capsys):
    """A forgotten --resume is an error, not a lost run; --overwrite (overwrite=True) starts afresh on purpose."""
    run = tmp_path / "run"
    train(tiny(run, epochs=1), progress=False)
    before = (run / "checkpoint.pt").read_bytes()
    line = _cli_error(capsys, ["--out", str(run), "--epochs", "1"])
    assert "already holds a run" in line and "--resume" in line
    assert (run / "checkpoint.pt").read_bytes() == before
    with pytest.raises(TrainError, match="already holds a run"):
        train(tiny(run, epochs=1), progress=False)
    train(tiny(run, epochs=2), progress=False, overwrite=True)
    assert [r["epoch"] for r in metrics(run)] == [1, 2]


def test_resume_with_incompatible_config(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny(run, epochs=1), progress=False)
    line = _cli_error(capsys, ["--resume", str(run), "--hidden", "64", "--epochs", "3"])
    assert "hidden" in line
    line = _cli_error(capsys, ["--resume", str(run), "--preset", "study"])
    assert "preset" in line
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])  # e.g. a copy cut short
    line = _cli_error(capsys, ["--resume", str(run)])
    assert "truncated or not written by sdfsrn-train" in line


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


def test_mirror_union_baseline():
    """Shapes the mirror leaves unchanged score 1 (a ball; a box with an axis along the training view); a tilted box
    united with its mirror image sticks out in some novel view."""
    from sdfsrn_fast.cameras import camera_frame
    from sdfsrn_fast.study.data import make_dataset
    from sdfsrn_fast.study.evaluate import mirror_union_iou

    ds = make_dataset(num_shapes=2, resolution=24, num_novel=3, families=("sphere", "box"), seed=4)
    assert mirror_union_iou(ds)["sphere"] == 1.0
    _, fwd, right, up = camera_frame(ds.azimuth, ds.elevation, ds.distance)
    tilted = ds.rotations[1].clone()
    ds.rotations[1] = torch.stack([right[1], up[1], fwd[1]], dim=1)
    ds.novel_silhouettes[1] = ds.exact_silhouettes(1, ds.novel_azimuth[1], ds.novel_elevation[1], 24)
    assert mirror_union_iou(ds)["box"] == 1.0
    ds.rotations[1] = tilted
    ds.novel_silhouettes[1] = ds.exact_silhouettes(1, ds.novel_azimuth[1], ds.novel_elevation[1], 24)
    assert mirror_union_iou(ds)["box"] < 0.95


def test_shading_loss_vanishes_on_the_true_surface():
    """The shading term against the training images: 0 (to float32 round-off) for the true surface with its own
    normals, whatever the albedo (estimated, not read); clearly positive for a sphere's normals on a box."""
    from sdfsrn_fast import RenderOutput
    from sdfsrn_fast.study.data import make_dataset

    ds = make_dataset(num_shapes=3, resolution=32, seed=1)
    maps = [ds.surface_maps(i, ds.azimuth[i], ds.elevation[i], 32) for i in range(3)]
    depth, normal, hit = (torch.stack([m[k][0] for m in maps]).flatten(1, 2) for k in range(3))
    colors = ds.images.flatten(2).transpose(1, 2)
    target = ds.silhouettes.flatten(1)
    out = RenderOutput(target, depth, normal.reshape(3, -1, 3), hit)
    assert train_mod.shading_loss(out, target, colors, ds.lights, ds.ambient, ds.diffuse) < 1e-10
    box = ds.families.index("box")
    wrong = normal.reshape(3, -1, 3).clone()
    wrong[box] = torch.nn.functional.normalize(torch.randn_like(wrong[box]), dim=-1)
    out = RenderOutput(target, depth, wrong, hit)
    assert train_mod.shading_loss(out, target, colors, ds.lights, ds.ambient, ds.diffuse) > 1e-3


def test_shading_run_trains_and_logs_its_term(tmp_path):
    """``--shading-weight`` with a silhouette-only start: the shading term is 0 before ``--shading-from`` and
    positive after; the run is labelled by its config and resumes. With the mirror prior off (as in the shading
    preset) its term is not computed (logged 0) and the central one still is."""
    run = tmp_path / "run"
    cfg = tiny(run, epochs=4, shading_weight=1.0, shading_from=2, shading_margin=1, activation="smoothrelu", rays=64,
               rays_per_step=100, mirror_weight=0.0)
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["shading"] > 0 for r in rows] == [False, False, True, True]
    assert all(r["mirror"] == 0 and r["central"] > 0 for r in rows)
    assert json.loads((run / "config.json").read_text())["shading_weight"] == 1.0
    with pytest.raises(TrainError, match="--rays must be"):
        train(tiny(tmp_path / "other", shading_weight=1.0, rays=16), progress=False)


def test_interior_pixels_leave_out_the_contour():
    """``shading_margin`` m keeps the silhouette pixels whose (2m + 1)-square lies inside: a 6x6 square in an
    8x8 image keeps its 4x4 core at m = 1, all of itself at m = 0; and the shading loss then ignores the rest."""
    sil = torch.zeros(1, 8, 8)
    sil[0, 1:7, 1:7] = 1
    targets = sil.reshape(1, -1)
    assert torch.equal(train_mod.interior_pixels(targets, 8, 0), targets > 0.5)
    core = torch.zeros(1, 8, 8, dtype=torch.bool)
    core[0, 2:6, 2:6] = True
    assert torch.equal(train_mod.interior_pixels(targets, 8, 1), core.reshape(1, -1))
    from sdfsrn_fast import RenderOutput

    normal = torch.tensor([0.0, 0.0, 1.0]).expand(1, 64, 3)
    colors = torch.full((1, 64, 3), 0.5)
    colors.view(1, 8, 8, 3)[0, 1, 1:7] = 0.9  # the contour's top row is off; the core is flat
    out = RenderOutput(targets, torch.ones(1, 64), normal, targets > 0.5)
    light = torch.tensor([[0.0, 0.0, 1.0]])
    assert train_mod.shading_loss(out, targets, colors, light, 0.25, 0.75) > 1e-3
    assert train_mod.shading_loss(out, targets, colors, light, 0.25, 0.75,
                                  train_mod.interior_pixels(targets, 8, 1)) < 1e-10
