"""The learned canonical frame (``--learned-frame``): rotations from 6 numbers, a frame that is exactly a rotation of
the decoder's input (views, surfaces, normals, 3-D metrics and the training loss see the same shapes), and a run
that learns it through the rays' gradients."""

import copy
import json
import math

import pytest
import torch

from sdfsrn_fast.models import Encoder, SDFDecoder
from sdfsrn_fast.study import train as train_mod
from sdfsrn_fast.study.config import Config
from sdfsrn_fast.study.data import make_dataset
from sdfsrn_fast.study.evaluate import shape_metrics
from sdfsrn_fast.study.frames import IDENTITY_6D, Framed, rotation_6d
from sdfsrn_fast.study.train import TrainError, train
from sdfsrn_fast.study.views import predict_surfaces

from test_train import tiny


def a_rotation(seed=0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return (q * torch.sign(torch.linalg.det(q))).float()  # det +1


def test_rotation_6d_is_a_rotation_and_recovers_one():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    r = rotation_6d(x)
    torch.testing.assert_close(r.transpose(1, 2) @ r, torch.eye(3).expand(50, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(50), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotation_6d(torch.tensor([IDENTITY_6D])), torch.eye(3)[None])
    rot = a_rotation()
    torch.testing.assert_close(rotation_6d(torch.cat([rot[:, 0], rot[:, 1]])[None])[0], rot, atol=1e-6, rtol=0)


def fixed_frame(encoder, rot: torch.Tensor) -> Framed:
    """A Framed encoder whose frame is ``rot`` for every image."""
    framed = Framed(encoder, encoder.resolution)
    with torch.no_grad():
        framed.frame_net.fc2.bias.copy_(torch.cat([rot[:, 0], rot[:, 1]]))
    return framed


def turned_decoder(decoder: SDFDecoder, rot: torch.Tensor) -> SDFDecoder:
    """The decoder composed with the rotation: ``f'(z, p) = f(z, p rot)`` (its xyz columns times rot^T)."""
    out = copy.deepcopy(decoder)
    L, H = decoder.latent_dim, decoder.hidden_dim
    with torch.no_grad():
        out.layers[0].weight[:, L:] = decoder.layers[0].weight[:, L:] @ rot.t()
        out.layers[2].weight[:, H + L :] = decoder.layers[2].weight[:, H + L :] @ rot.t()
    return out


def test_a_frame_is_a_rotation_of_the_decoders_input():
    """A run's frame R and its decoder f see the shape the decoder f(z, p R) alone sees: the same silhouettes, depth
    and world normals from novel views, and the same 3-D metrics."""
    torch.manual_seed(0)
    ds = make_dataset(num_shapes=2, resolution=16, seed=2)
    cfg = Config(eval_samples=32, backend="compiled")
    decoder = SDFDecoder(latent_dim=8, hidden_dim=32, activation="smoothrelu")
    decoder.fit_sphere(radius=0.5, steps=50, seed=0)
    with torch.no_grad():  # an ellipsoid-like shape, so that a rotation shows
        decoder.layers[0].weight[:, 8:] *= torch.tensor([1.6, 1.0, 0.7])
    encoder, rot = Encoder(latent_dim=8, resolution=16), a_rotation(3)
    plain = Encoder(latent_dim=8, resolution=16)
    plain.load_state_dict(encoder.state_dict())
    az, el = ds.novel_azimuth[:2, :3], ds.novel_elevation[:2, :3]
    framed = predict_surfaces(fixed_frame(encoder, rot), decoder, ds, [0, 1], az, el, cfg, "cpu", resolution=16)
    turned = predict_surfaces(plain, turned_decoder(decoder, rot), ds, [0, 1], az, el, cfg, "cpu", resolution=16)
    sil, depth, normal, hit = framed
    assert 0.1 < (sil > 0.5).float().mean() < 0.9 and hit.any()
    torch.testing.assert_close(sil, turned[0], atol=1e-4, rtol=0)
    both = hit & turned[3]
    assert (hit != turned[3]).float().mean() < 0.01  # a ray at the rim may flip on round-off
    torch.testing.assert_close(depth[both], turned[1][both], atol=1e-3, rtol=0)
    torch.testing.assert_close(normal[both], turned[2][both], atol=2e-3, rtol=0)
    z = encoder(ds.images[:1])[0].detach()
    a = shape_metrics(decoder, z, ds, 0, resolution=24, frame=rot)
    b = shape_metrics(turned_decoder(decoder, rot), z, ds, 0, resolution=24)
    assert a["volume_iou"] == pytest.approx(b["volume_iou"], abs=2e-3)
    assert a["chamfer"] == pytest.approx(b["chamfer"], abs=2e-3)


def test_training_loss_in_a_frame_equals_the_turned_decoders(tmp_path):
    """One step's silhouette and shading terms (the light turned into the frame) with the frame R equal those of the
    decoder f(z, p R) without a frame. (The priors' points are uniform in the ball, whose law a rotation keeps.)"""
    cfg = tiny(tmp_path / "run", shading_weight=1.0, shading_from=0, activation="smoothrelu", rays=64,
               rays_per_step=0, learned_frame=True)
    rot = a_rotation(5)
    run = train_mod._setup(cfg, None, False, True)
    run.encoder = fixed_frame(run.encoder.encoder, rot)
    idx = torch.tensor([0, 1, 2])
    framed, _ = train_mod._losses(run, idx, torch.Generator().manual_seed(7), 0.02, shade=True)
    run.encoder, run.decoder = run.encoder.encoder, turned_decoder(run.decoder, rot)
    turned, _ = train_mod._losses(run, idx, torch.Generator().manual_seed(7), 0.02, shade=True)
    for name in ("train_mse", "shading"):
        a, b = (terms[train_mod.TERMS.index(name)].item() for terms in (framed, turned))
        assert a > 1e-4 and a == pytest.approx(b, rel=2e-3), name


def test_learned_frame_run_trains_its_frame_and_resumes(tmp_path):
    """``--learned-frame``: the frame network starts at the identity and moves (it gets gradients through the rays),
    the checkpoint holds it, the run resumes and evaluates; cpp, which gives rays no gradient, is refused."""
    run = tmp_path / "run"
    cfg = tiny(run, epochs=3, learned_frame=True, shading_weight=1.0, shading_from=1, activation="smoothrelu",
               rays=64, rays_per_step=100)
    result = train(cfg, progress=False)
    fc2 = result.encoder.frame_net.fc2
    assert fc2.weight.abs().max() > 0 and not torch.equal(fc2.bias, torch.tensor(IDENTITY_6D))
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert any(k.startswith("frame_net.") for k in ckpt["encoder"])
    assert json.loads((run / "config.json").read_text())["learned_frame"] is True
    assert train_mod.main(["--resume", str(run), "--epochs", "4", "--no-progress", "--figures", "false"]) == 0
    from sdfsrn_fast.study.evaluate import main as eval_main

    assert eval_main([str(run), "--grid", "16", "--no-progress"]) == 0
    angle = math.degrees(torch.arccos(((torch.linalg.diagonal(rotation_6d(fc2.bias[None].detach())).sum() - 1) / 2)
                                      .clamp(-1, 1)))
    assert angle < 90  # small steps from the identity
    with pytest.raises(TrainError, match="rays' gradients"):
        train(tiny(tmp_path / "cpp", learned_frame=True, backend="cpp"), progress=False)


def test_frame_network_learns_at_its_own_rate(tmp_path):
    """``--frame-lr-scale K``: the frame network in an Adam group of its own whose learning rate stays K times the
    schedule's through an epoch; every other parameter in the first group."""
    run = train_mod._setup(tiny(tmp_path / "run", learned_frame=True, frame_lr_scale=10.0), None, False, True)
    groups = run.opt.param_groups
    assert [g["scale"] for g in groups] == [1.0, 10.0]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in run.encoder.frame_net.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(run.params)
    train_mod._train_epoch(run, 5)
    assert groups[0]["lr"] == pytest.approx(train_mod.lr_at(run.cfg, 5))
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])


def test_light_and_mirrors_stay_float32_under_autocast():
    """The light and the view mirrors turned into the frame keep float32 inside a bfloat16 autocast region (as the
    rays do): ``l R`` and ``R^T M R`` to float32 round-off."""
    from sdfsrn_fast.study.frames import light_and_mirrors_to_frame, to_frame

    rot = rotation_6d(torch.randn(4, 6, generator=torch.Generator().manual_seed(2)))
    light = torch.nn.functional.normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(3)), dim=-1)
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0])).expand(4, 3, 3)
    rays = (torch.randn(4, 5, 3), torch.randn(4, 5, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        l_f, m_f = light_and_mirrors_to_frame(light, mirror, rot)
        o_f, d_f = to_frame(rays, rot)
    assert {t.dtype for t in (l_f, m_f, o_f, d_f)} == {torch.float32}
    torch.testing.assert_close(l_f, torch.einsum("bi,bij->bj", light, rot))
    torch.testing.assert_close(m_f, rot.transpose(1, 2) @ mirror @ rot)
    torch.testing.assert_close(o_f, rays[0] @ rot)
