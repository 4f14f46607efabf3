"""The cpp backend (csrc/render_cpu.cpp, built with ninja on first use) against the reference: gradcheck in float64,
float32 and bfloat16 by the flash-attention rule, awkward sizes, invalid rays, determinism, opcheck, and what
happens when it cannot be built."""

import copy
import math
import os
import subprocess
import sys

import pytest
import torch

from sdfsrn_fast import render
from sdfsrn_fast._dispatch import available_backends
from sdfsrn_fast.backends._ops import decoder_weights

from conftest import make_rays, picked, rel_err, small_decoder

pytestmark = pytest.mark.skipif("cpp" not in available_backends(), reason="no C++ compiler here to build the cpp "
                                "backend (it is built on first use)")


def run(backend, dec, z, rays, S, weight, amp=False, **kw):
    kw.setdefault("grad_eps", 0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        sil = render(dec, z, *rays, num_samples=S, backend=backend, **kw)
    return sil, torch.autograd.grad((sil * weight.to(sil.dtype)).sum(), [z, *dec.parameters()])


def case(hidden=24, latent=5, batch=2, height=5, width=7, S=9, dtype=torch.float64, seed=1, fit=False, fov=1.6,
         **kw):
    dec = small_decoder(latent_dim=latent, hidden_dim=hidden, dtype=dtype, seed=seed, **kw)
    if fit:
        dec = dec.float()
        dec.fit_sphere(radius=0.45, steps=80)
        dec = dec.to(dtype)
    rays = make_rays(batch=batch, height=height, width=width, dtype=dtype, fov=fov, seed=seed)
    z = ((0.1 if fit else 0.3) * torch.randn(batch, latent, dtype=dtype)).requires_grad_(True)
    return dec, rays, z, torch.randn(batch, height * width, dtype=dtype), S


@pytest.mark.parametrize("activation", ["relu", "softplus", "smoothrelu"])
@pytest.mark.parametrize("jitter", [False, True])
def test_float64_matches_reference(activation, jitter):
    dec, rays, z, w, S = case(activation=activation, softplus_beta=10.0)
    jit = torch.rand(rays[2].shape, dtype=torch.float64) - 0.5 if jitter else None
    sil_r, g_r = run("reference", dec, z, rays, S, w, jitter=jit)
    sil_c, g_c = run("cpp", dec, z, rays, S, w, jitter=jit)
    torch.testing.assert_close(sil_c, sil_r, rtol=0, atol=1e-13)  # float64 round-off
    for a, b in zip(g_c, g_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ["softplus", "smoothrelu"])
def test_gradcheck_float64(activation):
    from sdfsrn_fast.backends.cpp import cpp_render

    dec, rays, z, _, S = case(hidden=8, latent=3, batch=2, height=3, width=3, S=5, activation=activation,
                              softplus_beta=10.0)
    tau, tau_min = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)

    def f(z, *ws):
        return cpp_render.forward(z, *rays, None, list(ws), S, tau, tau_min, 0.0, activation, 10.0, None)[0]

    inputs = (z, *(w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)))
    assert torch.autograd.gradcheck(f, inputs)


def test_float32_against_float64_reference():
    """Flash-attention's rule: at most 2x the plain float32 reference's error, plus eps * sqrt(n)."""
    dec64, rays64, z64, w64, S = case(hidden=32, latent=8, S=16, fit=True, fov=math.radians(50))
    dec32 = copy.deepcopy(dec64).float()
    rays32 = tuple(t.float() if t.is_floating_point() else t for t in rays64)
    z32 = z64.detach().float().requires_grad_(True)
    kw = dict(tau=0.05, tau_min=0.02)
    sil64, g64 = run("reference", dec64, z64, rays64, S, w64, **kw)
    sil_ref, g_ref = run("reference", dec32, z32, rays32, S, w64, **kw)
    sil_c, g_c = run("cpp", dec32, z32, rays32, S, w64, **kw)
    slack = torch.finfo(torch.float32).eps * math.sqrt(sil64.numel() * S)
    assert rel_err(sil_c, sil64) <= 2 * rel_err(sil_ref, sil64) + slack
    for a, b, r in zip(g_c, g64, g_ref):
        assert rel_err(a, b) <= 2 * rel_err(r, b) + slack


@pytest.mark.parametrize("hidden", [64, 256])
def test_bfloat16_against_float64_reference(hidden):
    """The contract's mixed-precision rule, on small shapes and at the study width."""
    dec64, rays64, z64, w64, S = case(hidden=hidden, latent=16, height=16, width=16, S=32, fit=True,
                                      fov=math.radians(50))
    dec32 = copy.deepcopy(dec64).float()
    rays32 = tuple(t.float() if t.is_floating_point() else t for t in rays64)
    z32 = z64.detach().float().requires_grad_(True)
    kw = dict(tau=0.02, tau_min=0.01)
    sil64, g64 = run("reference", dec64, z64, rays64, S, w64, **kw)
    sil_ref, g_ref = run("reference", dec32, z32, rays32, S, w64, amp=True, **kw)
    sil_c, g_c = run("cpp", dec32, z32, rays32, S, w64, amp=True, **kw)
    assert sil_c.dtype == torch.float32 and rel_err(sil_ref, sil64) > 1e-4
    assert rel_err(sil_c, sil64) <= 2 * rel_err(sil_ref, sil64)
    # A one-element gradient's error (the last bias) is a single draw of the bfloat16 round-off: the reference's
    # error on each gradient is taken as at least its error over all gradients together.
    ref_all = rel_err(torch.cat([r.flatten() for r in g_ref]), torch.cat([b.flatten() for b in g64]))
    for a, b, r in zip(g_c, g64, g_ref):
        assert rel_err(a, b) <= 2 * max(rel_err(r, b), ref_all)


@pytest.mark.parametrize("num_rays,S", [(1, 1), (1, 37), (127, 1), (127, 37)])
def test_awkward_sizes(num_rays, S):
    dec, rays, z, _, _ = case(height=1, width=num_rays)
    w = torch.randn(2, num_rays, dtype=torch.float64)
    sil_r, g_r = run("reference", dec, z, rays, S, w)
    sil_c, g_c = run("cpp", dec, z, rays, S, w)
    torch.testing.assert_close(sil_c, sil_r, rtol=0, atol=1e-13)
    for a, b in zip(g_c, g_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_all_rays_invalid():
    dec, (o, d, near, far, valid), z, w, S = case()
    sil, g = run("cpp", dec, z, (o, d, near, far, torch.zeros_like(valid)), S, w)
    assert (sil == 0).all() and all((t == 0).all() for t in g)


def test_deterministic_and_thread_counts():
    """Same thread count: bitwise equal. 1 thread against 2: the weight-gradient partials are summed in another
    grouping, so equal to float32 round-off of the sums (rtol 1e-5: a few ulps over a few thousand terms)."""
    dec, rays, z, w, S = case(hidden=64, latent=8, height=16, width=16, S=24, dtype=torch.float32, fit=True,
                              fov=math.radians(50))
    a = run("cpp", dec, z, rays, S, w, grad_eps=1e-4)
    b = run("cpp", dec, z, rays, S, w, grad_eps=1e-4)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c = run("cpp", dec, z, rays, S, w, grad_eps=1e-4)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(c[0], a[0], rtol=0, atol=0)  # the forward has no cross-thread sums
    for x, y in zip(c[1], a[1]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_opcheck():
    from sdfsrn_fast.backends.cpp import cpp_render

    dec, rays, z, _, S = case(hidden=8, latent=3, batch=2, height=2, width=3, S=5)
    ws = [w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)]
    t = torch.tensor
    for jitter in (None, torch.rand(2, 6, dtype=torch.float64) - 0.5):
        torch.library.opcheck(cpp_render.forward, (z, *rays, jitter, ws, S, t(0.1, dtype=torch.float64),
                                           t(0.05, dtype=torch.float64), 0.0, "relu", 100.0, None))


def test_dispatch():
    """By name it renders SDFDecoders on the CPU; auto takes it under bfloat16 autocast on CPUs with AVX512-BF16
    (faster there), the compiled backend in float32 (as fast or faster)."""
    dec = small_decoder(latent_dim=4, hidden_dim=8)
    z, rays = torch.randn(2, 4), make_rays()
    assert picked("cpp", dec, z, rays) == "cpp"
    assert picked("auto", dec, z, rays) == "compiled"
    native = torch.cpu._is_avx512_bf16_supported()
    assert picked("auto", dec, z, rays, compute_dtype=torch.bfloat16) == ("cpp" if native else "compiled")
    with pytest.raises(RuntimeError, match="SDFDecoder only"):
        picked("cpp", lambda z, p: p.norm(dim=-1), z, rays)


SCRIPT = """
import torch
import sdfsrn_fast.backends.cpp as cpp
cpp.EXTENSION_NAME = "sdfsrn_fast_cpp_broken_test"
{setup}
import sdfsrn_fast
from sdfsrn_fast import SDFDecoder, render
from sdfsrn_fast.cameras import orbit_rays, sphere_near_far
o, d = orbit_rays(torch.tensor([0.0]), 0.2, 2.5, 0.8, 4, 4)
rays = (o, d, *sphere_near_far(o, d))
dec = SDFDecoder(4, 8)
print("AVAILABLE", "cpp" in sdfsrn_fast.available_backends())
render(dec, torch.randn(1, 4), *rays)
with torch.autocast("cpu", dtype=torch.bfloat16):  # where auto would take cpp
    render(dec, torch.randn(1, 4), *rays)
for attempt in range(2):
    try:
        render(dec, torch.randn(1, 4), *rays, backend="cpp")
    except RuntimeError as err:
        print("ERROR", err)
print("AVAILABLE AFTER", "cpp" in sdfsrn_fast.available_backends())
"""


@pytest.mark.parametrize("setup,expected", [
    ("import os; os.environ['CXX'] = 'no-such-compiler-here'", "no C++ compiler"),
    ("import pathlib, tempfile; p = pathlib.Path(tempfile.mkdtemp()) / 'broken.cpp'; "
     "p.write_text('this is not C++'); cpp.SOURCE = p", "failed to build"),
])
def test_build_failure_is_one_clear_error(setup, expected):
    """Without a compiler, or with a build that fails (a fresh process, since this one has the extension loaded):
    backend="cpp" raises the reason, the same each time, and auto renders with the compiled backend (also under
    bfloat16 autocast, where it would take cpp); a missing compiler is known up front (not listed as available), a
    failed build once it was tried."""
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(setup=setup)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    errors = [line for line in out.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 2 and all(expected in e for e in errors) and errors[0] == errors[1]
    missing = "compiler" in expected
    assert f"AVAILABLE {not missing}" in out.stdout
    assert "AVAILABLE AFTER False" in out.stdout
