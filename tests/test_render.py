"""Every fast backend against the reference (docs/contract.md): gradcheck in float64, float32 against a float64
reference by the flash-attention rule, awkward sizes, invalid rays, determinism, the sparse backward's error,
memory, and the compiled backend's bounded recompilation."""

import copy
import inspect
import math

import pytest
import torch

from sdfsrn_fast import SDFDecoder, render
from sdfsrn_fast.backends import compiled as compiled_backend
from sdfsrn_fast.backends import fused
from sdfsrn_fast.backends._instrument import recording
from sdfsrn_fast.backends._ops import decoder_weights
from sdfsrn_fast.backends.compiled import compiled_render
from sdfsrn_fast.backends.fused import Kernels, fused_backward, fused_forward, mlp_backward, mlp_forward_gather

from conftest import make_call, make_rays, picked, rel_err, small_decoder

# The fused algorithm called directly (no autograd) with eager kernels and a tiny chunk (many chunks, the last one
# padded), and the public compiled backend (its custom ops through autograd, torch.compile-d kernels).
SMALL_CHUNKS = Kernels(mlp_forward_gather, mlp_backward, 7)


def fused_eager(decoder, z, rays, S, weight=None, tau=0.1, tau_min=0.05, grad_eps=0.0, jitter=None,
                kernels=SMALL_CHUNKS):
    """Silhouettes and the gradients of sum(weight * sil) w.r.t. z and every decoder weight, by the fused forward
    and backward functions themselves."""
    call = make_call(decoder, z.detach(), rays, S, tau, tau_min, grad_eps, jitter)
    sil, sdf, lse, _, _ = fused_forward(kernels, call)
    weight = torch.ones_like(sil) if weight is None else weight
    return sil, fused_backward(kernels, call, weight, sil, sdf, lse)


def _autograd(backend):
    def run(decoder, z, rays, S, weight=None, tau=0.1, tau_min=0.05, grad_eps=0.0, jitter=None):
        sil = render(decoder, z, *rays, num_samples=S, tau=tau, tau_min=tau_min, grad_eps=grad_eps, jitter=jitter,
                     backend=backend)
        weight = torch.ones_like(sil) if weight is None else weight
        return sil, torch.autograd.grad((sil * weight).sum(), [z, *decoder.parameters()])

    return run


reference, compiled = _autograd("reference"), _autograd("compiled")
BACKENDS = {"fused_eager": fused_eager, "compiled": compiled}


def grads(fn, decoder, z, rays, S, weight=None, **kw):
    return fn(decoder, z, rays, S, weight, **kw)


@pytest.mark.parametrize("activation", ["softplus", "smoothrelu", "relu"])
def test_gradcheck_float64_exact(activation):
    """grad_eps = 0 is exact: gradcheck of the fused Function w.r.t. the latent and every decoder weight.
    (ReLU's kinks break finite differences, so ReLU is compared with the reference's autograd instead.)"""
    dec = small_decoder(latent_dim=3, hidden_dim=6, dtype=torch.float64, activation=activation, softplus_beta=10.0)
    rays = make_rays(batch=2, height=3, width=3, dtype=torch.float64, fov=1.6)
    assert (~rays[4]).any()
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    if activation == "relu":
        w = torch.randn(2, 9, dtype=torch.float64)
        sil_r, g_r = grads(reference, dec, z, rays, 5, w)
        sil_f, g_f = grads(fused_eager, dec, z, rays, 5, w)
        torch.testing.assert_close(sil_f, sil_r, rtol=0, atol=1e-14)
        for a, b in zip(g_f, g_r):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
        return
    tau, tau_min = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)

    def f(z, *ws):  # the public custom op, through its registered autograd
        return compiled_render.forward(z, *rays, None, list(ws), 5, tau, tau_min, 0.0, activation, 10.0, None)[0]

    inputs = (z, *(w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)))
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_float32_against_float64_reference(backend):
    """Flash-attention's rule: the fast float32 error against the float64 reference is at most a small multiple
    (4x) of the plain float32 reference's own error, plus eps * sqrt(n): the expected round-off of one float32 sum
    over the n samples (a scalar like the last bias's gradient is such a sum, and one realisation of the
    reference's error can be luckily small)."""
    dec64 = small_decoder(latent_dim=8, hidden_dim=32, dtype=torch.float64, seed=1)
    dec32 = small_decoder(latent_dim=8, hidden_dim=32, dtype=torch.float32, seed=1)
    rays64 = make_rays(batch=3, height=9, width=11, dtype=torch.float64, seed=2)
    rays32 = tuple(t.float() if t.is_floating_point() else t for t in rays64)
    z64 = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    z32 = z64.detach().float().requires_grad_(True)
    w64 = torch.randn(3, 99, dtype=torch.float64)
    kw = dict(tau=0.05, tau_min=0.02)
    sil64, g64 = grads(reference, dec64, z64, rays64, 16, w64, **kw)
    sil_ref, g_ref = grads(reference, dec32, z32, rays32, 16, w64.float(), **kw)
    sil_fast, g_fast = grads(BACKENDS[backend], dec32, z32, rays32, 16, w64.float(), **kw)
    slack = torch.finfo(torch.float32).eps * math.sqrt(3 * 99 * 16)
    assert rel_err(sil_fast, sil64) <= 4 * rel_err(sil_ref, sil64) + slack
    for a, b, ref in zip(g_fast, g64, g_ref):
        assert rel_err(a, b) <= 4 * rel_err(ref, b) + slack


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("num_rays,S", [(1, 1), (1, 37), (127, 1), (127, 37)])
def test_awkward_sizes(backend, num_rays, S):
    dtype = torch.float32 if backend == "compiled" else torch.float64
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-13)  # float32: 1e-4 covers
    # reassociated sums over <= 127*37 samples; float64: round-off only
    dec = small_decoder(latent_dim=8, hidden_dim=32, dtype=dtype, seed=3)
    o, d, near, far, valid = make_rays(batch=2, height=1, width=num_rays, dtype=dtype, fov=0.6, seed=4)
    z = torch.randn(2, 8, dtype=dtype, requires_grad=True)
    w = torch.randn(2, num_rays, dtype=dtype)
    sil_r, g_r = grads(reference, dec, z, (o, d, near, far, valid), S, w)
    sil_f, g_f = grads(BACKENDS[backend], dec, z, (o, d, near, far, valid), S, w)
    torch.testing.assert_close(sil_f, sil_r, **tol)
    for a, b in zip(g_f, g_r):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_all_rays_invalid(backend):
    dec = small_decoder(latent_dim=8, hidden_dim=32, seed=5)
    o, d, near, far, valid = make_rays(batch=2, height=4, width=4)
    valid = torch.zeros_like(valid)
    z = torch.randn(2, 8, requires_grad=True)
    sil, g = grads(BACKENDS[backend], dec, z, (o, d, near, far, valid), 8)
    assert sil.shape == (2, 16) and (sil == 0).all()
    assert all((t == 0).all() for t in g)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_deterministic(backend):
    dec = small_decoder(latent_dim=8, hidden_dim=32, seed=6)
    rays = make_rays(batch=2, height=8, width=8)
    z = torch.randn(2, 8, requires_grad=True)
    w = torch.randn(2, 64)
    a = grads(BACKENDS[backend], dec, z, rays, 16, w, grad_eps=1e-4)
    b = grads(BACKENDS[backend], dec, z, rays, 16, w, grad_eps=1e-4)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


def test_jitter_matches_reference():
    dec = small_decoder(latent_dim=8, hidden_dim=32, dtype=torch.float64, seed=7)
    rays = make_rays(batch=2, height=5, width=5, dtype=torch.float64)
    jitter = torch.rand(2, 25, dtype=torch.float64) - 0.5
    z = torch.randn(2, 8, dtype=torch.float64, requires_grad=True)
    sil_r, g_r = grads(reference, dec, z, rays, 9, jitter=jitter)
    sil_f, g_f = grads(fused_eager, dec, z, rays, 9, jitter=jitter)
    torch.testing.assert_close(sil_f, sil_r)
    for a, b in zip(g_f, g_r):
        torch.testing.assert_close(a, b)


def trained_like_decoder(hidden_dim=64, latent_dim=16):
    """A decoder with a real surface (fitted to a sphere's SDF), as in training: a freshly random decoder's
    nearly flat SDF would spread the soft-min weights over every sample and hide what the sparse backward drops."""
    torch.manual_seed(0)
    dec = SDFDecoder(latent_dim=latent_dim, hidden_dim=hidden_dim)
    dec.fit_sphere(radius=0.45, steps=100)
    return dec


def test_default_grad_eps_error_below_1e_3():
    """The default grad_eps against the exact (grad_eps = 0) gradient, relative per tensor. Measured at the
    study's shape (B=4, 64x64, S=64, hidden 256, sphere-fitted decoder, grad_eps=1e-4): 1.2e-4 at worst."""
    dec = trained_like_decoder()
    rays = make_rays(batch=2, height=24, width=24, seed=8)
    target = (torch.linalg.cross(rays[0], rays[1], dim=-1).norm(dim=-1) < 0.35).float()
    z = torch.randn(2, 16, requires_grad=True)
    params = [z, *dec.parameters()]
    default_eps = inspect.signature(render).parameters["grad_eps"].default
    assert default_eps > 0

    def loss_grads(eps):
        sil = render(dec, z, *rays, num_samples=32, tau=0.01, tau_min=0.005, grad_eps=eps, backend="compiled")
        return torch.autograd.grad(((sil - target) ** 2).mean(), params)

    exact, sparse = loss_grads(0.0), loss_grads(default_eps)
    worst = max(rel_err(a, b) for a, b in zip(sparse, exact))
    assert 0 < worst < 1e-3  # > 0: the default really drops samples


def _screened(screen=mlp_forward_gather):
    """The fused Function with a bfloat16 screen (eager) in small chunks: 97-point screen chunks, 7-point float32."""
    return Kernels(mlp_forward_gather, mlp_backward, 7, screen, 97)


def _screen_case(S=48):
    dec = trained_like_decoder()
    rays = make_rays(batch=2, height=20, width=20, seed=13)
    z = (0.1 * torch.randn(2, 16)).requires_grad_(True)
    target = (torch.linalg.cross(rays[0], rays[1], dim=-1).norm(dim=-1) < 0.35).float()
    return dec, rays, z, target, S


@pytest.mark.parametrize("tau", [0.01, 0.02])
def test_screened_forward_against_float64_reference(tau):
    """The bfloat16 screen leaves most samples of a sharp silhouette in bfloat16 and still meets the flash-attention
    rule against the float64 reference, for the silhouettes and every gradient."""
    dec, rays, z, target, S = _screen_case()
    dec64 = copy.deepcopy(dec).double()
    rays64 = tuple(t.double() if t.is_floating_point() else t for t in rays)
    z64 = z.detach().double().requires_grad_(True)
    kw = dict(tau=tau, tau_min=tau / 2)
    w = target - 0.5
    sil64, g64 = grads(reference, dec64, z64, rays64, S, w.double(), **kw)
    sil_ref, g_ref = grads(reference, dec, z, rays, S, w, **kw)
    with recording() as rec:
        sil_fast, g_fast = grads(fused_eager, dec, z, rays, S, w, kernels=_screened(), **kw)
    assert rec["screened_points"] > 0.3 * rec["forward_points"]  # the screen did spare work
    assert 0 < rec["screen_error"] <= fused.SCREEN_ERROR
    slack = torch.finfo(torch.float32).eps * math.sqrt(sil64.numel() * S)
    assert rel_err(sil_fast, sil64) <= 4 * rel_err(sil_ref, sil64) + slack
    for a, b, ref in zip(g_fast, g64, g_ref):
        assert rel_err(a, b) <= 4 * rel_err(ref, b) + slack


def test_screen_widens_when_its_error_is_larger_than_assumed():
    """A screen ten times worse than SCREEN_ERROR assumes: the check on the recomputed samples catches it and the
    result equals the unscreened float32 forward to round-off."""
    dec, rays, z, target, S = _screen_case()

    def bad_screen(*args):  # an error of 0.2 in SDF units, smooth along rays
        p = args[0].float()
        return mlp_forward_gather(*args).float() + 0.2 * torch.sin(7 * p.sum(-1))

    kw = dict(tau=0.01, tau_min=0.005, kernels=_screened(bad_screen))
    with recording() as rec:
        sil, _ = fused_eager(dec, z, rays, S, **kw)
    assert rec["screen_error"] > 2 * fused.SCREEN_ERROR
    plain, _ = fused_eager(dec, z, rays, S, tau=0.01, tau_min=0.005)
    torch.testing.assert_close(sil, plain, rtol=0, atol=1e-6)


def test_screen_is_skipped_when_it_would_not_pay():
    """At a soft temperature nearly every sample matters: the pilot sees it and the forward runs in float32."""
    dec, rays, z, target, S = _screen_case()
    with recording() as rec:
        sil, _ = fused_eager(dec, z, rays, S, tau=0.2, tau_min=0.1, kernels=_screened())
    assert rec["screened_points"] == 0
    torch.testing.assert_close(sil, fused_eager(dec, z, rays, S, tau=0.2, tau_min=0.1)[0], rtol=0, atol=0)


def test_saved_memory_grows_with_samples_not_hidden():
    """What the compiled op keeps for backward besides its inputs: per ray its silhouette, its logsumexp and the S
    SDF values of its samples; never B x R x S x hidden activations. Counted through saved-tensor hooks."""

    def saved_bytes(hidden):
        dec = small_decoder(latent_dim=8, hidden_dim=hidden, seed=9)
        rays = make_rays(batch=2, height=16, width=16)
        z = torch.randn(2, 8, requires_grad=True)
        inputs = {t.data_ptr() for t in [z, *rays, *dec.parameters()]}
        total = 0

        def pack(t):
            nonlocal total
            if t.data_ptr() not in inputs:
                total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            render(dec, z, *rays, num_samples=32, backend="compiled")
        return total

    small, large = saved_bytes(16), saved_bytes(256)
    assert small == large  # independent of the hidden width
    assert 0 < small <= 2 * 16 * 16 * (32 + 2) * 4 + 2 * 8  # sil, sdf, lse float32 per ray; two float64 temperatures


def test_training_step_matches_reference():
    """One Adam step through the compiled backend moves the weights as one through the reference does."""
    torch.manual_seed(10)
    dec_a = SDFDecoder(latent_dim=8, hidden_dim=32)
    dec_b = SDFDecoder(latent_dim=8, hidden_dim=32)
    dec_b.load_state_dict(dec_a.state_dict())
    rays = make_rays(batch=2, height=12, width=12, seed=11)
    target = (torch.linalg.cross(rays[0], rays[1], dim=-1).norm(dim=-1) < 0.3).float()
    z = torch.randn(2, 8)
    for dec, backend in ((dec_a, "reference"), (dec_b, "compiled")):
        opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
        sil = render(dec, z, *rays, num_samples=24, tau=0.05, tau_min=0.02, grad_eps=0.0, backend=backend)
        ((sil - target) ** 2).mean().backward()
        opt.step()
    init = SDFDecoder(latent_dim=8, hidden_dim=32)
    torch.manual_seed(10)
    init = SDFDecoder(latent_dim=8, hidden_dim=32)
    for a, b, p0 in zip(dec_a.parameters(), dec_b.parameters(), init.parameters()):
        assert not torch.equal(a, p0)  # the step changed the weights
        # Adam's first step is lr * sign(grad) where |grad| >> eps; float32 sums may flip the sign of a
        # near-zero gradient entry, so allow a few entries to differ
        close = torch.isclose(a, b, rtol=0, atol=1e-5)
        assert close.float().mean() > 0.99


def test_generic_callable_takes_the_chunked_path():
    def sphere(z, points):
        return points.norm(dim=-1) - z[:, :1]

    rays = make_rays(batch=2, height=6, width=6, dtype=torch.float64)
    z = torch.tensor([[0.5], [0.3]], dtype=torch.float64, requires_grad=True)
    sil_r = render(sphere, z, *rays, num_samples=16, backend="reference")
    sil_c = render(sphere, z, *rays, num_samples=16, backend="compiled")
    torch.testing.assert_close(sil_c, sil_r)
    (g_r,) = torch.autograd.grad(sil_r.sum(), z)
    (g_c,) = torch.autograd.grad(sil_c.sum(), z)
    torch.testing.assert_close(g_c, g_r)


@pytest.mark.skipif(not fused._ONEDNN, reason="no oneDNN linear in this torch")
@pytest.mark.parametrize("n,k,m", [(1, 1, 1), (127, 37, 5), (2048, 256, 256)])
def test_onednn_linear_matches_aten(n, k, m):
    """The CPU float32 kernels' matmul x @ W^T by oneDNN, for a contiguous and a transposed W, eager and compiled,
    equals the float64 product to float32 round-off: |error| <= 4 k eps max|x| max|W| (a float32 dot product of
    length k errs by at most about k eps times the sum of |x_i W_i|)."""
    g = torch.Generator().manual_seed(n + k + m)
    x, w = torch.randn(n, k, generator=g), torch.randn(m, k, generator=g)
    tol = 4 * k * torch.finfo(torch.float32).eps * x.abs().max() * w.abs().max()
    compiled_linear = torch.compile(fused.linear, fullgraph=True, dynamic=False)
    for weight in (w, w.t().contiguous().t()):
        exact = x.double() @ weight.double().t()
        for fn in (fused.linear, compiled_linear):
            out = fn(x, weight)
            assert out.shape == (n, m) and out.dtype == torch.float32
            assert (out.double() - exact).abs().max() <= tol
    assert torch.equal(fused.linear(x.double(), w.double()), x.double() @ w.double().t())  # float64: plain aten


def test_auto_routes_ray_gradients_to_the_backends_that_give_them():
    """Origins and directions that require grad: auto takes the compiled backend, which gives them gradients, and
    cpp refuses by name; near, far or jitter that require grad: only the reference takes the call."""
    dec = small_decoder()
    o, d, near, far, valid = make_rays()
    z = torch.randn(2, 4)
    assert picked("auto", dec, z, (o, d, near, far, valid)) == "compiled"
    for rays in ((o.clone().requires_grad_(True), d, near, far, valid), (o, d.clone().requires_grad_(True), near,
                                                                          far, valid)):
        assert picked("auto", dec, z, rays) == "compiled"
        with pytest.raises(RuntimeError, match="cpp.*`(origins|directions)` no gradient"):
            picked("cpp", dec, z, rays)
    near = near.clone().requires_grad_(True)
    assert picked("auto", dec, z, (o, d, near, far, valid)) == "reference"
    with pytest.raises(RuntimeError, match="compiled.*`near` no gradient"):
        picked("compiled", dec, z, (o, d, near, far, valid))


@pytest.mark.parametrize("jitter", [False, True])
def test_ray_gradients_gradcheck_float64(jitter):
    """The compiled backend's gradients w.r.t. origins and directions (grad_eps = 0): gradcheck of the public op
    through its registered autograd, with the latent and the weights requiring grad too."""
    dec = small_decoder(latent_dim=3, hidden_dim=6, dtype=torch.float64, activation="smoothrelu", softplus_beta=10.0)
    o, d, near, far, valid = make_rays(batch=2, height=3, width=3, dtype=torch.float64, fov=1.6, seed=3)
    assert (~valid).any()
    jit = torch.rand(2, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) - 0.5 if jitter else None
    z = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    weights = [w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)]
    tau, tau_min = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)

    def f(o, d, z, w0):
        return compiled_render.forward(z, o, d, near, far, valid, jit, [w0, *weights[1:]], 5, tau, tau_min, 0.0,
                                       "smoothrelu", 10.0, None)[0]

    assert torch.autograd.gradcheck(f, (o.clone().requires_grad_(True), d.clone().requires_grad_(True), z,
                                        weights[0]))


@pytest.mark.parametrize("surface", [False, True])
def test_ray_gradients_match_the_reference(surface):
    """float32 ray gradients of a loss on silhouettes (and on depth and normals, through the surface pass) by auto
    (the compiled backend) against the float64 reference's autograd, at the default grad_eps and at 0."""
    dec = SDFDecoder(latent_dim=4, hidden_dim=16, activation="smoothrelu")
    dec.fit_sphere(radius=0.6, steps=100, seed=0)
    rays = make_rays(batch=2, height=6, width=6, seed=5)
    z = torch.randn(2, 4, generator=torch.Generator().manual_seed(6)) * 0.1

    def ray_grads(backend, dtype, grad_eps):
        d64 = copy.deepcopy(dec).to(dtype)
        o, d = (t.to(dtype).requires_grad_(True) for t in rays[:2])
        out = render(d64, z.to(dtype), o, d, *(t.to(dtype) if t.is_floating_point() else t for t in rays[2:]),
                     num_samples=16, tau=0.05, tau_min=0.025, grad_eps=grad_eps, backend=backend, surface=surface)
        loss = (out.silhouette.square().sum() + out.depth.sum() + out.normal[..., 0].sum()) if surface else (
            out.square().sum())
        return torch.autograd.grad(loss, (o, d))

    assert picked("auto", dec, z, (rays[0].requires_grad_(True), *rays[1:])) == "compiled"
    rays[0].requires_grad_(False)
    exact = ray_grads("reference", torch.float64, 0.0)
    assert max(g.abs().max() for g in exact) > 1e-2  # the loss does depend on the rays
    for grad_eps, tol in ((0.0, 1e-5), (1e-4, 2e-3)):
        for got, want in zip(ray_grads("auto", torch.float32, grad_eps), exact):
            assert got.dtype == torch.float32
            assert rel_err(got, want) < tol, (grad_eps, rel_err(got, want))


def test_compiles_a_bounded_number_of_times():
    """20 training steps whose kept-sample counts all differ compile each chunk kernel once (2 graphs)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    compiled_backend._KERNELS.clear()
    counters.clear()
    torch.manual_seed(12)
    dec = SDFDecoder(latent_dim=8, hidden_dim=24)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-3)
    kept = set()
    for step in range(20):
        rays = make_rays(batch=2, height=10, width=10, seed=100 + step, distance=2.0 + 0.05 * step)
        kept.add(int(rays[4].sum()))
        sil = render(dec, torch.randn(2, 8), *rays, num_samples=12, backend="compiled")
        opt.zero_grad()
        sil.square().mean().backward()
        opt.step()
    assert len(kept) > 5  # the number of valid rays (so of samples) changed from step to step
    assert counters["stats"]["unique_graphs"] == 2
