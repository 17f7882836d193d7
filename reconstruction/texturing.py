"""Textures of roof and wall surfaces cut from oriented aerial images.

For every roof and wall surface of the textured LoDs (ground surfaces are not seen from
the air), each camera is scored on a grid of sample points over the surface:

- visibility: a ray from the camera's centre to each sample, cast against every building's
  triangulated solids of that LoD (one Embree scene, open3d's RaycastingScene); the sample
  is seen when the ray hits nothing more than `depth_tolerance_m` before it, it lies on the
  image, and the surface faces the camera within `max_view_angle_deg`. Walls shared by
  adjoining buildings and courtyard walls are hidden this way by the neighbouring solids.
  For a generalised LoD (LOD1.2, LOD1.3), the rays are also cast against the finest LoD of
  the buildings, whose first hit hides the sample unless it is the surface's own building
  (a tower's LOD1.2 block is lower than the tower, which hides its neighbour's wall).
- score = visible share x cos(viewing angle) / GSD, with the GSD the size in metres of one
  image pixel at the surface's mean depth (depth / focal length): a camera that sees all
  of the surface, head-on and close, wins. Ties go to the camera whose name sorts first.

A camera needs `min_visible_share` of the samples seen, and every vertex of the surface on
its image; a surface that no camera sees that well keeps a plain material.

The patch of a surface lies in the surface's own plane: u along its horizontal (for a
flat roof, along its longest edge), v up the slope (for a wall, up), both seen from
outside. Its pixel size is the chosen image's pixel footprint on the surface (GSD over
cos of the viewing angle), made coarser by one factor for the whole building when its
patches would exceed the per-building pixel budget, and capped per side. Each patch pixel
is a point of the plane, projected into the image (with its distortion) and sampled
bilinearly by cv2.remap. A surface partly hidden (above the minimum share) keeps what the
image shows there, the occluder included. Terrain and trees are not occluders here: the
buildings' solids are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import cv2
import numpy as np
import open3d as o3d
import shapely

from reconstruction.geometry import surface_normal
from reconstruction.triangulate import triangulate_surface
from twin.config import TextureConfig
from twin.imagery.camera import FrameCamera
from twin.model import Building, SurfaceKind, SurfaceTexture, TextureKey

TEXTURED_KINDS = (SurfaceKind.ROOF, SurfaceKind.WALL)
MIN_SIDE_M = 0.05
"""Surfaces narrower or lower than this in their plane are slivers, not textured."""
_NO_SAMPLES = np.empty((0, 3))
IMAGE_MARGIN_PX = 1.0
"""Samples and vertices must project this far inside the image's edge (bilinear sampling)."""


@dataclass(frozen=True)
class TexturingReport:
    """What texturing did, per LoD: roof and wall surfaces, those textured, those no image saw
    well enough and those whose patch could not be made (both keep a plain material), so that
    surfaces = textured + unseen + failed; and the images that gave a texture."""

    per_lod: Mapping[str, Mapping[str, int]]
    images_used: tuple[str, ...]
    failed: tuple[str, ...] = ()
    """Surfaces that could not be textured, each with the building, the surface and the reason;
    they keep a plain material and the run goes on."""

    @property
    def surfaces(self) -> int:
        return sum(c["surfaces"] for c in self.per_lod.values())

    @property
    def textured(self) -> int:
        return sum(c["textured"] for c in self.per_lod.values())

    @property
    def unseen(self) -> int:
        return sum(c["unseen"] for c in self.per_lod.values())

    def to_dict(self) -> dict:
        return {
            "surfaces": self.surfaces,
            "textured": self.textured,
            "seen_by_no_image": self.unseen,
            "per_lod": {lod: dict(counts) for lod, counts in sorted(self.per_lod.items())},
            "images_used": list(self.images_used),
            "failed": list(self.failed),
        }


@dataclass(frozen=True, eq=False)
class _Face:
    """A surface to texture with its plane frame: origin + u * u_axis + v * v_axis."""

    building: int
    key: TextureKey
    origin: np.ndarray
    u_axis: np.ndarray
    v_axis: np.ndarray
    normal: np.ndarray
    rings_2d: tuple[np.ndarray, ...]
    bounds: tuple[float, float, float, float]
    vertices: np.ndarray
    samples: np.ndarray

    def world(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.origin + u[..., None] * self.u_axis + v[..., None] * self.v_axis


@dataclass(frozen=True)
class _Choice:
    camera: int
    score: float


def texture_buildings(
    buildings: Sequence[Building],
    cameras: Sequence[FrameCamera],
    images: Mapping[str, np.ndarray],
    config: TextureConfig = TextureConfig(),
) -> tuple[list[Building], TexturingReport]:
    """The buildings with `textures` for their roof and wall surfaces, and what was done.

    `images` maps each camera's name to its RGB image (h, w, 3) uint8, of the camera's size;
    each image is looked up once, camera after camera, so a mapping that reads images on
    demand holds only one at a time.
    """
    cameras = sorted(cameras, key=lambda c: c.name)
    textures: list[dict[TextureKey, SurfaceTexture]] = [dict(b.textures) for b in buildings]
    occluders = _OccluderScenes(buildings)
    per_lod: dict[str, dict[str, int]] = {}
    jobs: dict[int, list[tuple[_Face, tuple[int, int]]]] = {}
    failed: list[str] = []
    for lod in config.lods:
        failed_before = len(failed)
        faces = _faces(buildings, lod, config, failed)
        failed_faces = len(failed) - failed_before
        if not faces and not failed_faces:
            continue
        choices = _choose_cameras(occluders, lod, faces, cameras, config) if faces else {}
        sizes = _patch_sizes(faces, choices, cameras, config)
        for i, choice in sorted(choices.items()):
            # the sample grid was only for choosing: dropped, so that a commune's faces stay small
            jobs.setdefault(choice.camera, []).append((replace(faces[i], samples=_NO_SAMPLES), sizes[i]))
        per_lod[lod] = {
            "surfaces": len(faces) + failed_faces, "textured": len(choices), "unseen": len(faces) - len(choices),
            "failed": failed_faces,
        }
    used: set[str] = set()
    for camera_index, camera in enumerate(cameras):
        if camera_index not in jobs:
            continue
        image = _checked_image(camera, images)
        used.add(camera.name)
        for face, (width, height) in jobs[camera_index]:
            try:
                textures[face.building][face.key] = _cut_patch(face, camera, image, width, height)
            except SURFACE_ERRORS as error:
                failed.append(_failure(buildings[face.building], face.key, error))
                per_lod[face.key[0]]["textured"] -= 1
                per_lod[face.key[0]]["failed"] += 1
    textured = [replace(b, textures=t) if t != dict(b.textures) else b for b, t in zip(buildings, textures)]
    return textured, TexturingReport(per_lod, tuple(sorted(used)), tuple(failed))


SURFACE_ERRORS = (ValueError, ArithmeticError, np.linalg.LinAlgError, cv2.error, shapely.errors.GEOSException)
"""What degenerate geometry can raise in the numeric steps of one surface."""


def _failure(building: Building, key: TextureKey, error: Exception) -> str:
    lod, solid, surface = key
    return f"{building.id}: LoD {lod}, solid {solid}, surface {surface}: {type(error).__name__}: {error}"


def _checked_image(camera: FrameCamera, images: Mapping[str, np.ndarray]) -> np.ndarray:
    image = images[camera.name]
    expected = (camera.intrinsics.height, camera.intrinsics.width, 3)
    if image.shape != expected or image.dtype != np.uint8:
        raise ValueError(
            f"camera {camera.name!r}: its image is {image.shape} {image.dtype}, the camera needs {expected} uint8"
        )
    return image


def _faces(buildings: Sequence[Building], lod: str, config: TextureConfig, failed: list[str]) -> list[_Face]:
    faces = []
    for b, building in enumerate(buildings):
        for s, solid in enumerate(building.solids(lod)):
            for f, surface in enumerate(solid.surfaces):
                if surface.kind not in TEXTURED_KINDS:
                    continue
                try:
                    face = _face(b, (lod, s, f), surface.rings, surface_normal(surface), config.samples_per_surface)
                except SURFACE_ERRORS as error:
                    failed.append(_failure(building, (lod, s, f), error))
                    continue
                if face is not None:
                    faces.append(face)
    return faces


def _face(building: int, key: TextureKey, rings: Sequence[np.ndarray], normal: np.ndarray, max_samples: int) -> _Face | None:
    if not np.any(normal):  # a surface without area
        return None
    horizontal = np.cross([0.0, 0.0, 1.0], normal)
    if np.linalg.norm(horizontal) > 1e-3:
        u_axis = horizontal / np.linalg.norm(horizontal)
    else:  # a flat roof: along its longest edge, so that the patch hugs the outline
        exterior = rings[0]
        edges = np.roll(exterior, -1, axis=0) - exterior
        longest = edges[int(np.argmax(np.linalg.norm(edges, axis=1)))]
        longest = longest - (longest @ normal) * normal
        u_axis = longest / np.linalg.norm(longest)
    v_axis = np.cross(normal, u_axis)
    origin = rings[0][0]
    rings_2d = tuple(np.column_stack([(r - origin) @ u_axis, (r - origin) @ v_axis]) for r in rings)
    stacked = np.concatenate(rings_2d)
    umin, vmin = stacked.min(axis=0)
    umax, vmax = stacked.max(axis=0)
    if umax - umin < MIN_SIDE_M or vmax - vmin < MIN_SIDE_M:
        return None
    polygon = shapely.Polygon(rings_2d[0], rings_2d[1:])
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon)
    if polygon.area <= 0:
        return None
    samples_2d = _grid_samples(polygon, max_samples)
    samples = origin + samples_2d[:, :1] * u_axis + samples_2d[:, 1:] * v_axis
    return _Face(building, key, origin, u_axis, v_axis, normal, rings_2d, (umin, vmin, umax, vmax),
                 np.concatenate(rings), samples)


def _grid_samples(polygon: shapely.Geometry, max_samples: int) -> np.ndarray:
    """Centres of a square grid of about `max_samples` cells that fall inside the polygon,
    kept clear of its edges (where the neighbouring surfaces meet it)."""
    step = math.sqrt(polygon.area / max_samples)
    inner = polygon.buffer(-min(0.05, 0.25 * step))
    umin, vmin, umax, vmax = polygon.bounds
    us = np.arange(umin + step / 2, umax, step)
    vs = np.arange(vmin + step / 2, vmax, step)
    grid_u, grid_v = (g.ravel() for g in np.meshgrid(us, vs))
    inside = shapely.contains_xy(inner, grid_u, grid_v) if not inner.is_empty else np.zeros(len(grid_u), bool)
    points = np.column_stack([grid_u[inside], grid_v[inside]])
    if len(points) > max_samples:
        points = points[np.linspace(0, len(points) - 1, max_samples).round().astype(int)]
    if len(points) == 0:
        point = polygon.representative_point()
        points = np.array([[point.x, point.y]])
    return points


@dataclass(frozen=True, eq=False)
class _Occluders:
    """One Embree scene of solids, in coordinates relative to `origin` (float32 cannot hold
    projected coordinates to the centimetre), with the building index of each triangle."""

    scene: o3d.t.geometry.RaycastingScene
    triangle_building: np.ndarray
    origin: np.ndarray

    @staticmethod
    def of(buildings: Sequence[Building], lods: Sequence[str | None], origin: np.ndarray) -> "_Occluders":
        """The solids of each building at its LoD in `lods` (None: none)."""
        vertices, triangles, owners, offset = [np.zeros((0, 3))], [np.zeros((0, 3), np.int64)], [], 0
        for index, (building, lod) in enumerate(zip(buildings, lods)):
            for solid in building.solids(lod) if lod is not None else ():
                for surface in solid.surfaces:
                    try:
                        surface_vertices, surface_triangles = triangulate_surface(surface)
                    except SURFACE_ERRORS:  # a degenerate surface hides nothing; `_faces` reports it when textured
                        continue
                    vertices.append(surface_vertices - origin)
                    triangles.append(surface_triangles + offset)
                    owners.append(np.full(len(surface_triangles), index))
                    offset += len(surface_vertices)
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(
            o3d.core.Tensor(np.concatenate(vertices).astype(np.float32)),
            o3d.core.Tensor(np.concatenate(triangles).astype(np.uint32)),
        )
        return _Occluders(scene, np.concatenate(owners) if owners else np.zeros(0, np.int64), origin)

    def first_hits(self, center: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance to the first solid along each ray from `center`, and that solid's building (-1: none)."""
        rays = np.hstack([np.broadcast_to(center - self.origin, directions.shape), directions]).astype(np.float32)
        hits = self.scene.cast_rays(o3d.core.Tensor(rays))
        distance = hits["t_hit"].numpy().astype(float)
        primitive = hits["primitive_ids"].numpy().astype(np.int64)
        owner = np.full(len(rays), -1)
        hit = np.isfinite(distance)
        owner[hit] = self.triangle_building[primitive[hit]]
        return distance, owner


class _OccluderScenes:
    """The scenes of the buildings at one LoD each, built once and shared by the LoDs textured."""

    def __init__(self, buildings: Sequence[Building]) -> None:
        self.buildings = buildings
        corners = [s.vertices().min(axis=0) for b in buildings for lod in b.available_lods() for s in b.solids(lod)]
        self.origin = np.floor(np.min(corners, axis=0)) if corners else np.zeros(3)
        self.finest = tuple(_finest_lod(b) for b in buildings)
        self._scenes: dict[tuple[str | None, ...], _Occluders] = {}

    def at(self, lods: tuple[str | None, ...]) -> _Occluders:
        if lods not in self._scenes:
            self._scenes[lods] = _Occluders.of(self.buildings, lods, self.origin)
        return self._scenes[lods]


def _finest_lod(building: Building) -> str | None:
    lods = building.available_lods()
    return max(lods, key=lambda lod: tuple(int(part) for part in lod.split("."))) if lods else None


def _choose_cameras(
    occluders: _OccluderScenes,
    lod: str,
    faces: Sequence[_Face],
    cameras: Sequence[FrameCamera],
    config: TextureConfig,
) -> dict[int, _Choice]:
    """Per face index, the best camera that sees enough of it.

    Each camera first keeps the faces whose bounding sphere reaches its image and whose
    front it may see, so that the rays of a camera go only to the faces near its view (what
    keeps a region's thousands of images from testing every face)."""
    samples = np.concatenate([f.samples for f in faces])
    sample_building = np.concatenate([np.full(len(f.samples), f.building) for f in faces])
    sample_count = np.array([len(f.samples) for f in faces])
    sample_start = np.concatenate([[0], np.cumsum(sample_count)[:-1]])
    normals = np.array([f.normal for f in faces])
    centres = np.array([f.vertices.mean(axis=0) for f in faces])
    radii = np.array([np.linalg.norm(f.vertices - c, axis=1).max() for f, c in zip(faces, centres)])
    # Buildings without this LoD hide others with their finest one.
    at_lod = tuple(lod if lod in b.available_lods() else f for b, f in zip(occluders.buildings, occluders.finest))
    same_lod = occluders.at(at_lod)
    # A generalised LoD (a LOD1.2 block at the roof's 70th percentile) can be lower than the
    # building really is: the neighbours' finest LoD hides what they really hide.
    finest = occluders.at(occluders.finest) if occluders.finest != at_lod else None
    min_cos = math.cos(math.radians(config.max_view_angle_deg))
    best: dict[int, _Choice] = {}
    for camera_index, camera in enumerate(cameras):
        near = _faces_in_view(camera, centres, radii, normals)
        if len(near) == 0:
            continue
        face_vertices = [faces[f].vertices for f in near]
        vertex_pixels, vertex_depth = camera.project(np.concatenate(face_vertices))
        vertex_on = (vertex_depth > 0) & camera.inside(vertex_pixels, IMAGE_MARGIN_PX)
        vertex_face = np.repeat(np.arange(len(near)), [len(v) for v in face_vertices])
        near = near[np.bincount(vertex_face, weights=~vertex_on, minlength=len(near)) == 0]
        if len(near) == 0:
            continue
        counts = sample_count[near]
        local_face = np.repeat(np.arange(len(near)), counts)
        index = np.repeat(sample_start[near] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
        points = samples[index]
        to_camera = camera.center - points
        distance = np.linalg.norm(to_camera, axis=1)
        cosine = np.einsum("ij,ij->i", to_camera, normals[near][local_face]) / distance
        pixels, depth = camera.project(points)
        candidate = (cosine >= min_cos) & (depth > 0) & camera.inside(pixels, IMAGE_MARGIN_PX)
        directions = -to_camera[candidate] / distance[candidate, None]
        reach = distance[candidate] - config.depth_tolerance_m
        hit, _ = same_lod.first_hits(camera.center, directions)
        visible = hit >= reach
        if finest is not None:
            hit, owner = finest.first_hits(camera.center, directions)
            visible &= (hit >= reach) | (owner == sample_building[index][candidate])
        seen = np.zeros(len(points), bool)
        seen[candidate] = visible
        share = np.bincount(local_face, weights=seen, minlength=len(near)) / counts
        focal = math.sqrt(camera.intrinsics.fx * camera.intrinsics.fy)
        mean_cos = np.bincount(local_face, weights=cosine, minlength=len(near)) / counts
        gsd = np.bincount(local_face, weights=depth, minlength=len(near)) / counts / focal
        for k in np.flatnonzero(share >= config.min_visible_share):
            face, score = int(near[k]), float(share[k] * mean_cos[k] / gsd[k])
            if face not in best or score > best[face].score:  # cameras come sorted by name: ties keep the first
                best[face] = _Choice(camera_index, score)
    return best


def _faces_in_view(camera: FrameCamera, centres: np.ndarray, radii: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Indices of the faces whose bounding sphere may reach the image, in front of the
    camera, with their front side towards it."""
    facing = np.einsum("ij,ij->i", camera.center - centres, normals) > -radii
    pixels, depth = camera.project(centres)
    reach = radii * max(camera.intrinsics.fx, camera.intrinsics.fy) / np.maximum(depth, 1e-9)
    width, height = camera.intrinsics.width, camera.intrinsics.height
    with np.errstate(invalid="ignore"):
        on_image = (
            (pixels[:, 0] >= -reach) & (pixels[:, 0] <= width + reach)
            & (pixels[:, 1] >= -reach) & (pixels[:, 1] <= height + reach)
        )
    return np.flatnonzero(facing & (depth + radii > 0) & on_image)


def _patch_sizes(
    faces: Sequence[_Face], choices: Mapping[int, _Choice], cameras: Sequence[FrameCamera], config: TextureConfig
) -> dict[int, tuple[int, int]]:
    """Per chosen face, (width, height) in pixels of its patch: the image's resolution on the
    face along each of its axes, coarser for all of a building's faces when they would exceed
    its budget, capped per side."""
    footprints = {i: _axis_footprints(faces[i], cameras[choice.camera]) for i, choice in choices.items()}
    natural_total: dict[int, int] = {}
    for i in choices:
        width, height = _pixels(faces[i], *footprints[i])
        natural_total[faces[i].building] = natural_total.get(faces[i].building, 0) + width * height
    sizes = {}
    for i in choices:
        coarsen = max(1.0, math.sqrt(natural_total[faces[i].building] / config.budget_px_per_building))
        width, height = _pixels(faces[i], footprints[i][0] * coarsen, footprints[i][1] * coarsen)
        longest = max(width, height)
        if longest > config.max_patch_side_px:
            shrink = config.max_patch_side_px / longest
            width, height = max(2, int(width * shrink)), max(2, int(height * shrink))
        sizes[i] = (width, height)
    return sizes


def _axis_footprints(face: _Face, camera: FrameCamera) -> tuple[float, float]:
    """Metres on the face per image pixel along its u and v axes, at the middle of its
    vertices: foreshortening coarsens only the axis that tilts away from the camera, so one
    figure for both would blur a wall seen at 60 degrees to half its horizontal detail."""
    centre = face.vertices.mean(axis=0)
    step = 0.1
    pixels, _ = camera.project(np.array([centre, centre + step * face.u_axis, centre + step * face.v_axis]))
    along_u, along_v = (float(np.linalg.norm(pixels[k] - pixels[0])) for k in (1, 2))
    return step / max(along_u, 1e-6), step / max(along_v, 1e-6)


def _pixels(face: _Face, pixel_u_m: float, pixel_v_m: float) -> tuple[int, int]:
    umin, vmin, umax, vmax = face.bounds
    return (max(2, int(math.ceil((umax - umin) / pixel_u_m)) + 1),
            max(2, int(math.ceil((vmax - vmin) / pixel_v_m)) + 1))


def _cut_patch(face: _Face, camera: FrameCamera, image: np.ndarray, width: int, height: int) -> SurfaceTexture:
    """The face's patch: its first and last columns and rows sample the face's bounding box
    edges, so that texture coordinates 0 and 1 fall on pixel centres (as atlases expect)."""
    umin, vmin, umax, vmax = face.bounds
    u = np.linspace(umin, umax, width)
    v = np.linspace(vmax, vmin, height)  # image rows run down, v up
    grid_u, grid_v = np.meshgrid(u, v)
    world = face.world(grid_u.ravel(), grid_v.ravel())
    pixels, _ = camera.project(world)
    map_x = pixels[:, 0].reshape(height, width).astype(np.float32)
    map_y = pixels[:, 1].reshape(height, width).astype(np.float32)
    patch = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    uv = tuple(
        np.clip(np.column_stack([(r[:, 0] - umin) / (umax - umin), (r[:, 1] - vmin) / (vmax - vmin)]), 0.0, 1.0)
        for r in face.rings_2d
    )
    return SurfaceTexture(patch, uv, camera.name)
