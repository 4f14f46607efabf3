"""Surface outputs (docs/contract.md, Surface): ``render(..., surface=True)`` on every backend against a float64
reference of the contract written here independently (a loop over rays for the crossing, autograd for the
gradients), a gradcheck of the surface pass, closed-form spheres, bad input, and the custom ops, torch.compile and
autocast with the flag."""

import copy
import math

import pytest
import torch

from sdfsrn_fast import RenderOutput, SDFDecoder, available_backends, render
from sdfsrn_fast._surface import DEPTH_SLOPE_MIN, surface
from sdfsrn_fast.backends._ops import decoder_weights
from sdfsrn_fast.backends.reference import sample_points
from sdfsrn_fast.cameras import orbit_rays, sphere_near_far

from conftest import make_call, make_rays, small_decoder

CPU_BACKENDS = [b for b in available_backends() if b != "triton" or not torch.cuda.is_available()]


def contract(decoder, z, rays, S, jitter=None):
    """The contract's crossing, depth and normal in float64, written out: per ray a loop for the first negative
    sample and the secant step; depth and normal by autograd (``create_graph``) through the decoder itself."""
    o, d, near, far, valid = rays
    B, R, _ = o.shape
    with torch.no_grad():
        sdf = decoder(z, sample_points(o, d, near, far, S, jitter).reshape(B, R * S, 3)).reshape(B, R, S)
    t0 = torch.zeros(B, R, dtype=o.dtype)
    hit = torch.zeros(B, R, dtype=torch.bool)
    for b in range(B):
        for r in range(R):
            if not valid[b, r]:
                continue
            j = 0.0 if jitter is None else float(jitter[b, r])
            step = float((far[b, r] - near[b, r]) / S)
            t = [float(near[b, r]) + (k + 0.5 + j) * step for k in range(S)]
            s = sdf[b, r].tolist()
            k = next((k for k in range(S) if s[k] < 0), None)
            if k is None:
                continue
            hit[b, r] = True
            t0[b, r] = t[0] if k == 0 else t[k - 1] + s[k - 1] * (t[k] - t[k - 1]) / (s[k - 1] - s[k])
    depth = torch.zeros(B, R, dtype=o.dtype)
    normal = torch.zeros(B, R, 3, dtype=o.dtype)
    for b in range(B):
        rows = hit[b].nonzero().squeeze(1)
        if not len(rows):
            continue
        ob, db = o[b, rows], d[b, rows]
        x0 = (ob + t0[b, rows, None] * db).requires_grad_(True)
        f0 = decoder(z[b : b + 1], x0[None])[0]
        (g0,) = torch.autograd.grad(f0.sum(), x0, retain_graph=True)
        slope = (g0 * db).sum(-1)
        slope = torch.where(slope > 0, slope.clamp_min(DEPTH_SLOPE_MIN), slope.clamp_max(-DEPTH_SLOPE_MIN))
        t = t0[b, rows] - (f0 - f0.detach()) / slope
        x = ob + t[:, None] * db
        (g,) = torch.autograd.grad(decoder(z[b : b + 1], x[None])[0].sum(), x, create_graph=True)
        depth = depth.index_put((torch.full_like(rows, b), rows), t)
        normal = normal.index_put((torch.full_like(rows, b), rows), g / g.norm(dim=-1, keepdim=True))
    return t0, hit, depth, normal


def surface_case(hidden=16, latent=4, batch=2, res=6, S=12, activation="softplus", seed=0, dtype=torch.float64):
    """A decoder fitted to a sphere of radius 0.6 (softplus: smooth normals), cameras that see it."""
    torch.manual_seed(seed)
    dec = SDFDecoder(latent_dim=latent, hidden_dim=hidden, activation=activation, softplus_beta=20.0)
    dec.fit_sphere(radius=0.6, steps=80)
    dec = dec.to(dtype)
    rays = make_rays(batch=batch, height=res, width=res, dtype=dtype, seed=seed + 3, fov=0.9)
    z = (0.05 * torch.randn(batch, latent, dtype=dtype)).requires_grad_(True)
    return dec, rays, z, S


def losses(out: RenderOutput, seed=1):
    g = torch.Generator().manual_seed(seed)
    w_d = torch.randn(out.depth.shape, generator=g, dtype=out.depth.dtype)
    w_n = torch.randn(out.normal.shape, generator=g, dtype=out.normal.dtype)
    return (w_d * out.depth).sum() + (w_n * out.normal).sum()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("jitter", [False, True])
def test_every_backend_matches_the_contract(backend, jitter):
    """Float64: the crossing, depth, normal and hit of every backend (triton in its interpreter) equal the written-out
    contract to round-off, and so do the gradients of a loss on depth and normals w.r.t. z and every weight."""
    dec, rays, z, S = surface_case()
    jit = (torch.rand(rays[2].shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64) - 0.5
           if jitter else None)
    t0, hit, depth, normal = contract(dec, z, rays, S, jit)
    assert 0.1 < hit.float().mean() < 0.9 and not bool(rays[4].all())  # hits, misses, and rays missing the sphere
    out = render(dec, z, *rays, num_samples=S, jitter=jit, backend=backend, surface=True)
    assert isinstance(out, RenderOutput) and out.hit.dtype == torch.bool
    assert torch.equal(out.hit, hit)
    torch.testing.assert_close(out.depth, depth, rtol=0, atol=1e-12)  # float64 round-off of a few operations
    torch.testing.assert_close(out.normal, normal, rtol=0, atol=1e-11)
    assert (out.depth[~hit] == 0).all() and (out.normal[~hit] == 0).all()
    params = [z, *dec.parameters()]
    expected = torch.autograd.grad(losses(RenderOutput(out.silhouette, depth, normal, hit)), params)
    got = torch.autograd.grad(losses(out), params)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "softplus", "smoothrelu"])
def test_written_out_gradient_matches_autograd(activation):
    """SDFDecoder.sdf_and_gradient: the SDF equals the decoder's, the xyz gradient autograd's, and its own
    derivatives (w.r.t. z, the weights and the points) those of autograd's double backward."""
    torch.manual_seed(2)
    dec = SDFDecoder(latent_dim=5, hidden_dim=12, activation=activation, softplus_beta=7.0).double()
    z = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    shape = torch.tensor([0, 2, 2, 1, 0, 1, 2])
    p = (0.5 * torch.randn(7, 3, dtype=torch.float64)).requires_grad_(True)
    sdf, grad = dec.sdf_and_gradient(z, p, shape)
    ref = torch.stack([dec(z[b : b + 1], p[i][None, None])[0, 0] for i, b in enumerate(shape.tolist())])
    (ref_grad,) = torch.autograd.grad(ref.sum(), p, create_graph=True)
    torch.testing.assert_close(sdf, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    v = torch.randn(7, 3, dtype=torch.float64)
    inputs = [z, p, *dec.parameters()]
    for a, b in zip(torch.autograd.grad((grad * v).sum() + sdf.sum(), inputs, allow_unused=True),
                    torch.autograd.grad((ref_grad * v).sum() + ref.sum(), inputs, allow_unused=True)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _exact_crossing(decoder, z, rays, t0, hit, iterations=30):
    """The decoder's own root along each hit ray, by Newton's method from t0 (float64; no gradient)."""
    o, d = rays[0], rays[1]
    with torch.no_grad():
        t = t0.clone()
        for _ in range(iterations):
            x = (o + t[..., None] * d).reshape(o.shape[0], -1, 3)
            shape = torch.arange(o.shape[0]).repeat_interleave(o.shape[1])
            f, g = decoder.sdf_and_gradient(z, x.reshape(-1, 3), shape)
            step = f / (g * d.reshape(-1, 3)).sum(-1)
            t = torch.where(hit, t - step.view_as(t), t)
    return t


def test_gradcheck_of_the_surface_pass():
    """The surface pass given the decoder's exact root (Newton from the march's crossing, no gradient) as its
    crossing: the depth's value is then the root itself, so its and the normals' implicit gradients must equal
    finite differences (float64, softplus): ``torch.autograd.gradcheck`` w.r.t. z, and central differences of a loss
    on depth and normals along a random direction of all the weights at once."""
    dec, rays, z, S = surface_case(hidden=8, latent=3, batch=1, res=7, S=16)
    out = render(dec, z, *rays, num_samples=S, backend="reference", surface=True)
    assert out.hit.sum() >= 4

    def outputs(zz):
        t = _exact_crossing(dec, zz.detach(), rays, out.depth.detach(), out.hit)
        return surface(dec, make_call(dec, zz, rays, S), t, out.hit)

    assert torch.autograd.gradcheck(outputs, (z.detach().clone().requires_grad_(True),), eps=1e-6, atol=1e-6)

    def loss():
        return losses(RenderOutput(None, *outputs(z.detach()), out.hit))

    params = list(dec.parameters())
    analytic = torch.autograd.grad(loss(), params)
    v = [torch.randn_like(p) for p in params]
    eps = 1e-6
    with torch.no_grad():
        for p, dv in zip(params, v):
            p.add_(eps * dv)
        up = loss()
        for p, dv in zip(params, v):
            p.sub_(2 * eps * dv)
        down = loss()
        for p, dv in zip(params, v):
            p.add_(eps * dv)
    numeric = (up - down) / (2 * eps)
    directional = sum((a * dv).sum() for a, dv in zip(analytic, v))
    torch.testing.assert_close(directional, numeric, rtol=1e-5, atol=1e-7)


def test_exact_sphere_within_the_secant_bound():
    """An exact sphere SDF (a callable, radius r) through the reference: the depth errs from the analytic hit only by
    the secant step, at most dt^2 / (8 (r - dt) (c - dt / (r - dt))) for a step dt and c = |cos| of the angle
    between ray and normal at the hit (the SDF along a ray has second derivative at most 1 / |x| and slope at
    least that far from -c within one step of the hit); the normal, the exact SDF's gradient at the secant point,
    by at most that distance over r - dt (radians)."""
    r = 0.6
    o, d = orbit_rays(torch.tensor([0.4, 2.2], dtype=torch.float64), 0.3, 2.5, math.radians(50), 24, 24)
    near, far, valid = sphere_near_far(o, d)
    z = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    S = 48

    def sphere(zz, points):
        return points.norm(dim=-1) - r + 0 * zz[:, :1]

    out = render(sphere, z, o, d, near, far, valid, num_samples=S, backend="reference", surface=True)
    # the analytic first intersection
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - r * r)
    hits = disc > 0
    t_true = -b - disc.clamp_min(0).sqrt()
    assert torch.equal(out.hit & hits, out.hit) and (out.hit == hits).float().mean() > 0.99  # tangent rays may differ
    both = out.hit & hits
    x_true = o + t_true[..., None] * d
    c = -(x_true / r * d).sum(-1)
    dt = (far - near) / S
    usable = both & (c > 2 * dt / (r - dt))
    assert usable.sum() > 100
    bound = dt**2 / (8 * (r - dt) * (c - dt / (r - dt)))
    err = (out.depth - t_true).abs()
    assert (err[usable] <= bound[usable] + 1e-12).all(), (err[usable] / bound[usable]).max()
    assert (out.depth[usable] >= t_true[usable] - 1e-12).all()  # a convex SDF: the secant root lies beyond
    angle = torch.arccos((out.normal * x_true / r).sum(-1).clamp(-1, 1))
    assert (angle[usable] <= (bound / (r - dt))[usable] + 1e-7).all()


def test_fitted_sphere_on_every_backend():
    """An SDFDecoder fitted to a sphere of radius 0.45, at the study's camera: every backend's depth and normals
    against the analytic sphere within the secant bound above plus the fit's own error, measured at the true hit
    points: its SDF there (e, so the root moves by e / c) and the angle of its gradient from the sphere's normal
    (the normal errs by that plus the depth error over the radius), on rays with c >= 0.5 (float32)."""
    r = 0.45
    torch.manual_seed(4)
    dec = SDFDecoder(latent_dim=4, hidden_dim=64, activation="softplus", softplus_beta=30.0)
    dec.fit_sphere(radius=r, steps=400)
    o, d = orbit_rays(torch.tensor([1.0]), 0.2, 2.5, math.radians(50), 32, 32)
    near, far, valid = sphere_near_far(o, d)
    z = torch.zeros(1, 4)
    S = 64
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - r * r)
    t_true = -b - disc.clamp_min(0).sqrt()
    x_true = o + t_true[..., None] * d
    c = -(x_true / r * d).sum(-1)
    rows = ((disc > 0) & (c >= 0.5)).reshape(-1)
    x_rows, t_rows = x_true.reshape(-1, 3)[rows], t_true.reshape(-1)[rows]
    with torch.no_grad():
        f, g = dec.sdf_and_gradient(z, x_rows, torch.zeros(int(rows.sum()), dtype=torch.long))
    e = f.abs().max().item()
    grad_angle = torch.arccos(torch.nn.functional.cosine_similarity(g, x_rows).clamp(-1, 1))
    dt = ((far - near) / S).reshape(-1)[rows]
    cr = c.reshape(-1)[rows]
    depth_bound = dt**2 / (8 * (r - dt) * (cr - dt / (r - dt))) + 2 * e / cr
    normal_bound = 2 * grad_angle.max() + depth_bound / (r - dt)
    assert rows.sum() > 50 and e < 0.02
    # only the checked rays are rendered (each marches alone): triton's CPU interpreter pays per ray
    checked = [t[:, rows] for t in (o, d, near, far, valid)]
    for backend in CPU_BACKENDS:
        out = render(dec, z, *checked, num_samples=S, backend=backend, surface=True)
        assert out.hit.all(), backend
        err = (out.depth[0] - t_rows).abs()
        assert (err <= depth_bound).all(), (backend, (err / depth_bound).max())
        angle = torch.arccos((out.normal[0] * x_rows / r).sum(-1).clamp(-1, 1))
        assert (angle <= normal_bound + 1e-4).all(), (backend, (angle / normal_bound).max())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_without_the_flag_nothing_changes(backend):
    """The silhouettes and their gradients with ``surface=True`` are bitwise those without it."""
    dec, rays, z, S = surface_case(dtype=torch.float32, activation="relu")
    plain = render(dec, z, *rays, num_samples=S, backend=backend)
    out = render(dec, z, *rays, num_samples=S, backend=backend, surface=True)
    assert torch.equal(out.silhouette, plain)
    g_plain = torch.autograd.grad(plain.sum(), [z, *dec.parameters()])
    g_out = torch.autograd.grad(out.silhouette.sum(), [z, *dec.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(g_plain, g_out))


def test_surface_is_checked_like_every_argument():
    dec, rays, z, S = surface_case(dtype=torch.float32)
    with pytest.raises(TypeError, match="`surface` must be True or False"):
        render(dec, z, *rays, num_samples=S, surface="yes")


@pytest.mark.parametrize("fullgraph", [False, True])
def test_inside_torch_compile(fullgraph):
    """A user's compiled function with ``surface=True`` (compiled backend, SDFDecoder): outputs and gradients equal
    eager's (inside the graph every ray is evaluated and the misses masked)."""
    dec, rays, z, S = surface_case(dtype=torch.float32)

    def step(zz):
        return render(dec, zz, *rays, num_samples=S, backend="compiled", surface=True)

    eager = step(z)
    compiled = torch.compile(step, fullgraph=fullgraph)(z)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    params = [z, *dec.parameters()]
    for a, b in zip(torch.autograd.grad(losses(compiled), params), torch.autograd.grad(losses(eager), params)):
        # float32 sums in another order: round-off relative to each gradient's scale (here up to ~500)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("backend", [b for b in ("compiled", "cpp") if b in CPU_BACKENDS])
def test_under_autocast_the_surface_is_float32(backend):
    dec, rays, z, S = surface_case(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = render(dec, z, *rays, num_samples=S, backend=backend, surface=True)
        plain = render(dec, z, *rays, num_samples=S, backend=backend)
    assert out.depth.dtype == out.normal.dtype == torch.float32 and torch.equal(out.silhouette, plain)
    ref = render(dec, z, *rays, num_samples=S, backend="reference", surface=True)
    both = out.hit & ref.hit
    # the crossing comes from the march's bfloat16 samples: within a few per cent of a step of float32's
    assert (out.depth[both] - ref.depth[both]).abs().max() < 0.05


@pytest.mark.parametrize("backend", [b for b in ("compiled", "cpp", "triton") if b in CPU_BACKENDS])
def test_opcheck_with_the_surface(backend):
    import sdfsrn_fast.backends as backends

    ops = {"compiled": lambda: backends.compiled.compiled_render, "cpp": lambda: backends.cpp.cpp_render,
           "triton": lambda: backends.triton.triton_render}[backend]()
    if backend == "cpp":
        backends.cpp.load()
    dec, rays, z, S = surface_case(hidden=8, batch=1, res=3, S=6)
    ws = [w.detach().clone().requires_grad_(True) for w in decoder_weights(dec)]
    tau, tau_min = torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    args = (z, *rays, None, ws, S, tau, tau_min, 0.0, "softplus", 20.0, None, True)
    torch.library.opcheck(ops.forward, args)
    out = ops.forward(*args)
    assert out[3].shape == out[4].shape == rays[2].shape and out[4].dtype == torch.bool
