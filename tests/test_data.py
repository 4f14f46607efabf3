import math

import pytest
import torch

from sdfsrn_fast.cameras import orbit_rays
from sdfsrn_fast.study.data import FAMILIES, load_dataset, make_dataset


@pytest.fixture(scope="module")
def small():
    return make_dataset(num_shapes=6, resolution=32, seed=3)


def test_fields_and_shapes(small):
    N, H = 6, 32
    assert small.images.shape == (N, 3, H, H) and small.silhouettes.shape == (N, H, H)
    assert small.azimuth.shape == small.elevation.shape == (N,)
    assert small.novel_azimuth.shape == small.novel_elevation.shape == (N, 6)
    assert small.novel_silhouettes.shape == (N, 6, H, H)
    assert small.families == [FAMILIES[i % 3] for i in range(N)]
    assert len(small) == N and small.resolution == H
    assert set(small.silhouettes.unique().tolist()) <= {0.0, 1.0}


def test_images_are_shaded_inside_the_silhouette_only(small):
    lit = small.images.amax(1) > 0
    assert torch.equal(lit, small.silhouettes > 0)
    inside = small.images[:, 0][small.silhouettes > 0]
    assert inside.std() > 0.05  # shading varies across the surface, not a flat mask


def test_shapes_fit_the_unit_sphere(small):
    for i in range(len(small)):
        # the sdf is positive everywhere on the unit sphere
        p = torch.nn.functional.normalize(torch.randn(2000, 3), dim=-1)
        assert (small.sdf(i, p) > 0).all()
        assert small.sdf(i, torch.zeros(1, 3)) < 0


def test_novel_views_differ_from_training_view(small):
    daz = (small.novel_azimuth - small.azimuth[:, None] + math.pi) % (2 * math.pi) - math.pi
    assert daz.abs().min() > 0.5  # at least ~29 degrees away in azimuth


def test_sphere_silhouette_is_exact_disc(small):
    i = small.families.index("sphere")
    o, d = orbit_rays(small.azimuth[i : i + 1].double(), small.elevation[i : i + 1].double(), small.distance,
                      small.fov, 32, 32)
    rho = torch.linalg.cross(o, d, dim=-1).norm(dim=-1).reshape(32, 32)
    assert torch.equal(small.silhouettes[i] > 0, rho < small.sizes[i, 0].double())


def test_sdf_is_exact_for_box_and_a_bound_for_ellipsoid(small):
    b = small.families.index("box")
    size, rot = small.sizes[b], small.rotations[b]
    face = rot @ torch.tensor([size[0] + 0.1, 0.0, 0.0])  # 0.1 outside the +x face, along its normal
    torch.testing.assert_close(small.sdf(b, face[None]), torch.tensor([0.1]))
    corner = rot @ (size + 0.1)
    torch.testing.assert_close(small.sdf(b, corner[None]), torch.tensor([0.1 * math.sqrt(3)]))
    e = small.families.index("ellipsoid")
    size, rot = small.sizes[e], small.rotations[e]
    for axis in range(3):
        p = torch.zeros(3)
        p[axis] = size[axis] + 0.2  # 0.2 off the tip of a semi-axis: the true distance is <= 0.2
        s = small.sdf(e, (rot @ p)[None])
        assert 0 < s <= 0.2 + 1e-6
        p[axis] = size[axis] - 1e-3
        assert small.sdf(e, (rot @ p)[None]) < 0


def test_deterministic_by_seed():
    a, b = make_dataset(num_shapes=3, resolution=16, seed=7), make_dataset(num_shapes=3, resolution=16, seed=7)
    c = make_dataset(num_shapes=3, resolution=16, seed=8)
    assert torch.equal(a.images, b.images) and torch.equal(a.novel_silhouettes, b.novel_silhouettes)
    assert not torch.equal(a.sizes, c.sizes)


def test_save_load_roundtrip(small, tmp_path):
    path = tmp_path / "shapes.npz"
    small.save(path)
    back = load_dataset(path)
    assert back.families == small.families and back.distance == small.distance and back.seed == small.seed
    for name in ("images", "silhouettes", "novel_silhouettes", "novel_azimuth", "sizes", "rotations"):
        assert torch.equal(getattr(back, name), getattr(small, name)), name
    p = torch.randn(50, 3)
    assert torch.equal(back.sdf(1, p), small.sdf(1, p))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt or not a .npz .no zip header"):
        load_dataset(bad)
    truncated = tmp_path / "truncated.npz"
    make_dataset(num_shapes=3, resolution=8, num_novel=1, seed=0).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        load_dataset(truncated)
    import numpy as np

    partial = tmp_path / "partial.npz"
    np.savez(partial, images=np.zeros(3))
    with pytest.raises(ValueError, match="lacks"):
        load_dataset(partial)


def test_bad_arguments():
    with pytest.raises(ValueError, match="families"):
        make_dataset(num_shapes=2, families=("torus",))
    with pytest.raises(ValueError, match="num_shapes"):
        make_dataset(num_shapes=0)


def test_surface_maps_agree_with_silhouettes_and_a_sphere(small):
    """The exact surface from any camera: hit where the silhouette is, unit normals, and for a sphere the depth and
    normal of the closed-form ray-sphere intersection."""
    for i in range(3):
        depth, normal, hit = small.surface_maps(i, small.novel_azimuth[i], small.novel_elevation[i], small.resolution)
        assert torch.equal(hit.float(), small.novel_silhouettes[i])
        assert ((normal[hit].norm(dim=-1) - 1).abs() < 1e-5).all() and (depth[~hit] == 0).all()
        assert (depth[hit] > small.distance - 1).all() and (depth[hit] < small.distance + 1).all()
    i = small.families.index("sphere")
    r = float(small.sizes[i, 0])
    o, d = orbit_rays(small.azimuth[i : i + 1].double(), small.elevation[i : i + 1].double(), small.distance,
                      small.fov, small.resolution, small.resolution)
    b = (o * d).sum(-1)
    t = -b - (b * b - (o * o).sum(-1) + r * r).clamp_min(0).sqrt()
    depth, normal, hit = small.surface_maps(i, small.azimuth[i], small.elevation[i], small.resolution)
    flat = hit.reshape(1, -1)
    torch.testing.assert_close(depth.reshape(1, -1)[flat].double(), t[flat], rtol=0, atol=1e-5)
    x = o + t[..., None] * d
    torch.testing.assert_close(normal.reshape(1, -1, 3)[flat].double(), (x / r)[flat], rtol=0, atol=1e-5)


def test_light_is_the_training_images_light(small):
    """The training images are albedo x shading(normal, hit, light) with the dataset's light and shading model."""
    from sdfsrn_fast.study.data import shading

    i = 1
    _, normal, hit = small.surface_maps(i, small.azimuth[i], small.elevation[i], small.resolution)
    light = small.light(small.azimuth[i], small.elevation[i])[0]
    image = small.albedo[i][:, None, None] * shading(normal[0], hit[0], light)[None]
    torch.testing.assert_close(image, small.images[i], rtol=0, atol=1e-5)
