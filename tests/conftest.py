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
