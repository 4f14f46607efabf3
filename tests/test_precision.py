"""Mixed precision (docs/contract.md, Precision): ``render`` inside ``torch.autocast`` against the float64
reference by flash-attention's low-precision rule, the dtypes it hands back, and that nothing changes outside
autocast."""

import copy

import pytest
import torch

from sdfsrn_fast import SDFDecoder, render
from sdfsrn_fast.backends.compiled import compiled_render
from sdfsrn_fast.backends._ops import decoder_weights

from conftest import make_rays, rel_err

FAST = ["compiled"]


def surface_case(hidden, latent=16, S=48, seed=13):
    """A decoder with a surface (fitted to a sphere's SDF, as in training), rays through it and a loss weight."""
    torch.manual_seed(0)
    dec = SDFDecoder(latent_dim=latent, hidden_dim=hidden)
    dec.fit_sphere(radius=0.45, steps=100)
    rays = make_rays(batch=2, height=20, width=20, seed=seed)
    z = (0.1 * torch.randn(2, latent)).requires_grad_(True)
    target = (torch.linalg.cross(rays[0], rays[1], dim=-1).norm(dim=-1) < 0.35).float()
    return dec, rays, z, target - 0.5, S


def sil_and_grads(backend, dec, z, rays, S, weight, tau, amp_dtype=None, grad_eps=0.0):
    with torch.autocast("cpu", dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        sil = render(dec, z, *rays, num_samples=S, tau=tau, tau_min=tau / 2, grad_eps=grad_eps, backend=backend)
    return sil, torch.autograd.grad((sil * weight.to(sil.dtype)).sum(), [z, *dec.parameters()])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("hidden,S,tau", [(32, 16, 0.01), (64, 48, 0.01), (256, 64, 0.01), (256, 64, 0.05)])
def test_bfloat16_autocast_against_float64_reference(backend, hidden, S, tau):
    """Flash-attention's rule: under autocast(bfloat16), the fast backend's silhouettes and every gradient err from
    the float64 reference by at most 2x what the plain reference errs under the same autocast. Measured
    (2026-11-28, this test's cases): at most 0.80x, since the fast path keeps the xyz parts of layers 1 and 3 and the
    output layer in float32 where the reference's autocast rounds them."""
    dec, rays, z, weight, S = surface_case(hidden, S=S)
    dec64 = copy.deepcopy(dec).double()
    rays64 = tuple(t.double() if t.is_floating_point() else t for t in rays)
    z64 = z.detach().double().requires_grad_(True)
    sil64, g64 = sil_and_grads("reference", dec64, z64, rays64, S, weight.double(), tau)
    sil_ref, g_ref = sil_and_grads("reference", dec, z, rays, S, weight, tau, torch.bfloat16)
    sil_fast, g_fast = sil_and_grads(backend, dec, z, rays, S, weight, tau, torch.bfloat16)
    assert rel_err(sil_ref, sil64) > 1e-4  # the reference really ran in bfloat16 (float32 errs ~1e-7 here)
    assert rel_err(sil_fast, sil64) <= 2 * rel_err(sil_ref, sil64)
    for a, b, ref in zip(g_fast, g64, g_ref):
        assert rel_err(a, b) <= 2 * rel_err(ref, b)


@pytest.mark.parametrize("backend", FAST + ["reference"])
def test_mixed_precision_hands_back_float32(backend):
    """Silhouettes and gradients float32, parameters untouched and float32; z may arrive in bfloat16 (an encoder
    under autocast) and gets a bfloat16 gradient through the cast."""
    dec, rays, _, weight, S = surface_case(32, S=16)
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    z_low = (0.1 * torch.randn(2, 16)).to(torch.bfloat16).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sil = render(dec, z_low, *rays, num_samples=S, tau=0.02, tau_min=0.01, backend=backend)
    assert sil.dtype == torch.float32
    (sil * weight).sum().backward()
    assert z_low.grad.dtype == torch.bfloat16 and z_low.grad.abs().sum() > 0
    for name, p in dec.named_parameters():
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, name
        assert torch.equal(p.detach(), before[name]), name


def test_outside_autocast_nothing_changes():
    """A disabled autocast region, or none, gives the float32 path bit for bit; an enabled one differs."""
    dec, rays, z, weight, S = surface_case(32, S=16)
    plain = render(dec, z, *rays, num_samples=S)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        off = render(dec, z, *rays, num_samples=S)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        on = render(dec, z, *rays, num_samples=S)
    assert torch.equal(plain, off)
    assert not torch.equal(plain, on)
    assert rel_err(on, plain) < 1e-2


def test_float64_ignores_autocast():
    """Autocast leaves float64 alone (as PyTorch's autocast does): the float64 call is exact under it too."""
    dec, rays, z, weight, S = surface_case(32, S=16)
    dec64 = copy.deepcopy(dec).double()
    rays64 = tuple(t.double() if t.is_floating_point() else t for t in rays)
    z64 = z.detach().double()
    plain = render(dec64, z64, *rays64, num_samples=S, backend="compiled")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = render(dec64, z64, *rays64, num_samples=S, backend="compiled")
    assert torch.equal(plain, under)


def test_wrong_z_dtype_outside_autocast_is_an_error():
    dec, rays, _, _, S = surface_case(32, S=16)
    with pytest.raises(TypeError, match="`z` is torch.bfloat16"):
        render(dec, torch.zeros(2, 16, dtype=torch.bfloat16), *rays, num_samples=S)


@pytest.mark.parametrize("jitter", [False, True])
def test_opcheck_bfloat16(jitter):
    dec, (o, d, near, far, valid), z, _, S = surface_case(24, S=8)
    jit = torch.rand(near.shape) - 0.5 if jitter else None
    ws = [w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)]
    args = (z, o, d, near, far, valid, jit, ws, S, torch.tensor(0.05, dtype=torch.float64),
            torch.tensor(0.02, dtype=torch.float64), 1e-4, "relu", 100.0, torch.bfloat16)
    torch.library.opcheck(compiled_render.forward, args)


def test_autocast_inside_a_compiled_step():
    """A user's step compiled with fullgraph=True, autocast inside it: the same loss and gradients as in eager."""
    torch._dynamo.reset()
    dec, rays, z, weight, S = surface_case(32, S=16)

    def step(z):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sil = render(dec, z, *rays, num_samples=S, tau=0.02, tau_min=0.01, backend="compiled")
        return (sil * weight).sum()

    (g_e,) = torch.autograd.grad(step(z), z)
    (g_c,) = torch.autograd.grad(torch.compile(step, fullgraph=True)(z), z)
    torch.testing.assert_close(g_c, g_e, rtol=1e-5, atol=1e-7)  # the same op, the same kernels: round-off only
