"""Helpers shared by the test files: cameras around the unit sphere and small decoders."""

import math
import os

import pytest
import torch

from sdfsrn_fast import SDFDecoder
from sdfsrn_fast.cameras import orbit_rays, sphere_near_far

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

if not torch.cuda.is_available():
    # no GPU: the triton backend's kernels run in triton's CPU interpreter (tests/test_triton.py); the variable is
    # read when the kernels are defined, on the backend's first use, after this
    os.environ.setdefault("TRITON_INTERPRET", "1")


def make_rays(batch=2, height=8, width=8, dtype=torch.float32, seed=0, fov=math.radians(50), distance=2.5):
    """Rays of ``batch`` random orbit cameras: (origins, directions, near, far, valid)."""
    g = torch.Generator().manual_seed(seed)
    az = (torch.rand(batch, generator=g, dtype=torch.float64) * 2 * math.pi).to(dtype)
    el = ((torch.rand(batch, generator=g, dtype=torch.float64) - 0.3) * 1.2).to(dtype)
    o, d = orbit_rays(az, el, distance, fov, height, width)
    near, far, valid = sphere_near_far(o, d)
    return o, d, near, far, valid


def rel_err(a, b):
    """Relative error ||a - b|| / ||b||, in float64 on the CPU (either may live on a GPU)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def small_decoder(latent_dim=4, hidden_dim=8, dtype=torch.float32, seed=0, **kwargs):
    torch.manual_seed(seed)
    return SDFDecoder(latent_dim=latent_dim, hidden_dim=hidden_dim, **kwargs).to(dtype)


def make_call(decoder, z, rays, num_samples=8, tau=0.1, tau_min=0.05, grad_eps=0.0, jitter=None, compute_dtype=None):
    """The RenderCall ``render`` would make (decoder weights detached), for calling a backend's functions directly."""
    from sdfsrn_fast.backends._ops import RenderCall, decoder_weights

    weights = tuple(w.detach() for w in decoder_weights(decoder)) if isinstance(decoder, SDFDecoder) else ()
    activation, beta = (decoder.activation, decoder.softplus_beta) if weights else ("relu", 100.0)
    return RenderCall(z, *rays, jitter, weights, num_samples, tau, tau_min, grad_eps, activation, beta, compute_dtype)


def picked(backend, decoder, z, rays, **kw) -> str:
    """The name of the backend ``render(..., backend=backend)`` would run (raises as render would)."""
    from sdfsrn_fast._dispatch import _pick_backend

    return _pick_backend(backend, decoder, make_call(decoder, z, rays, **kw)).__name__.rsplit(".", 1)[-1]
