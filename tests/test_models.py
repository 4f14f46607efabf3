import pytest
import torch

from sdfsrn_fast import Encoder, SDFDecoder
from sdfsrn_fast.models import activation, activation_grad


def test_decoder_layout_matches_the_contract():
    dec = SDFDecoder(latent_dim=5, hidden_dim=7)
    shapes = [tuple(layer.weight.shape) for layer in dec.layers]
    assert shapes == [(7, 8), (7, 7), (7, 15), (7, 7), (1, 7)]
    z, p = torch.randn(2, 5), torch.randn(2, 9, 3)
    assert dec(z, p).shape == (2, 9)


def test_smoothrelu_closed_form():
    """smoothrelu(x) = (x + k)^2 / (4k) on |x| < k = 2 / beta, ReLU outside: k/4 at 0, continuous with a continuous
    slope at +-k, the curvature of softplus at 0 (beta / 4); its derivative read off the output, as the cpp and
    triton kernels read it (min(sqrt(h / k), 1)), is activation_grad."""
    beta = 10.0
    k = 2 / beta
    x = torch.tensor([-1.0, -k, -k / 2, 0.0, k / 2, k, 1.0], dtype=torch.float64, requires_grad=True)
    y = activation(x, "smoothrelu", beta)
    expected = torch.tensor([0, 0, (k / 2) ** 2 / (4 * k), k / 4, (1.5 * k) ** 2 / (4 * k), k, 1], dtype=torch.float64)
    torch.testing.assert_close(y.detach(), expected, rtol=0, atol=1e-15)
    (slope,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    torch.testing.assert_close(slope.detach(), torch.tensor([0, 0, 0.25, 0.5, 0.75, 1, 1], dtype=torch.float64))
    torch.testing.assert_close(slope, activation_grad(x, "smoothrelu", beta))
    (curv,) = torch.autograd.grad(activation_grad(x, "smoothrelu", beta)[3], x)
    assert curv[3].item() == pytest.approx(beta / 4)  # softplus'' (0) = beta / 4
    eps = 1e-7  # no jump in the slope at +-k
    for edge in (-k, k):
        t = torch.tensor([edge - eps, edge + eps], dtype=torch.float64)
        g = activation_grad(t, "smoothrelu", beta)
        assert abs(g[1] - g[0]) < 1e-5
    h = y.detach()
    torch.testing.assert_close(torch.sqrt(h * beta / 2).clamp_max(1), slope.detach())


def test_decoder_forward_by_hand():
    """The forward pass written out with the weights, as fast backends will read them (docs/contract.md)."""
    dec = SDFDecoder(latent_dim=3, hidden_dim=4, activation="softplus", softplus_beta=5.0, geometric_init=False)
    z, p = torch.randn(2, 3), torch.randn(2, 6, 3)
    W = [layer.weight for layer in dec.layers]
    b = [layer.bias for layer in dec.layers]
    act = lambda x: torch.nn.functional.softplus(x, beta=5.0)  # noqa: E731
    x = torch.cat([z[:, None].expand(-1, 6, -1), p], -1)
    h = act(x @ W[0].T + b[0])
    h = act(h @ W[1].T + b[1])
    h = act(h @ W[2][:, :4].T + x @ W[2][:, 4:].T + b[2])
    h = act(h @ W[3].T + b[3])
    torch.testing.assert_close(dec(z, p), (h @ W[4].T + b[4])[..., 0])


def test_decoder_bad_input():
    dec = SDFDecoder(latent_dim=5, hidden_dim=7)
    with pytest.raises(ValueError, match="z"):
        dec(torch.randn(2, 4), torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="points"):
        dec(torch.randn(2, 5), torch.randn(3, 3, 3))
    with pytest.raises(ValueError, match="activation"):
        SDFDecoder(activation="tanh")


def test_encoder_shapes_and_errors():
    enc = Encoder(latent_dim=16)
    convs = [(c.in_channels, c.out_channels, c.stride[0]) for c in enc.convs]
    assert convs == [(3, 32, 2), (32, 64, 2), (64, 128, 2), (128, 256, 2)]
    assert enc(torch.randn(3, 3, 64, 64)).shape == (3, 16)
    with pytest.raises(ValueError, match="images"):
        enc(torch.randn(3, 3, 32, 32))


def test_import_loads_no_triton_and_no_cpp():
    import subprocess
    import sys

    code = ("import sys, sdfsrn_fast; "
            "assert 'triton' not in sys.modules, 'triton imported'; "
            "assert not any(m.startswith('torch.utils.cpp_extension') for m in sys.modules), 'cpp_extension imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
