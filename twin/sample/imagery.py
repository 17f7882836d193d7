"""Aerial images of the sample district, rendered with known cameras.

Eight vertical frames in two strips (about 60 % forward overlap, as an aerial survey flies)
and four oblique frames, one from each cardinal direction, are ray cast through the true
scene (terrain, LoD2.2 buildings, tree crowns) with open3d's Embree ray casting. Every
surface carries a procedural pattern, a function of the world position only, so a point
has the same colour in every image (Lambertian shading, no specular), which is what dense
matching assumes and what lets tests check a texture patch against the truth:
- roofs: a material colour per building, tile courses along the contour lines of sloped
  roofs, gravel noise on flat ones;
- walls: plaster with a grid of windows (3 m bays, 3 m storeys) counted from the ground;
- terrain: grass and asphalt patches; trees: dark foliage.
Images are supersampled 2 x 2, get a little sensor noise, and are written as JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import open3d as o3d

from reconstruction.extrude import extrude_faces
from reconstruction.geometry import surface_normal
from reconstruction.triangulate import triangulate_surface
from twin.imagery.camera import FrameCamera, Intrinsics, look_at, rotation_from_opk, opk_from_rotation
from twin.model import SurfaceKind
from twin.sample.scene import EXTENT, SceneBuilding, Tree, terrain_height

SUPERSAMPLING = 2
JPEG_QUALITY = 88
SUN = np.array([-0.35, -0.55, 0.76]) / np.linalg.norm([-0.35, -0.55, 0.76])
"""Direction towards the sun: from the south-south-west, 50 degrees high."""

_TERRAIN, _ROOF, _WALL, _GROUND, _TREE = 0, 1, 2, 3, 4
_ROOF_COLOURS = np.array([[168, 82, 62], [92, 96, 108], [150, 152, 158], [126, 70, 52], [110, 118, 104]], float)
_WALL_COLOURS = np.array([[222, 208, 184], [196, 180, 160], [232, 226, 214], [204, 164, 132], [186, 190, 196]], float)
_GLASS = np.array([48, 60, 78], float)


@dataclass(frozen=True, eq=False)
class SampleScene:
    """The district as triangles with, per triangle, what it is and whose it is (local metres)."""

    raycasting: o3d.t.geometry.RaycastingScene
    kind: np.ndarray  # (t,) _TERRAIN, _ROOF, ...
    building: np.ndarray  # (t,) building index, -1 for terrain and trees
    normal: np.ndarray  # (t, 3) outward unit normals
    along: np.ndarray  # (t, 2) horizontal unit direction of walls (zero elsewhere)
    ground_z: np.ndarray  # (t,) the building's ground height (for storeys)

    def colour(self, points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        """Shaded colour (n, 3) float 0-255 of points lying on the given triangles."""
        kind = self.kind[triangles]
        building = self.building[triangles]
        colour = np.empty((len(points), 3))
        fine = _value_noise(points, 0.18, 1) - 0.5
        medium = _value_noise(points, 0.9, 2) - 0.5

        terrain = (kind == _TERRAIN) | (kind == _GROUND)
        grass, asphalt = np.array([96, 124, 64], float), np.array([112, 112, 108], float)
        patches = np.clip((_value_noise(points[terrain], 9.0, 3) - 0.35) * 4.0, 0.0, 1.0)[:, None]
        colour[terrain] = grass * (1 - patches) + asphalt * patches

        roof = kind == _ROOF
        base = _ROOF_COLOURS[building[roof] % len(_ROOF_COLOURS)]
        sloped = np.abs(self.normal[triangles[roof], 2]) < 0.99
        courses = np.where(sloped, np.where((points[roof, 2] / 0.28) % 1.0 < 0.22, 0.72, 1.0), 1.0)
        colour[roof] = base * courses[:, None]

        wall = kind == _WALL
        base = _WALL_COLOURS[building[wall] % len(_WALL_COLOURS)]
        along = np.einsum("ij,ij->i", points[wall, :2], self.along[triangles[wall]])
        storey = points[wall, 2] - self.ground_z[triangles[wall]]
        window = ((along / 3.0) % 1.0 > 0.3) & ((along / 3.0) % 1.0 < 0.7) & ((storey / 3.0) % 1.0 > 0.35) & ((storey / 3.0) % 1.0 < 0.8)
        colour[wall] = np.where(window[:, None], _GLASS, base)

        tree = kind == _TREE
        colour[tree] = np.array([52, 84, 40], float) * (0.7 + 0.6 * _value_noise(points[tree], 0.5, 4))[:, None]

        colour *= (1.0 + 0.35 * fine + 0.2 * medium)[:, None]
        shade = 0.55 + 0.45 * np.clip(self.normal[triangles] @ SUN, 0.0, None)
        return np.clip(colour * shade[:, None], 0, 255)

    def colour_at(self, points: np.ndarray) -> np.ndarray:
        """The true colour of the scene surface nearest to each point (local metres)."""
        closest = self.raycasting.compute_closest_points(o3d.core.Tensor(points.astype(np.float32)))
        on_surface = closest["points"].numpy().astype(float)
        return self.colour(on_surface, closest["primitive_ids"].numpy().astype(np.int64))

    def render(self, camera: FrameCamera, origin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The RGB uint8 image camera `camera` (map coordinates, `origin` = local (0, 0, 0)) sees."""
        k = camera.intrinsics
        s = SUPERSAMPLING
        fine = FrameCamera(
            camera.name,
            Intrinsics(k.width * s, k.height * s, k.fx * s, k.fy * s, k.cx * s + (s - 1) / 2, k.cy * s + (s - 1) / 2, k.k1, k.k2, k.k3, k.p1, k.p2),
            camera.center - origin,
            camera.rotation,
        )
        v, u = np.mgrid[0 : k.height * s, 0 : k.width * s]
        directions = fine.rays(np.column_stack([u.ravel(), v.ravel()]).astype(float))
        rays = np.column_stack([np.broadcast_to(fine.center, directions.shape), directions]).astype(np.float32)
        hits = self.raycasting.cast_rays(o3d.core.Tensor(rays))
        distance = hits["t_hit"].numpy().astype(float)
        triangles = hits["primitive_ids"].numpy().astype(np.int64)
        sky = ~np.isfinite(distance)
        colour = np.empty((len(rays), 3))
        colour[sky] = [176, 198, 226]
        points = fine.center + directions[~sky] * distance[~sky, None]
        colour[~sky] = self.colour(points, triangles[~sky])
        image = colour.reshape(k.height * s, k.width * s, 3).astype(np.float32)
        image = cv2.resize(image, (k.width, k.height), interpolation=cv2.INTER_AREA)
        image += rng.normal(0.0, 1.5, image.shape)
        return np.clip(np.round(image), 0, 255).astype(np.uint8)


def sample_scene(buildings: list[SceneBuilding], trees: list[Tree], margin: float = 120.0) -> SampleScene:
    scene = o3d.t.geometry.RaycastingScene()
    kinds, owners, normals, alongs, grounds, triangle_sets, offset = [], [], [], [], [], [], 0

    def add(vertices, triangles, kind, owner, normal, along=(0.0, 0.0), ground_z=0.0) -> None:
        nonlocal offset
        triangle_sets.append((vertices, triangles + offset))
        offset += len(vertices)
        count = len(triangles)
        kinds.append(np.full(count, kind))
        owners.append(np.full(count, owner))
        normals.append(np.broadcast_to(normal, (count, 3)) if np.ndim(normal) == 1 else normal)
        alongs.append(np.broadcast_to(np.asarray(along, float), (count, 2)))
        grounds.append(np.full(count, ground_z))

    xs = np.arange(-margin, EXTENT[0] + margin + 0.5, 2.0)
    ys = np.arange(-margin, EXTENT[1] + margin + 0.5, 2.0)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    vertices = np.column_stack([gx.ravel(), gy.ravel(), terrain_height(gx, gy).ravel()])
    ny = gx.shape[1]
    i, j = np.meshgrid(np.arange(gx.shape[0] - 1), np.arange(ny - 1), indexing="ij")
    a = (i * ny + j).ravel()
    triangles = np.concatenate([np.column_stack([a, a + ny, a + ny + 1]), np.column_stack([a, a + ny + 1, a + 1])])
    add(vertices, triangles, _TERRAIN, -1, _triangle_normals(vertices, triangles))

    kind_codes = {SurfaceKind.ROOF: _ROOF, SurfaceKind.WALL: _WALL, SurfaceKind.GROUND: _GROUND}
    for index, building in enumerate(buildings):
        for surface in extrude_faces(building.roof_faces(), building.ground_z).surfaces:
            vertices, triangles = triangulate_surface(surface)
            normal = surface_normal(surface)
            along = np.array([-normal[1], normal[0]])
            along = along / np.linalg.norm(along) if np.linalg.norm(along) > 1e-9 else np.zeros(2)
            add(vertices, triangles, kind_codes[surface.kind], index, normal, along, building.ground_z)

    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=16)
    unit_vertices, unit_triangles = np.asarray(sphere.vertices), np.asarray(sphere.triangles)
    for tree in trees:
        half_height = (tree.top - tree.crown_base) / 2
        centre = np.array([tree.x, tree.y, float(terrain_height(tree.x, tree.y)) + tree.crown_base + half_height])
        vertices = unit_vertices * [tree.crown_radius, tree.crown_radius, half_height] + centre
        add(vertices, unit_triangles, _TREE, -1, _triangle_normals(vertices, unit_triangles))

    # One mesh, so that primitive ids index the per-triangle arrays directly.
    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(np.concatenate([v for v, _ in triangle_sets]).astype(np.float32))
    mesh.triangle.indices = o3d.core.Tensor(np.concatenate([t for _, t in triangle_sets]).astype(np.int32))
    scene.add_triangles(mesh)
    return SampleScene(
        scene,
        np.concatenate(kinds),
        np.concatenate(owners),
        np.concatenate(normals).astype(float),
        np.concatenate(alongs).astype(float),
        np.concatenate(grounds).astype(float),
    )


def sample_cameras(origin: np.ndarray, rng: np.random.Generator) -> list[FrameCamera]:
    """The survey: 8 vertical frames (GSD 0.15 m, 60 % forward overlap) and 4 obliques (45 degrees, GSD about 0.2 m)."""
    cameras = []
    ground = float(terrain_height(EXTENT[0] / 2, EXTENT[1] / 2))
    vertical = Intrinsics(1200, 900, 2000.0, 2000.0, 599.5 + 3.2, 449.5 - 2.1, k1=-0.02, k2=0.004)
    for strip, y in enumerate((40.0, 120.0)):
        for frame, x in enumerate((0.0, 70.0, 140.0, 210.0)):
            omega, phi, kappa = rng.uniform(-1.0, 1.0, 3)
            # A nadir frame flown east, image top towards north, tilted by a degree as aircraft are.
            nadir = look_at(np.zeros(3), np.array([0.0, 0.0, -1.0]))
            base = opk_from_rotation(nadir)
            rotation = rotation_from_opk(base[0] + omega, base[1] + phi, base[2] + kappa)
            center = origin + [x, y, ground + 300.0] + rng.uniform(-1.5, 1.5, 3)
            cameras.append(FrameCamera(f"vertical_{strip + 1}_{frame + 1}", vertical, center, rotation))
    oblique = Intrinsics(1200, 900, 1400.0, 1400.0, 599.5 - 1.7, 449.5 + 2.6, k1=-0.05, k2=0.01, p1=2e-4, p2=-1e-4)
    target = np.array([EXTENT[0] / 2, EXTENT[1] / 2, ground + 4.0])
    for name, (dx, dy) in {"north": (0, 1), "east": (1, 0), "south": (0, -1), "west": (-1, 0)}.items():
        center = target + [200.0 * dx, 200.0 * dy, 200.0]
        cameras.append(FrameCamera(f"oblique_{name}", oblique, origin + center, look_at(center, target)))
    return cameras


def render_survey(buildings: list[SceneBuilding], trees: list[Tree], origin: np.ndarray, seed: int):
    """The survey's cameras (map coordinates) and their images, in camera order."""
    rng = np.random.default_rng([seed, 7])
    scene = sample_scene(buildings, trees)
    cameras = sample_cameras(origin, rng)
    return cameras, [scene.render(camera, origin, rng) for camera in cameras]


def _triangle_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    return normal / np.linalg.norm(normal, axis=1, keepdims=True)


def _value_noise(points: np.ndarray, cell: float, stream: int) -> np.ndarray:
    """Smooth pseudo-random values in [0, 1] on a 3D lattice of `cell` metres.

    Hash-based (integer mixing of the lattice coordinates), so the same point has the same
    value whatever else is rendered, with no table to store.
    """
    scaled = points / cell
    base = np.floor(scaled).astype(np.int64)
    frac = scaled - base
    smooth = frac * frac * (3.0 - 2.0 * frac)
    total = np.zeros(len(points))
    for corner in range(8):
        offset = np.array([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
        weight = np.prod(np.where(offset, smooth, 1.0 - smooth), axis=1)
        total += weight * _hash(base + offset, stream)
    return total


def _hash(lattice: np.ndarray, stream: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (lattice[:, 0] * 73856093) ^ (lattice[:, 1] * 19349663) ^ (lattice[:, 2] * 83492791) ^ (stream * 2654435761)
        h = (h ^ (h >> 13)) * 1274126177
        h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(float) / 65535.0
