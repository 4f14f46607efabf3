"""The study's synthetic data, made in code: spheres, boxes and ellipsoids seen by orbit cameras.

Each shape sits at the origin inside the unit bounding sphere and is seen from ONE training view (a shaded
RGB image and its silhouette) and from ``num_novel`` novel views (silhouettes only) never used in training.
Silhouettes are exact ray-shape intersections at pixel centres with the cameras of docs/contract.md.
Everything is deterministic given the seed. This module makes and stores data; it knows nothing of training.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..cameras import camera_frame, orbit_rays

__all__ = ["FAMILIES", "ShapeDataset", "make_dataset", "load_dataset", "camera_light", "shading", "shading_error"]

FAMILIES = ("sphere", "box", "ellipsoid")
DEFAULT_DISTANCE = 2.5
DEFAULT_FOV = math.radians(50.0)  # the unit sphere, seen from 2.5, spans 47 degrees: it fits, corners miss it


@dataclass
class ShapeDataset:
    """The shapes, their views and their analytic SDFs. Tensors are float32 on the CPU; angles in radians.

    Attributes:
        images: [N, 3, H, W] Lambertian-shaded training views (black background).
        silhouettes: [N, H, W] training-view silhouettes in {0, 1}.
        azimuth, elevation: [N] training-view angles.
        novel_azimuth, novel_elevation: [N, V] novel-view angles; novel_silhouettes: [N, V, H, W].
        distance, fov: camera distance and vertical field of view, shared by all views.
        families: N family names from :data:`FAMILIES`.
        sizes: [N, 3] radius (repeated) / box half-extents / ellipsoid semi-axes, in the shape's own frame.
        rotations: [N, 3, 3] shape frame to world (``p_world = rotations[i] @ p_local``).
        albedo: [N, 3] colour of each shape.
        seed: the seed it was made from.
        lights: [N, 3] unit direction towards the light of each training image (fixed relative to its camera:
            :func:`camera_light`); with ``ambient`` and ``diffuse``, the images' shading model (:func:`shading`):
            part of the rendering setup, like the cameras. Files written before it are given the same.
    """

    images: torch.Tensor
    silhouettes: torch.Tensor
    azimuth: torch.Tensor
    elevation: torch.Tensor
    novel_azimuth: torch.Tensor
    novel_elevation: torch.Tensor
    novel_silhouettes: torch.Tensor
    distance: float
    fov: float
    families: list
    sizes: torch.Tensor
    rotations: torch.Tensor
    albedo: torch.Tensor
    seed: int
    lights: torch.Tensor = None
    ambient: float = 0.25
    diffuse: float = 0.75

    def __post_init__(self):
        if self.lights is None:
            self.lights = self.light(self.azimuth, self.elevation)

    def __len__(self) -> int:
        return len(self.families)

    @property
    def resolution(self) -> int:
        return self.silhouettes.shape[-1]

    def sdf(self, i: int, points: torch.Tensor) -> torch.Tensor:
        """Signed distance of shape ``i`` at ``points`` [M, 3] -> [M], in the points' dtype and device.

        Exact for spheres and boxes; for ellipsoids the bound ``(|p/a| - 1) min(a)``, which has the right
        sign and never exceeds the true distance in magnitude.
        """
        if points.dim() != 2 or points.shape[-1] != 3:
            raise ValueError(f"`points` must be [M, 3], got {tuple(points.shape)}")
        rot = self.rotations[i].to(points)
        size = self.sizes[i].to(points)
        local = points @ rot  # row vectors: p_local = R^T p
        return _local_sdf(self.families[i], local, size)

    def exact_silhouettes(self, i: int, azimuth, elevation, resolution: int) -> torch.Tensor:
        """Exact silhouettes [V, resolution, resolution] of shape ``i`` from cameras at ``azimuth``,
        ``elevation`` [V] (the dataset's distance and fov), e.g. training targets at another resolution."""
        return _silhouettes(self.families[i], self.sizes[i].double(), self.rotations[i].double(),
                            torch.as_tensor(azimuth).reshape(-1), torch.as_tensor(elevation).reshape(-1),
                            self.distance, self.fov, resolution).float()

    def surface_maps(self, i: int, azimuth, elevation, resolution: int):
        """The exact surface of shape ``i`` from cameras at ``azimuth``, ``elevation`` [V] (the dataset's distance and
        fov): ``(depth [V, res, res], normal [V, res, res, 3], hit [V, res, res] bool)``, depth the ray parameter of
        the first intersection (the distance from the camera; 0 where no hit), normal the unit outward normal in
        world coordinates (0 where no hit): what ``render(..., surface=True)`` predicts."""
        az, el = torch.as_tensor(azimuth).reshape(-1), torch.as_tensor(elevation).reshape(-1)
        size, rot = self.sizes[i].double(), self.rotations[i].double()
        maps = [_surface_view(self.families[i], size, rot, float(a), float(e), self.distance, self.fov, resolution)
                for a, e in zip(az, el)]
        depth, normal, hit = (torch.stack([m[k] for m in maps]) for k in range(3))
        return depth.float(), normal.float(), hit

    def light(self, azimuth, elevation) -> torch.Tensor:
        """The unit light directions [V, 3] of the training images' shading for cameras at these angles (fixed
        relative to the camera: :func:`camera_light`); ``lights`` holds the training views'."""
        return camera_light(torch.as_tensor(azimuth, dtype=torch.float64).reshape(-1),
                            torch.as_tensor(elevation, dtype=torch.float64).reshape(-1), self.distance).float()

    def as_decoder(self, indices):
        """A callable ``(z, points[B, N, 3]) -> sdf[B, N]`` giving the analytic SDFs of shapes ``indices``
        (``z`` is ignored), to render ground truth with :func:`sdfsrn_fast.render`."""
        indices = list(indices)

        def decoder(z, points):
            return torch.stack([self.sdf(i, p) for i, p in zip(indices, points)])

        return decoder

    def save(self, path) -> None:
        """Writes the dataset to one ``.npz`` file."""
        arrays = {}
        for f in fields(self):
            value = getattr(self, f.name)
            arrays[f.name] = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> "ShapeDataset":
        return load_dataset(path)


def load_dataset(path) -> ShapeDataset:
    """Reads a dataset written by :meth:`ShapeDataset.save`; a missing or corrupt file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError(f"dataset file {path} is corrupt or not a .npz (no zip header): not written by "
                             "ShapeDataset.save")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"dataset file {path} is corrupt or not a .npz: {err}") from None
    optional = ("lights", "ambient", "diffuse")  # files from before they were stored: the same values, made here
    missing = [f.name for f in fields(ShapeDataset) if f.name not in arrays and f.name not in optional]
    if missing:
        raise ValueError(f"dataset file {path} lacks {missing}: not written by ShapeDataset.save")
    values = {}
    for f in fields(ShapeDataset):
        if f.name not in arrays:
            continue
        a = arrays[f.name]
        if f.name == "families":
            values[f.name] = [str(x) for x in a]
        elif f.name in ("distance", "fov", "ambient", "diffuse"):
            values[f.name] = float(a)
        elif f.name == "seed":
            values[f.name] = int(a)
        else:
            values[f.name] = torch.from_numpy(a)
    return ShapeDataset(**values)


def _local_sdf(family: str, p: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    if family == "sphere":
        return p.norm(dim=-1) - size[0]
    if family == "box":
        q = p.abs() - size
        return q.clamp_min(0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0)
    if family == "ellipsoid":
        return ((p / size).norm(dim=-1) - 1) * size.min()
    raise ValueError(f"unknown shape family {family!r}")


def _intersect(family: str, o: torch.Tensor, d: torch.Tensor, size: torch.Tensor):
    """First hit of rays (shape frame) with a shape: returns (hit [R] bool, t [R], normal [R, 3] in the shape frame);
    t and normal are meaningful where hit."""
    if family == "box":
        safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        t1, t2 = (-size - o) / safe, (size - o) / safe
        t_lo, t_hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_enter, axis = t_lo.max(dim=-1)
        t_exit = t_hi.min(dim=-1).values
        hit = (t_exit > t_enter) & (t_exit > 0)
        normal = torch.zeros_like(o)
        normal.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
        return hit, t_enter, normal
    # sphere and ellipsoid: the unit sphere after scaling by 1 / size
    os_, ds = o / size, d / size
    a = (ds * ds).sum(-1)
    b = (os_ * ds).sum(-1)
    c = (os_ * os_).sum(-1) - 1
    disc = b * b - a * c
    root = disc.clamp_min(0).sqrt()
    t = (-b - root) / a
    hit = (disc > 0) & ((-b + root) / a > 0)
    normal = torch.nn.functional.normalize((o + t[:, None] * d) / size**2, dim=-1)
    return hit, t, normal


def camera_light(azimuth: torch.Tensor, elevation: torch.Tensor, distance: float) -> torch.Tensor:
    """The training images' light: a unit direction [V, 3] towards the light, fixed relative to each camera (towards
    the camera, up and to the left: the upper left of the image)."""
    _, forward, right, up = camera_frame(azimuth, elevation, distance)
    return torch.nn.functional.normalize(-forward + 0.6 * up - 0.5 * right, dim=-1)


def shading(normal: torch.Tensor, hit: torch.Tensor, light: torch.Tensor, ambient: float = 0.25,
            diffuse: float = 0.75) -> torch.Tensor:
    """The training images' shading model, without the albedo: ``ambient + diffuse max(n . l, 0)`` (Lambertian)
    where ``hit``, 0 elsewhere; normal [..., 3] in world coordinates, light [3] (or [..., 3], broadcasting)."""
    light = light.to(normal.dtype)
    lambert = (normal @ light if light.dim() == 1 else (normal * light).sum(-1)).clamp_min(0)
    return torch.where(hit, ambient + diffuse * lambert, torch.zeros_like(lambert))


def shading_error(shade: torch.Tensor, colors: torch.Tensor) -> torch.Tensor:
    """How far colours [..., R, 3] are from the shading ``shade`` [..., R] (0 off the surface) times the albedo [..., 3]
    that fits them best (least squares over the R rays, without gradient: estimated from the image, never read from
    the dataset): the squared error per ray [..., R], summed over RGB."""
    with torch.no_grad():
        albedo = (shade[..., None] * colors).sum(-2) / (shade * shade).sum(-1).clamp_min(1e-6)[..., None]
    return ((albedo[..., None, :] * shade[..., None] - colors) ** 2).sum(-1)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _silhouettes(family, size, rot, azimuth, elevation, distance, fov, resolution) -> torch.Tensor:
    """Exact silhouettes [V, H, W] (float64) of one shape (``size``, ``rot``: float64) from V cameras."""
    views = [_render_view(family, size, rot, None, float(a), float(e), distance, fov, resolution, False)[0]
             for a, e in zip(azimuth, elevation)]
    return torch.stack(views) if views else torch.zeros(0, resolution, resolution, dtype=torch.float64)


def _surface_view(family, size, rot, az, el, distance, fov, resolution):
    """(depth [H, W], normal [H, W, 3] in world coordinates, hit [H, W]) of one shape from one camera, float64;
    depth and normal 0 where no hit."""
    o, d = orbit_rays(torch.tensor([az], dtype=torch.float64), el, distance, fov, resolution, resolution)
    hit, t, normal_local = _intersect(family, o[0] @ rot, d[0] @ rot, size)
    depth = torch.where(hit, t, torch.zeros_like(t))
    normal = torch.where(hit[:, None], normal_local @ rot.T, torch.zeros_like(normal_local))
    return depth.reshape(resolution, resolution), normal.reshape(resolution, resolution, 3), hit.reshape(
        resolution, resolution)


def _render_view(family, size, rot, albedo, az, el, distance, fov, resolution, shade: bool):
    """Exact silhouette [H, W] (and shaded image [3, H, W] if ``shade``) of one shape from one camera."""
    o, d = orbit_rays(torch.tensor([az], dtype=torch.float64), el, distance, fov, resolution, resolution)
    o, d = o[0] @ rot, d[0] @ rot  # into the shape frame
    hit, _, normal_local = _intersect(family, o, d, size)
    sil = hit.to(torch.float64).reshape(resolution, resolution)
    if not shade:
        return sil, None
    light = camera_light(torch.tensor([az], dtype=torch.float64), el, distance)[0]
    image = albedo[:, None] * shading(normal_local @ rot.T, hit, light)[None, :]
    return sil, image.reshape(3, resolution, resolution)


def make_dataset(
    num_shapes: int = 50,
    resolution: int = 64,
    seed: int = 0,
    num_novel: int = 6,
    distance: float = DEFAULT_DISTANCE,
    fov: float = DEFAULT_FOV,
    families=FAMILIES,
) -> ShapeDataset:
    """Makes the study's data.

    Shapes cycle through ``families`` (sphere, box, ellipsoid, sphere, ...), with random sizes and, for boxes
    and ellipsoids, random orientations, all inside the unit sphere. The training view has a random azimuth
    in [0, 2 pi) and elevation in [-20, 45] degrees; novel view k sits at azimuth ``az + 2 pi (k + 1) /
    (num_novel + 1)`` (plus up to 8.6 degrees of noise) and a random elevation in the same range.

    Args:
        num_shapes: N. resolution: image side. seed: makes the dataset deterministic.
        num_novel: novel views per shape. distance, fov: the cameras (fov vertical, radians).
        families: which families to cycle through.

    Returns:
        A :class:`ShapeDataset`.
    """
    if num_shapes < 1 or resolution < 1 or num_novel < 0:
        raise ValueError("`num_shapes` and `resolution` must be >= 1 and `num_novel` >= 0")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"`families` must be a non-empty subset of {FAMILIES}, got {families!r}")
    rng = np.random.default_rng(seed)
    el_lo, el_hi = math.radians(-20.0), math.radians(45.0)
    out = {k: [] for k in ("images", "sil", "sizes", "rot", "albedo", "az", "el", "naz", "nel", "nsil", "fam")}
    for i in range(num_shapes):
        family = families[i % len(families)]
        if family == "sphere":
            size = np.full(3, rng.uniform(0.3, 0.75))
            rot = np.eye(3)
        elif family == "box":
            size = rng.uniform(0.2, 0.55, size=3)
            size *= min(1.0, 0.95 / np.linalg.norm(size))  # corners inside the unit sphere
            rot = _random_rotation(rng)
        else:
            size = rng.uniform(0.2, 0.75, size=3)
            rot = _random_rotation(rng)
        albedo = rng.uniform(0.5, 1.0, size=3)
        az = rng.uniform(0, 2 * math.pi)
        el = rng.uniform(el_lo, el_hi)
        naz = az + 2 * math.pi * np.arange(1, num_novel + 1) / (num_novel + 1) + rng.uniform(-0.15, 0.15, num_novel)
        nel = rng.uniform(el_lo, el_hi, num_novel)
        # Round to the float32 that is stored, so that the stored SDF and the silhouettes agree to the last bit.
        size, rot, albedo, az, el, naz, nel = (
            np.asarray(x, dtype=np.float32).astype(np.float64) for x in (size, rot, albedo, az, el, naz, nel)
        )
        size_t, rot_t, albedo_t = (torch.from_numpy(x) for x in (size, rot, albedo))
        sil, image = _render_view(family, size_t, rot_t, albedo_t, float(az), float(el), distance, fov, resolution,
                                  True)
        out["images"].append(image)
        out["sil"].append(sil)
        out["nsil"].append(_silhouettes(family, size_t, rot_t, naz, nel, distance, fov, resolution))
        for key, value in (("sizes", size), ("rot", rot), ("albedo", albedo), ("az", az), ("el", el),
                           ("naz", naz), ("nel", nel)):
            out[key].append(torch.as_tensor(np.asarray(value, dtype=np.float64)))
        out["fam"].append(family)
    f32 = lambda key: torch.stack(out[key]).to(torch.float32)  # noqa: E731
    return ShapeDataset(
        images=f32("images"),
        silhouettes=f32("sil"),
        azimuth=f32("az"),
        elevation=f32("el"),
        novel_azimuth=f32("naz").reshape(num_shapes, num_novel),
        novel_elevation=f32("nel").reshape(num_shapes, num_novel),
        novel_silhouettes=f32("nsil"),
        distance=float(distance),
        fov=float(fov),
        families=out["fam"],
        sizes=f32("sizes"),
        rotations=f32("rot"),
        albedo=f32("albedo"),
        seed=int(seed),
    )
