"""The fast backends on a CUDA GPU against the float64 reference on the CPU (skipped where there is no GPU).

CI has no GPU; these run where one is lent: ``python -m pytest tests/test_cuda.py``."""

import math

import pytest
import torch

from sdfsrn_fast import available_backends, render
from sdfsrn_fast.study.train import preset_config, train

from conftest import make_rays, rel_err, requires_cuda, small_decoder

pytestmark = requires_cuda


def _grads(decoder, z, rays, S, weight, backend, grad_eps=0.0):
    sil = render(decoder, z, *rays, num_samples=S, tau=0.05, tau_min=0.02, grad_eps=grad_eps, backend=backend)
    return sil, torch.autograd.grad((sil * weight).sum(), [z, *decoder.parameters()])


@pytest.mark.parametrize("backend", ["compiled", "triton"])
@pytest.mark.parametrize("grad_eps", [0.0, 1e-4])
def test_cuda_matches_float64_reference(backend, grad_eps):
    """Silhouettes and gradients on the GPU in exact float32 (``"highest"``; the triton backend's bfloat16 screen and
    float32 refinement) within the float32 reference's own error (x4, plus the round-off of one float32 sum) of the
    float64 CPU reference; grad_eps 1e-4 within 1e-3 relative."""
    assert backend in available_backends()
    assert torch.get_float32_matmul_precision() == "highest"
    dec64 = small_decoder(latent_dim=8, hidden_dim=32, dtype=torch.float64, seed=1)
    dec32 = small_decoder(latent_dim=8, hidden_dim=32, dtype=torch.float32, seed=1).cuda()
    rays64 = make_rays(batch=3, height=17, width=19, dtype=torch.float64, seed=2)
    rays32 = tuple((t.float() if t.is_floating_point() else t).cuda() for t in rays64)
    z64 = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    z32 = z64.detach().float().cuda().requires_grad_(True)
    w64 = torch.randn(3, 17 * 19, dtype=torch.float64)
    sil64, g64 = _grads(dec64, z64, rays64, 24, w64, "reference")
    ref32 = _grads(dec32, z32, rays32, 24, w64.float().cuda(), "reference")
    fast = _grads(dec32, z32, rays32, 24, w64.float().cuda(), backend, grad_eps)
    slack = torch.finfo(torch.float32).eps * math.sqrt(3 * 17 * 19 * 24)
    assert rel_err(fast[0], sil64) <= 4 * rel_err(ref32[0], sil64) + slack
    for a, b, r in zip(fast[1], g64, ref32[1]):
        bound = 4 * rel_err(r, b) + slack
        assert rel_err(a, b) <= (bound if grad_eps == 0 else bound + 1e-3)


def test_cuda_training_runs_and_loss_falls(tmp_path):
    cfg = preset_config("quick", num_shapes=6, epochs=30, rays=16, samples=16, hidden=64, eval_every=0,
                        out=str(tmp_path / "run"), figures=False, device="cuda")
    result = train(cfg, progress=False)
    first = float(open(tmp_path / "run" / "metrics.jsonl").readline().split('"train_mse": ')[1].split(",")[0])
    assert result.summary["train_mse"] < 0.5 * first
    assert next(result.decoder.parameters()).is_cuda


@pytest.mark.parametrize("backend", ["compiled", "triton"])
def test_cuda_bad_values_name_the_argument(backend):
    """On CUDA the value checks are read after the render is queued (no idle GPU while the host prepares it): the
    errors are the same as on the CPU, and a good call after a bad one runs. (The shapes of the test above: nothing
    new to compile.)"""
    dec = small_decoder(latent_dim=8, hidden_dim=32, seed=1).cuda()
    o, d, near, far, valid = (t.cuda() for t in make_rays(batch=3, height=17, width=19, seed=2))
    z = torch.randn(3, 8, device="cuda")
    with pytest.raises(ValueError, match="`z` contains NaN"):
        render(dec, torch.full_like(z, float("nan")), o, d, near, far, valid, num_samples=24, backend=backend)
    bad_far = far.clone()
    bad_far[1, 3] = float("inf")
    with pytest.raises(ValueError, match="`far` contains NaN or inf"):
        render(dec, z, o, d, near, bad_far, valid, num_samples=24, backend=backend)
    with pytest.raises(ValueError, match="jitter"):
        render(dec, z, o, d, near, far, valid, num_samples=24, jitter=torch.full_like(near, 0.5), backend=backend)
    sil = render(dec, z, o, d, near, far, valid, num_samples=24, backend=backend)
    ref = render(dec, z, o, d, near, far, valid, num_samples=24, backend="reference")
    torch.testing.assert_close(sil, ref, rtol=1e-4, atol=1e-5)
