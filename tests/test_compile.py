"""``render`` as PyTorch custom ops: ``torch.library.opcheck`` of every op, and a user's training step (small encoder
+ render + loss) under ``torch.compile``, default mode and ``fullgraph=True``, against the same step in eager."""

import pytest
import torch

from sdfsrn_fast import render
from sdfsrn_fast.backends.compiled import compiled_render
from sdfsrn_fast.backends._ops import decoder_weights

from conftest import make_rays, small_decoder

FAST_OPS = {"compiled": (compiled_render.forward, torch.ops.sdfsrn_fast.compiled_render_backward)}


def _op_args(dtype, jitter: bool, all_invalid: bool = False, grad=True):
    dec = small_decoder(latent_dim=5, hidden_dim=12, dtype=dtype, seed=1)
    o, d, near, far, valid = make_rays(batch=2, height=3, width=5, dtype=dtype, fov=1.6, seed=2)
    assert (~valid).any() and valid.any()  # some rays miss the bounding sphere
    if all_invalid:
        valid = torch.zeros_like(valid)
    z = torch.randn(2, 5, dtype=dtype, requires_grad=grad)
    jit = torch.rand(2, 15, dtype=dtype) - 0.5 if jitter else None
    weights = [w.detach().clone().requires_grad_(grad) for w in decoder_weights(dec)]
    tau, tau_min = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    return (z, o, d, near, far, valid, jit, weights, 7, tau, tau_min, 0.0, "relu", 100.0, None)


@pytest.mark.parametrize("backend", list(FAST_OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("jitter", [False, True])
def test_opcheck_forward(backend, dtype, jitter):
    """Schema, fake tensor, autograd registration and AOT dispatch (static and dynamic shapes) of the forward op."""
    forward_op, _ = FAST_OPS[backend]
    torch.library.opcheck(forward_op, _op_args(dtype, jitter))


@pytest.mark.parametrize("backend", list(FAST_OPS))
def test_opcheck_forward_with_ray_gradients(backend):
    """The forward op's autograd registration when origins and directions require grad (they get gradients)."""
    forward_op, _ = FAST_OPS[backend]
    args = list(_op_args(torch.float64, True))
    args[1], args[2] = args[1].clone().requires_grad_(True), args[2].clone().requires_grad_(True)
    torch.library.opcheck(forward_op, tuple(args))


@pytest.mark.parametrize("backend", list(FAST_OPS))
def test_opcheck_forward_all_rays_invalid(backend):
    forward_op, _ = FAST_OPS[backend]
    torch.library.opcheck(forward_op, _op_args(torch.float32, False, all_invalid=True))


@pytest.mark.parametrize("backend", list(FAST_OPS))
@pytest.mark.parametrize("jitter", [False, True])
def test_opcheck_backward(backend, jitter):
    """The backward op (it has no autograd of its own: no double backward), on the forward's real outputs."""
    forward_op, backward_op = FAST_OPS[backend]
    args = _op_args(torch.float64, jitter, grad=False)
    sil, sdf, lse, _, _ = forward_op(*args)
    grad_sil = torch.randn_like(sil)
    torch.library.opcheck(backward_op, (grad_sil, sil, sdf, lse, *args))
    torch.library.opcheck(backward_op, (grad_sil, sil, sdf, lse, *args[:7], args[7], *args[8:14], True))


class TinyEncoder(torch.nn.Module):
    def __init__(self, latent_dim):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4 * 4 * 4, latent_dim)

    def forward(self, images):
        return self.fc(torch.relu(self.conv(images)).flatten(1))


def _step_setup(seed=0):
    torch.manual_seed(seed)
    encoder = TinyEncoder(8)
    decoder = small_decoder(latent_dim=8, hidden_dim=24, seed=seed)
    images = torch.randn(2, 3, 8, 8)
    rays = make_rays(batch=2, height=6, width=6, seed=seed)
    target = (torch.linalg.cross(rays[0], rays[1], dim=-1).norm(dim=-1) < 0.35).float()
    return encoder, decoder, images, rays, target


def _make_step(encoder, decoder, rays, target, backend, grad_eps=0.0):
    def step(images, tau):
        z = encoder(images)
        sil = render(decoder, z, *rays, num_samples=12, tau=tau, tau_min=tau / 2, grad_eps=grad_eps,
                     backend=backend)
        return ((sil - target) ** 2).mean()

    return step


def _loss_and_grads(step, images, tau, params):
    loss = step(images, tau)
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
@pytest.mark.parametrize("fullgraph", [False, True])
def test_compiled_training_step_matches_eager(backend, fullgraph):
    """A user's step compiled with torch.compile gives the eager loss and gradients, at two temperatures passed as
    0-d tensors: the second one does not recompile the step (the temperature is an input, not a constant)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    encoder, decoder, images, rays, target = _step_setup()
    params = [*encoder.parameters(), *decoder.parameters()]
    step = _make_step(encoder, decoder, rays, target, backend)
    counter = CompileCounterWithBackend("inductor")  # counts the step's own compilations (not the op's kernels')
    compiled_step = torch.compile(step, fullgraph=fullgraph, backend=counter)
    for tau in (0.1, 0.05):
        tau = torch.tensor(tau)
        loss_c, g_c = _loss_and_grads(compiled_step, images, tau, params)
        loss_e, g_e = _loss_and_grads(step, images, tau, params)
        # the compiled graph may fuse and reorder the encoder's float32 arithmetic: round-off only
        torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-7)
        for a, b in zip(g_c, g_e):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in g_c)
    assert counter.frame_count == 1  # one graph, compiled once for both temperatures


def test_compiled_step_with_the_sparse_backward():
    """The default grad_eps (samples dropped in backward) under torch.compile gives what it gives in eager."""
    torch._dynamo.reset()
    encoder, decoder, images, rays, target = _step_setup(seed=3)
    params = [*encoder.parameters(), *decoder.parameters()]
    step = _make_step(encoder, decoder, rays, target, "compiled", grad_eps=1e-4)
    tau = torch.tensor(0.02)
    loss_c, g_c = _loss_and_grads(torch.compile(step, fullgraph=True), images, tau, params)
    loss_e, g_e = _loss_and_grads(step, images, tau, params)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-7)
    for a, b in zip(g_c, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_generic_callable_decoder_under_compile():
    """A plain callable decoder takes the chunked autograd path, which torch.compile traces like user code."""
    torch._dynamo.reset()
    rays = make_rays(batch=2, height=5, width=5)

    def sphere(z, points):
        return points.norm(dim=-1) - z[:, :1]

    def step(z):
        return render(sphere, z, *rays, num_samples=8, tau=0.1, tau_min=0.05).square().sum()

    z = torch.tensor([[0.5], [0.3]], requires_grad=True)
    (g_e,) = torch.autograd.grad(step(z), z)
    (g_c,) = torch.autograd.grad(torch.compile(step)(z), z)
    torch.testing.assert_close(g_c, g_e)


def test_value_checks_stay_in_eager_and_shape_checks_everywhere():
    """NaN in z is an error in eager; under fullgraph compile the value checks are skipped (no graph break), while
    a wrong shape is still an error there."""
    torch._dynamo.reset()
    decoder = small_decoder(latent_dim=4, hidden_dim=8)
    rays = make_rays(batch=2, height=3, width=3)
    z = torch.randn(2, 4)
    z_nan = z.clone()
    z_nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        render(decoder, z_nan, *rays, num_samples=4)

    @torch.compile(fullgraph=True)
    def f(z, near):
        return render(decoder, z, rays[0], rays[1], near, rays[3], rays[4], num_samples=4)

    assert f(z, rays[2]).shape == (2, 9)
    with pytest.raises(Exception, match="near"):
        f(z, rays[2][:, :4])


def test_tau_as_tensor_is_checked():
    decoder = small_decoder(latent_dim=4, hidden_dim=8)
    rays = make_rays(batch=1, height=2, width=2)
    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match="tau"):
        render(decoder, z, *rays, tau=torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="tau_min"):
        render(decoder, z, *rays, tau_min=torch.tensor(-0.1))
    a = render(decoder, z, *rays, tau=torch.tensor(0.05, dtype=torch.float64),
               tau_min=torch.tensor(0.02, dtype=torch.float64))
    b = render(decoder, z, *rays, tau=0.05, tau_min=0.02)
    assert torch.equal(a, b)  # a Python float is taken as float64, like a float64 tensor
