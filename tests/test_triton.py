"""The triton backend against the reference. Without a GPU its kernels run in triton's CPU interpreter
(``TRITON_INTERPRET=1``, set by conftest.py when there is no CUDA), on small shapes: it is slow. On a CUDA machine
the same tests run the compiled kernels on the GPU.

The interpreter's bfloat16 ``tl.dot`` multiplies raw bit patterns (triton #11584) and its float32->bfloat16 cast
truncates, so under the interpreter the backend runs bfloat16 as an exact emulation (operands rounded to
nearest-even bfloat16 in the kernel, products in IEEE float32): the bfloat16 tests below test that emulation there,
and the real bfloat16 tensor-core path only on a GPU."""

import copy
import math
import os

import pytest
import torch

from sdfsrn_fast import SDFDecoder, render
from sdfsrn_fast._dispatch import available_backends
from sdfsrn_fast.backends import triton as tb
from sdfsrn_fast.backends._instrument import recording, tuning
from sdfsrn_fast.backends._ops import decoder_weights

from conftest import make_call, make_rays, picked, rel_err, requires_cuda, small_decoder

pytestmark = pytest.mark.skipif("triton" not in available_backends(),
                                reason="the triton backend cannot run here (no triton, or no GPU and no interpreter)")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# float64 runs in the interpreter only: on CUDA the backend takes tf32, bfloat16 and float16 (float64 and exact
# float32 are the compiled backend's there)
interpreter_only = pytest.mark.skipif(DEVICE.type == "cuda", reason="float64: the interpreter's case (CPU)")


@pytest.fixture(autouse=True)
def tf32_on_cuda():
    """On a GPU the float32 tests run the kernels' tf32 path (and the reference with the same setting)."""
    if DEVICE.type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(before)


def to_dev(*ts):
    return tuple(t.to(DEVICE) if isinstance(t, torch.Tensor) else t for t in ts)


def run(backend, dec, z, rays, S, weight, amp=None, **kw):
    kw.setdefault("grad_eps", 0.0)
    with torch.autocast(DEVICE.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        sil = render(dec, z, *rays, num_samples=S, backend=backend, **kw)
    return sil, torch.autograd.grad((sil * weight.to(sil.dtype)).sum(), [z, *dec.parameters()])


def case(hidden, latent=5, batch=2, height=3, width=5, S=7, dtype=torch.float64, seed=0, fov=1.6, fit=False, **kw):
    dec = small_decoder(latent_dim=latent, hidden_dim=hidden, dtype=dtype, seed=seed, **kw)
    if fit:
        dec = dec.float()
        dec.fit_sphere(radius=0.45, steps=60)
        dec = dec.to(dtype)
    rays = make_rays(batch=batch, height=height, width=width, dtype=dtype, seed=seed + 1, fov=fov)
    z = (0.3 * torch.randn(batch, latent, dtype=dtype)).requires_grad_(True)
    weight = torch.randn(batch, height * width, dtype=dtype)
    return dec.to(DEVICE), to_dev(*rays), z.detach().to(DEVICE).requires_grad_(True), weight.to(DEVICE), S


# Cases whose silhouettes are not saturated, so that the decoder's values and every gradient matter: a decoder
# fitted to a sphere, cameras that see it, soft temperatures. (With a random decoder and the default rays, few rays
# were valid and their silhouettes were exactly 1 with zero gradients: a wrong kernel could pass.)
SEEN = dict(fov=0.9, fit=True)
SOFT = dict(tau=0.05, tau_min=0.02)


def assert_informative(sil, valid):
    s = sil.detach()[valid]
    assert bool(((s > 0.01) & (s < 0.99)).any()), "every silhouette saturated: the case tests little"


@interpreter_only
@pytest.mark.parametrize("hidden,activation", [(16, "relu"), (24, "relu"), (20, "softplus"), (16, "smoothrelu")])
@pytest.mark.parametrize("jitter", [False, True])
def test_float64_matches_reference(hidden, activation, jitter):
    """Float64 silhouettes and every gradient equal the reference's to round-off; 24 and 20 are not multiples of
    the 16-wide tiles (masked tails), S = 7 not a multiple of the sample block; some rays miss the sphere."""
    dec, rays, z, weight, S = case(hidden, height=4, width=5, activation=activation, softplus_beta=10.0, **SEEN)
    jit = (torch.rand(rays[2].shape, dtype=torch.float64) - 0.5).to(DEVICE) if jitter else None
    assert not bool(rays[4].all())  # some rays miss the sphere
    assert_matches_reference(dec, rays, z, weight, S, jitter=jit)


@interpreter_only
@pytest.mark.parametrize("loads", [0, 1, 2])
@pytest.mark.parametrize("hidden,tiles", [(24, 2), (40, 3), (56, 4)])
def test_several_hidden_tiles(loads, hidden, tiles):
    """Hidden widths 24, 40 and 56 in 16-wide tiles (two, three and four tiles, the last one masked; four as the
    study's H = 256 in 64-wide tiles), the weights reaching the dots tile by tile (LOADS 0, tf32 on CUDA), grouped
    per output tile (1, the backward and sm_80) or as one joined dot per output tile (2, sm_90's bfloat16 forward;
    three tiles padded to four): the reference's float64 results each way. (The other tests' widths fit in one
    tile.)"""
    with tuning(triton_ht=16, triton_loads=loads):
        cfg = tb.kernel_config(hidden, 0)
        assert cfg["NT"] == tiles and cfg["LOADS"] == loads
        assert_tiles_case_matches_reference(hidden)


TILES_CASE = dict(batch=2, height=4, width=5, S=8)  # 2 shapes x 20 rays


def assert_tiles_case_matches_reference(hidden):
    """The triton backend on TILES_CASE (rays that see the fitted sphere, soft temperatures)."""
    assert_matches_reference(*case(hidden, **TILES_CASE, **SEEN))


def assert_matches_reference(dec, rays, z, weight, S, informative=True, **kw):
    """Float64 silhouettes and every gradient of the triton backend equal the reference's to round-off (sums of at
    most a few dozen terms), at soft temperatures; ``informative``: some silhouettes are not saturated."""
    sil_r, g_r = run("reference", dec, z, rays, S, weight, **SOFT, **kw)
    sil_t, g_t = run("triton", dec, z, rays, S, weight, **SOFT, **kw)
    if informative:
        assert_informative(sil_r, rays[4])
    torch.testing.assert_close(sil_t, sil_r, rtol=0, atol=1e-13)
    for a, b in zip(g_t, g_r):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    return sil_t


@interpreter_only
def test_gradcheck_float64():
    """gradcheck of the triton op through its registered autograd (softplus: smooth), in fast mode (random
    directions; the full Jacobian took 217 s in the interpreter), on rays that see the fitted sphere."""
    dec, rays, z, _, S = case(16, latent=3, batch=1, height=2, width=3, S=5, activation="softplus",
                              softplus_beta=10.0, **SEEN)
    tau, tau_min = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)

    def f(z, *ws):
        return tb.triton_render.forward(z, *rays, None, list(ws), S, tau, tau_min, 0.0, "softplus", 10.0, None)[0]

    inputs = (z, *(w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)))
    assert_informative(f(*inputs), rays[4])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, fast_mode=True)  # full: 217 s here


NAMES = ["sil", "dz", "dW0", "db0", "dW1", "db1", "dW2", "db2", "dW3", "db3", "dW4", "db4"]


def assert_rule(fast, plain, exact, slack=0.0, factor=2.0):
    """Every tensor of ``fast`` errs from ``exact`` by at most ``factor`` x the error of ``plain`` (+ slack); the
    message lists the measured ratio of each, so that a failure on a GPU shows all of them.

    A one-element tensor (db4, a sum of the soft-min gradients with both signs) is measured against the larger of
    its own plain error and the plain silhouettes' error: its error is one random draw, and the plain path's can
    cancel by chance (NVIDIA H200, triton 3.6, 2026-11-28, bfloat16: db4 fast 9.1e-3 against plain 3.7e-3, while the
    plain silhouettes erred 4.5e-2 and the fast path stayed at 0.22-0.63x the plain error on every other tensor)."""
    errs = [(rel_err(f, e), rel_err(p, e)) for f, p, e in zip(fast, plain, exact)]
    errs = [(a, max(b, errs[0][1]) if f.numel() == 1 else b) for (a, b), f in zip(errs, fast)]
    report = ", ".join(f"{n} {a:.2e}/{b:.2e}={a / max(b, 1e-30):.2f}" for n, (a, b) in zip(NAMES, errs))
    assert all(a <= factor * b + slack for a, b in errs), f"fast/plain error: {report}"


def test_float32_against_float64_reference():
    """Flash-attention's rule in float32: the triton backend errs from the float64 reference by at most 2x the
    plain float32 reference's own error, plus eps * sqrt(n) (one float32 sum over the n samples)."""
    dec64, rays64, z64, w64, S = case(32, latent=8, batch=2, height=5, width=6, S=16, fit=True)
    dec32, rays32, z32 = copy.deepcopy(dec64).float(), tuple(t.float() if t.is_floating_point() else t
                                                              for t in rays64), z64.detach().float().requires_grad_()
    kw = dict(tau=0.05, tau_min=0.02)
    sil64, g64 = run("reference", dec64, z64, rays64, S, w64, **kw)
    sil_ref, g_ref = run("reference", dec32, z32, rays32, S, w64, **kw)
    sil_t, g_t = run("triton", dec32, z32, rays32, S, w64, **kw)
    slack = torch.finfo(torch.float32).eps * math.sqrt(sil64.numel() * S)
    assert_rule([sil_t, *g_t], [sil_ref, *g_ref], [sil64, *g64], slack)


def test_bfloat16_against_float64_reference():
    """Mixed precision by the contract's rule: under autocast(bfloat16) the triton backend (the emulation, under the
    interpreter) errs from the float64 reference by at most 2x the reference run under the same autocast."""
    dec64, rays64, z64, w64, S = case(64, latent=8, batch=2, height=6, width=6, S=16, fit=True)
    dec32, rays32, z32 = copy.deepcopy(dec64).float(), tuple(t.float() if t.is_floating_point() else t
                                                              for t in rays64), z64.detach().float().requires_grad_()
    kw = dict(tau=0.02, tau_min=0.01)
    sil64, g64 = run("reference", dec64, z64, rays64, S, w64, **kw)
    sil_ref, g_ref = run("reference", dec32, z32, rays32, S, w64, amp=torch.bfloat16, **kw)
    sil_t, g_t = run("triton", dec32, z32, rays32, S, w64, amp=torch.bfloat16, **kw)
    assert sil_t.dtype == torch.float32
    assert rel_err(sil_ref, sil64) > 1e-4  # the reference really ran in bfloat16
    assert_rule([sil_t, *g_t], [sil_ref, *g_ref], [sil64, *g64])


@interpreter_only
@pytest.mark.parametrize("num_rays,S", [(1, 1), (13, 37)])
def test_awkward_sizes(num_rays, S):
    dec, rays, z, weight, _ = case(16, batch=2, height=1 if num_rays == 1 else 3, width=num_rays, fov=0.6, fit=True)
    assert_matches_reference(dec, rays, z, weight, S, informative=num_rays > 1)


@interpreter_only
def test_all_rays_invalid():
    dec, (o, d, near, far, valid), z, weight, S = case(16)
    sil, g = run("triton", dec, z, (o, d, near, far, torch.zeros_like(valid)), S, weight)
    assert sil.shape == valid.shape and (sil == 0).all()
    assert all((t == 0).all() for t in g)


def test_deterministic():
    """The same call twice: bitwise the same silhouettes and gradients (no atomics anywhere)."""
    dec, rays, z, weight, S = case(24, batch=2, height=4, width=4, S=9, dtype=torch.float32, fit=True)
    a = run("triton", dec, z, rays, S, weight, grad_eps=1e-4)
    b = run("triton", dec, z, rays, S, weight, grad_eps=1e-4)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))


@interpreter_only
def test_opcheck():
    dec, rays, z, _, S = case(16, batch=1, height=2, width=3, S=5)
    ws = [w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)]
    args = (z, *rays, None, ws, S, torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64),
            0.0, "relu", 100.0, None)
    torch.library.opcheck(tb.triton_render.forward, args)


def test_dispatch():
    """auto picks triton only for an SDFDecoder on CUDA; asked for by name where it cannot run, one clear error."""
    dec = small_decoder(latent_dim=4, hidden_dim=8).to(DEVICE)
    z, rays = torch.randn(2, 4, device=DEVICE), to_dev(*make_rays())
    auto = picked("auto", dec, z, rays)
    assert auto == "triton" if DEVICE.type == "cuda" else auto != "triton"
    with pytest.raises(RuntimeError, match="SDFDecoder only"):
        picked("triton", lambda z, p: p.norm(dim=-1), z, rays)
    wide = SDFDecoder(latent_dim=4, hidden_dim=300).to(DEVICE)
    with pytest.raises(RuntimeError, match="up to 256"):
        picked("triton", wide, z, rays)


def test_triton_before_3_9_is_refused_on_sm100_above_width_64():
    """Triton 3.6 compiles the forward for sm_100 to a trap above width 64 (--gpu-compile, docs/performance.md):
    there the backend says so (auto then takes the compiled backend); 3.9, sm_90, sm_120 and width 64 go on."""
    reason = tb.toolchain_unsupported((10, 0), (3, 6), 128)
    assert reason is not None and "triton 3.6" in reason and "sm_100" in reason and ">= 3.9" in reason
    assert tb.toolchain_unsupported((10, 3), (3, 8), 256) is not None
    for capability, version, hidden in [((10, 0), (3, 9), 128), ((10, 0), (3, 6), 64), ((9, 0), (3, 6), 256),
                                        ((12, 0), (3, 6), 128), ((8, 0), (3, 6), 128)]:
        assert tb.toolchain_unsupported(capability, version, hidden) is None


def test_unavailable_without_gpu_or_interpreter(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the backend is available")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "triton" not in available_backends()
    dec = small_decoder(latent_dim=4, hidden_dim=8)
    rays = make_rays()
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        render(dec, torch.randn(2, 4), *rays, backend="triton")
    assert os.environ.get("TRITON_INTERPRET") is None


def test_host_side_syncs_once():
    """The host side around the kernels: the forward waits for the device nowhere (no ``nonzero``, no ``.item()``),
    the backward once (the kept samples' ``nonzero``). Invalid rays get zeros in every output."""
    from sdfsrn_fast.bench.triton_tools import OpCounter

    dec, rays, z, _, S = case(16, batch=3, height=4, width=5, S=9, dtype=torch.float32)
    call = make_call(dec, z.detach(), rays, S, 0.05, 0.02, 1e-4)
    with OpCounter() as fwd:
        sil, sdf, lse, _, _ = tb.triton_forward(call)
    with OpCounter() as bwd:
        tb.triton_backward(call, torch.ones_like(sil), sil, sdf, lse)
    assert fwd.syncs == 0, fwd.counts
    assert bwd.syncs == 1 and bwd.counts["aten.nonzero.default"] == 1, bwd.counts
    valid = rays[4]
    assert not bool(valid.all())
    assert (sdf[~valid] == 0).all() and (lse[~valid] == 0).all() and (sil[~valid] == 0).all()
    assert (sil[valid] > 0).all()


@interpreter_only
def test_a_shape_without_valid_rays():
    """The middle shape of three has no valid ray (its forward programs return early, and the backward's programs
    skip its empty range of kept samples): every output still equals the reference's."""
    dec, (o, d, near, far, valid), z, weight, S = case(16, batch=3, height=3, width=4, S=5, **SEEN)
    valid = valid.clone()
    valid[1] = False
    rays = (o, d, near, far, valid)
    sil_t = assert_matches_reference(dec, rays, z, weight, S)
    assert (sil_t[1] == 0).all() and sil_t[0].abs().sum() > 0 and sil_t[2].abs().sum() > 0


@interpreter_only
def test_backward_chunks_add_up():
    """Kept samples split over several backward launches (chunks of 7, a size that also splits a shape's samples
    mid-program) give the gradients of one launch, to float64 round-off."""
    dec, rays, z, weight, S = case(16, batch=3, height=3, width=4, S=6, **SEEN)
    sil_1, g_1 = run("triton", dec, z, rays, S, weight, **SOFT)
    assert_informative(sil_1, rays[4])
    with tuning(triton_chunk=7), recording() as rec:
        sil_n, g_n = run("triton", dec, z, rays, S, weight, **SOFT)
    assert rec["backward_launches"] >= 3  # three chunks or more really ran
    torch.testing.assert_close(sil_n, sil_1, rtol=0, atol=0)
    for a, b in zip(g_n, g_1):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_auto_leaves_wide_tf32_to_compiled():
    """``auto`` does not take triton for tf32 at hidden widths above 128 (slower than the compiled backend on an
    H200, spills); under autocast, or tf32 at H <= 128, it may; by name it still runs."""
    rays = make_rays()
    wide, narrow = SDFDecoder(latent_dim=4, hidden_dim=256), SDFDecoder(latent_dim=4, hidden_dim=128)
    z = torch.randn(2, 4)
    assert "compiled" in tb.auto_unsuited(wide, make_call(wide, z, rays))
    assert tb.auto_unsuited(narrow, make_call(narrow, z, rays)) is None
    assert tb.auto_unsuited(wide, make_call(wide, z, rays, compute_dtype=torch.bfloat16)) is None


@requires_cuda
def test_exact_float32_and_float64_are_the_compiled_backends_on_cuda():
    """On CUDA the kernels run tf32, bfloat16 or float16: exact float32 (``"highest"``) and float64 by name are a
    clear error, and auto takes the compiled backend for them."""
    dec = small_decoder(latent_dim=4, hidden_dim=8).cuda()
    z, rays = torch.randn(2, 4, device="cuda"), to_dev(*make_rays())
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        with pytest.raises(RuntimeError, match="exact float32"):
            picked("triton", dec, z, rays)
        assert picked("auto", dec, z, rays) == "compiled"
    finally:
        torch.set_float32_matmul_precision(before)
    with pytest.raises(RuntimeError, match="float64"):
        picked("triton", dec.double(), z.double(), tuple(t.double() if t.is_floating_point() else t for t in rays))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64] if DEVICE.type == "cpu" else [torch.float32])
@pytest.mark.parametrize("grad_eps", [0.0, 1e-4, 1e-2])
def test_kept_samples_kernel_matches_torch(dtype, grad_eps):
    """The backward's sample selection in two triton launches keeps exactly the samples of the shared torch
    version (:func:`sdfsrn_fast.backends.fused.kept_indices`, the compiled and cpp backends'), with the same
    dL/ds to round-off; invalid rays keep none."""
    from sdfsrn_fast.backends.fused import kept_indices

    g = torch.Generator().manual_seed(3)
    B, R, S, tau, tau_min = 3, 37, 11, 0.05, 0.02
    sdf = 0.05 * torch.randn(B, R, S, generator=g, dtype=dtype)
    valid = torch.rand(B, R, generator=g) > 0.3
    sdf[~valid] = 0
    lse = torch.where(valid, torch.logsumexp(-sdf / tau_min, -1), 0)
    sil = torch.where(valid, torch.sigmoid(lse * tau_min / tau), 0)
    grad = torch.randn(B, R, generator=g, dtype=dtype)
    args = [t.to(DEVICE) for t in (grad, sil, sdf, lse, valid)]
    idx, ds = kept_indices(*args, S, tau, tau_min, grad_eps)
    idx_t, ds_t = tb.kept_indices(*args, S, tau, tau_min, grad_eps)
    assert 0 < idx.numel() <= valid.sum() * S and torch.equal(idx_t, idx)
    assert valid.reshape(-1).to(DEVICE)[idx_t // S].all()
    torch.testing.assert_close(ds_t, ds, rtol=4 * torch.finfo(dtype).eps, atol=0)
