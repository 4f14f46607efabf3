import pytest
import torch

from sdfsrn_fast import Encoder, SDFDecoder


def test_decoder_layout_matches_the_contract():
    dec = SDFDecoder(latent_dim=5, hidden_dim=7)
    shapes = [tuple(layer.weight.shape) for layer in dec.layers]
    assert shapes == [(7, 8), (7, 7), (7, 15), (7, 7), (1, 7)]
    z, p = torch.randn(2, 5), torch.randn(2, 9, 3)
    assert dec(z, p).shape == (2, 9)


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
