"""The proxies' frames (``--proxy-frame``): the proxies' closed-form renderers against the dataset's exact images, the
fit recovering the true frames of the dataset's boxes and ellipsoids, the table of frames looked up by image, and a
run that fits them once, keeps them in its checkpoint, resumes and evaluates."""

import json
import math

import pytest
import torch

from sdfsrn_fast.study import train as train_mod
from sdfsrn_fast.study.config import preset_config
from sdfsrn_fast.study.data import make_dataset
from sdfsrn_fast.study.evaluate import cube_rotations, frame_error
from sdfsrn_fast.study.frames import ProxyFramed, frames_of
from sdfsrn_fast.study.proxies import fit_proxy_frames, proxy_losses
from sdfsrn_fast.study.train import TrainError, train
from sdfsrn_fast.study.views import camera_rays
from sdfsrn_fast.models import Encoder

from test_train import tiny


def training_view(ds):
    o, d = camera_rays(ds, ds.azimuth, ds.elevation, ds.resolution, "cpu")[:2]
    n = len(ds)
    return o, d, ds.silhouettes.reshape(n, -1).float(), ds.images.flatten(2).transpose(1, 2).float()


def test_frame_error_is_the_angle_up_to_the_cubes_rotations():
    rot = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64))[0]
    cube = cube_rotations()
    assert len(cube) == 24 and len({tuple(m.flatten().tolist()) for m in cube}) == 24
    assert max(frame_error(rot, rot @ m) for m in cube) < 1e-5
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    about_z = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    assert frame_error(rot, rot @ about_z @ cube[7]) == pytest.approx(10, abs=1e-4)
    about_diagonal = torch.linalg.matrix_exp(torch.tensor([[0.0, -1, 1], [1, 0, -1], [-1, 1, 0]]) * 0.3)
    assert frame_error(torch.eye(3), about_diagonal) > 20  # no cube rotation undoes a turn about the diagonal by 30


def test_proxies_render_the_datasets_images_at_the_truth():
    """A box or an ellipsoid proxy with a shape's true rotation and half-axes, made sharp, has the silhouette and the
    shading of its exact image (the albedo fitted in closed form); with a wrong rotation the errors grow, and a box's
    image is not an ellipsoid's."""
    ds = make_dataset(num_shapes=6, resolution=32, seed=0)
    o, d, sil, colors = training_view(ds)
    for i in (1, 2, 4, 5):  # boxes and ellipsoids
        args = (o[i], d[i], sil[i], colors[i], ds.lights[i].float(), ds.ambient, ds.diffuse)
        truth = ds.rotations[i].float(), ds.sizes[i].float()
        sil_loss, shade_loss = proxy_losses(ds.families[i], *truth, *args, soft=1e-4)  # sharp: the exact image
        assert sil_loss < 1e-3 and shade_loss < 1e-6, (i, sil_loss, shade_loss)
        sil_loss, shade_loss = proxy_losses(ds.families[i], *truth, *args)  # as soft as the fit's end
        assert sil_loss < 0.01 and shade_loss < 0.01, (i, sil_loss, shade_loss)
        turned = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.4, 0.2], [0.4, 0.0, -0.3], [-0.2, 0.3, 0.0]]))
        wrong = proxy_losses(ds.families[i], truth[0] @ turned, truth[1], *args)
        assert wrong[0] + wrong[1] > 5 * (sil_loss + shade_loss) + 0.005
        other = "ellipsoid" if ds.families[i] == "box" else "box"
        assert sum(proxy_losses(other, *truth, *args)) > sil_loss + shade_loss + 0.005


def test_fit_recovers_the_frames_of_boxes_and_ellipsoids():
    """From random starts, the fit finds each box's frame (mod the cube's rotations) and each ellipsoid's longest
    axis (its other two are nearly equal in shape 5, which leaves them free), the half-axes, and the proxy of the
    shape's own family wins."""
    ds = make_dataset(num_shapes=6, resolution=64, seed=0)
    fit = fit_proxy_frames(ds, seed=0)
    assert fit.frames.shape == (6, 3, 3) and fit.half_axes.shape == (6, 3) and len(fit.proxy) == 6
    torch.testing.assert_close(fit.frames.transpose(1, 2) @ fit.frames, torch.eye(3).expand(6, 3, 3), atol=1e-5,
                               rtol=0)
    for i in (1, 2, 4, 5):
        assert fit.proxy[i] == ds.families[i], i
        if ds.families[i] == "box":
            assert frame_error(ds.rotations[i], fit.frames[i]) < 3, i
        else:
            true_axis = ds.rotations[i][:, ds.sizes[i].argmax()]
            fit_axis = fit.frames[i][:, fit.half_axes[i].argmax()]
            assert math.degrees(math.acos(min(1.0, abs(true_axis @ fit_axis).item()))) < 10, i
        assert sorted(fit.half_axes[i].tolist()) == pytest.approx(sorted(ds.sizes[i].tolist()), abs=0.05)


def test_proxy_framed_looks_frames_up_by_image():
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    frames = torch.linalg.qr(torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(1)))[0]
    framed = ProxyFramed(Encoder(latent_dim=8, resolution=16))
    with pytest.raises(ValueError, match="holds no frames"):
        framed.frames(images)
    framed.set_frames(images, frames)
    order = torch.tensor([3, 0, 4, 4])
    torch.testing.assert_close(frames_of(framed, images[order]), frames[order])
    torch.testing.assert_close(framed(images), framed.encoder(images))
    with pytest.raises(ValueError, match=r"no frame for image\(s\) \[1\]"):
        framed.frames(torch.stack([images[0], images[1] + 0.01]))
    with pytest.raises(ValueError, match="frames must be"):
        framed.set_frames(images, frames[:4])
    loaded = ProxyFramed(Encoder(latent_dim=8, resolution=16))  # empty: the checkpoint's table, however long
    loaded.load_state_dict(framed.state_dict())
    torch.testing.assert_close(loaded.frames(images[order]), frames[order])


def test_proxy_frame_run_fits_once_keeps_its_frames_and_resumes(tmp_path, monkeypatch):
    """``--proxy-frame``: the frames are fitted at the start (proxy_frames.json names each image's proxy), are what
    the encoder gives for the training images, stay in the checkpoint, are not fitted again on resume, and the run
    evaluates; they need no rays' gradient, so cpp may train them; with --learned-frame it is refused."""
    calls = []

    def quick_fit(ds, **kw):
        calls.append(len(ds))
        return fit_proxy_frames(ds, **dict(kw, starts=2, steps=20, stride=4))

    monkeypatch.setattr(train_mod, "fit_proxy_frames", quick_fit)
    run = tmp_path / "run"
    result = train(tiny(run, epochs=2, proxy_frame=True, shading_weight=1.0, shading_from=1, rays=64,
                        rays_per_step=100, activation="smoothrelu", axes_weight=1.0), progress=False)
    assert calls == [6]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["axes"] > 0 and rows[-1]["shading"] > 0  # the shading preset's terms: the three planes in the frame
    preset = preset_config("shading", out=str(run))
    assert preset.proxy_frame and preset.axes_weight > 0 and preset.central_weight == 0
    fitted = json.loads((run / "proxy_frames.json").read_text())
    assert len(fitted["images"]) == 6 and {r["proxy"] for r in fitted["images"]} <= {"box", "ellipsoid"}
    assert result.summary["proxy_fit_time_s"] == fitted["fit_time_s"]
    ds = make_dataset(num_shapes=6, resolution=64, seed=0)
    table = result.encoder.frames(ds.images)
    assert not torch.allclose(table, torch.eye(3).expand(6, 3, 3))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    torch.testing.assert_close(ckpt["encoder"]["table"], table)
    assert train_mod.main(["--resume", str(run), "--epochs", "3", "--no-progress", "--figures", "false"]) == 0
    assert calls == [6]
    torch.testing.assert_close(torch.load(run / "checkpoint.pt", weights_only=False)["encoder"]["table"], table)
    from sdfsrn_fast.study.evaluate import main as eval_main

    assert eval_main([str(run), "--grid", "16", "--no-progress"]) == 0
    evaluated = json.loads((run / "eval.json").read_text())
    assert 0 <= evaluated["frame_error_box"] <= 63 and "frame_error" in evaluated["per_shape"][1]
    from sdfsrn_fast.study.report import page_data

    assert page_data(run)["supervision"] == "silhouette + shading, one view; box / ellipsoid proxy frames"
    with pytest.raises(TrainError, match="choose one"):
        train(tiny(tmp_path / "both", learned_frame=True, proxy_frame=True), progress=False)
    train(tiny(tmp_path / "cpp", epochs=1, proxy_frame=True, backend="cpp"), progress=False)
    assert calls == [6, 6]
