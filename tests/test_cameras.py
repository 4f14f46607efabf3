import math

import pytest
import torch

from sdfsrn_fast.cameras import camera_frame, orbit_rays, sphere_near_far


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_frames_are_orthonormal_and_right_handed(dtype):
    az = torch.linspace(-3.0, 3.0, 7, dtype=dtype)
    el = torch.linspace(-1.2, 1.2, 7, dtype=dtype)
    centre, f, r, u = camera_frame(az, el, 2.5)
    frame = torch.stack([r, u, -f], dim=-1)  # camera axes as columns
    eye = torch.eye(3, dtype=dtype).expand_as(frame)
    tol = 1e-12 if dtype == torch.float64 else 1e-6  # a few ulps of the dtype
    torch.testing.assert_close(frame.transpose(1, 2) @ frame, eye, atol=tol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(frame), torch.ones(7, dtype=dtype), atol=tol, rtol=0)
    torch.testing.assert_close(centre.norm(dim=-1), torch.full((7,), 2.5, dtype=dtype))
    assert (u[:, 1] > 0).all()  # the image's up leans towards world +y


def test_known_camera_at_azimuth_zero():
    centre, f, r, u = camera_frame(0.0, 0.0, 3.0)
    torch.testing.assert_close(centre[0], torch.tensor([0.0, 0.0, 3.0]))
    torch.testing.assert_close(f[0], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(r[0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(u[0], torch.tensor([0.0, 1.0, 0.0]))
    centre, *_ = camera_frame(math.pi / 2, 0.0, 3.0)
    torch.testing.assert_close(centre[0], torch.tensor([3.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_centre_ray_of_odd_image_passes_through_origin():
    az = torch.tensor([0.3, 2.0, -1.0], dtype=torch.float64)
    el = torch.tensor([0.1, -0.4, 0.9], dtype=torch.float64)
    H, W = 5, 7
    o, d = orbit_rays(az, el, 2.5, 0.8, H, W)
    assert o.shape == d.shape == (3, H * W, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, H * W, dtype=torch.float64))
    centre_idx = (H // 2) * W + W // 2
    dist_to_origin = torch.linalg.cross(o[:, centre_idx], d[:, centre_idx], dim=-1).norm(dim=-1)
    assert dist_to_origin.max() < 1e-12


def test_row_zero_looks_up_and_column_zero_looks_left():
    o, d = orbit_rays(0.0, 0.0, 2.5, 0.8, 4, 6)  # camera on +z: image right = +x, image up = +y
    img = d[0].reshape(4, 6, 3)
    assert (img[0, :, 1] > 0).all() and (img[-1, :, 1] < 0).all()
    assert (img[:, 0, 0] < 0).all() and (img[:, -1, 0] > 0).all()
    assert (img[:-1, :, 1] > img[1:, :, 1]).all()  # y falls row by row


def test_vertical_fov_and_aspect():
    fov = 0.9
    _, d = orbit_rays(0.0, 0.0, 2.0, fov, 3, 1)  # one column: rows at y = (1 - 2(i + 0.5)/3) tan(fov/2)
    top = d[0, 0]
    torch.testing.assert_close(top[1] / -top[2], torch.tensor(2.0 / 3.0 * math.tan(fov / 2)))
    _, d = orbit_rays(0.0, 0.0, 2.0, fov, 1, 3)  # one row: x scaled by W/H = 3
    left = d[0, 0]
    torch.testing.assert_close(left[0] / -left[2], torch.tensor(-2.0 / 3.0 * 3 * math.tan(fov / 2)))


def test_dtype_device_and_broadcasting():
    az = torch.zeros(4, dtype=torch.float64)
    o, d = orbit_rays(az, 0.2, torch.full((4,), 2.0, dtype=torch.float64), 0.7, 2, 2)
    assert o.dtype == d.dtype == torch.float64 and o.shape == (4, 4, 3)
    o, d = orbit_rays(0.5, 0.2, 2.0, 0.7, 2, 3)
    assert o.dtype == torch.get_default_dtype() and o.shape == (1, 6, 3)


def test_near_far_by_hand():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.5, 0.0, 3.0], [2.0, 0.0, 3.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.5]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near, far, valid = sphere_near_far(o, d)
    h = math.sqrt(1 - 0.25)
    torch.testing.assert_close(near, torch.tensor([2.0, 3 - h, 0.0, 0.0, 0.0]))
    torch.testing.assert_close(far, torch.tensor([4.0, 3 + h, 0.0, 0.0, 0.5]))
    assert valid.tolist() == [True, True, False, False, True]  # a miss, a sphere behind, an origin inside
    near, far, valid = sphere_near_far(o[:2], 2 * d[:2], radius=2.0)  # t in units of the unnormalised d
    torch.testing.assert_close(near, torch.tensor([0.5, (3 - math.sqrt(4 - 0.25)) / 2]))
    torch.testing.assert_close(far, torch.tensor([2.5, (3 + math.sqrt(4 - 0.25)) / 2]))


def test_image_corners_miss_the_bounding_sphere():
    o, d = orbit_rays(0.0, 0.0, 2.5, math.radians(50), 8, 8)
    near, far, valid = sphere_near_far(o, d)
    img = valid[0].reshape(8, 8)
    assert not img[0, 0] and not img[-1, -1] and img[4, 4]
    assert (far[valid] > near[valid]).all()
    assert (near[~valid] == 0).all() and (far[~valid] == 0).all()


def test_bad_camera_input():
    with pytest.raises(ValueError, match="height"):
        orbit_rays(0.0, 0.0, 2.0, 0.8, 0, 4)
    with pytest.raises(ValueError, match="fov"):
        orbit_rays(0.0, 0.0, 2.0, 4.0, 4, 4)
    with pytest.raises(ValueError, match="distance"):
        orbit_rays(0.0, 0.0, -2.0, 0.8, 4, 4)
    with pytest.raises(TypeError, match="azimuth"):
        orbit_rays(torch.zeros(2, dtype=torch.int64), 0.0, 2.0, 0.8, 4, 4)
    with pytest.raises(ValueError, match="origins"):
        sphere_near_far(torch.zeros(4, 2), torch.zeros(4, 2))
