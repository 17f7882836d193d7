"""A simulated airborne LiDAR scan of the sample district, LiDAR HD-like.

Two parallel flight strips at 1,000 m scan across the district (scan angles within about
±20°), each at ~6.5 pulses/m², so that walls facing a strip get sparse points and walls
and ground behind buildings are occluded as in a real survey. Pulses are cast on the
scene's triangles with open3d's ray casting (Embree); tree crowns are semi-transparent:
a pulse may return from a crown and go on through it, giving several returns.
Classes follow ASPRS/IGN: 2 ground, 3/4/5 vegetation by height, 6 building (67 for
some buildings, as in some IGN deliveries), with a few points misclassified.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from reconstruction.extrude import extrude_faces
from reconstruction.triangulate import triangulate_solid
from twin.gpstime import ADJUSTED_GPS_OFFSET_S, GPS_EPOCH
from twin.sample.scene import EXTENT, SceneBuilding, Tree, terrain_height


@dataclass(frozen=True)
class ScanSettings:
    altitude_m: float = 1000.0
    strip_x_m: tuple[float, ...] = (-150.0, 370.0)
    """Across-track positions of the flight lines (flown south to north)."""
    pulses_per_m2_per_strip: float = 6.5
    max_scan_angle_deg: float = 21.0
    range_noise_m: float = 0.035
    planimetric_noise_m: float = 0.02
    canopy_return_probability: float = 0.5
    max_returns: int = 4
    speed_m_s: float = 60.0
    strip_interval_s: float = 900.0
    start: dt.datetime = dt.datetime(2024, 4, 17, 10, 0, tzinfo=dt.timezone.utc)
    class_67_buildings: tuple[str, ...] = ("B05", "B25")
    """Buildings whose points are all in class 67, as in some IGN deliveries."""
    class_67_share: float = 0.03
    misclassified_share: float = 0.002
    margin_m: float = 6.0


@dataclass(frozen=True, eq=False)
class SimulatedScan:
    """Points in local coordinates, in acquisition order."""

    xyz: np.ndarray
    classification: np.ndarray
    return_number: np.ndarray
    number_of_returns: np.ndarray
    gps_time: np.ndarray
    scan_angle_deg: np.ndarray
    intensity: np.ndarray
    point_source_id: np.ndarray


_TERRAIN, _BUILDING, _TREE = 0, 1, 2


def simulate_scan(
    buildings: list[SceneBuilding],
    trees: list[Tree],
    rng: np.random.Generator,
    settings: ScanSettings = ScanSettings(),
    extent: tuple[float, float] = EXTENT,
) -> SimulatedScan:
    """Scans the area from (0, 0) to `extent` (the sample district's by default)."""
    scene, kinds, owners = _raycasting_scene(buildings, trees, settings.margin_m + 20, extent)
    parts = []
    for strip, strip_x in enumerate(settings.strip_x_m):
        origins, directions, times = _pulses(strip, strip_x, rng, settings, extent)
        parts.append(_cast(scene, kinds, owners, origins, directions, times, strip + 1, rng, settings))
    scan = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    classification = _classify(scan, buildings, rng, settings)
    return SimulatedScan(
        xyz=scan["xyz"],
        classification=classification,
        return_number=scan["return_number"],
        number_of_returns=scan["number_of_returns"],
        gps_time=scan["gps_time"],
        scan_angle_deg=scan["scan_angle"],
        intensity=_intensity(scan["kind"], rng),
        point_source_id=scan["strip"],
    )


def _raycasting_scene(buildings: list[SceneBuilding], trees: list[Tree], margin: float, extent: tuple[float, float]):
    scene = o3d.t.geometry.RaycastingScene()
    kinds, owners = {}, {}

    def add(vertices: np.ndarray, triangles: np.ndarray, kind: int, owner: int) -> None:
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = o3d.core.Tensor(vertices.astype(np.float32))
        mesh.triangle.indices = o3d.core.Tensor(triangles.astype(np.int32))
        geometry_id = scene.add_triangles(mesh)
        kinds[geometry_id], owners[geometry_id] = kind, owner

    xs = np.arange(-margin, extent[0] + margin + 0.5, 1.0)
    ys = np.arange(-margin, extent[1] + margin + 0.5, 1.0)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    vertices = np.column_stack([gx.ravel(), gy.ravel(), terrain_height(gx, gy).ravel()])
    nx, ny = gx.shape
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
    a = (i * ny + j).ravel()
    triangles = np.concatenate([np.column_stack([a, a + ny, a + ny + 1]), np.column_stack([a, a + ny + 1, a + 1])])
    add(vertices, triangles, _TERRAIN, -1)

    for index, building in enumerate(buildings):
        vertices, triangles = triangulate_solid(extrude_faces(building.roof_faces(), building.ground_z))
        add(vertices, triangles, _BUILDING, index)

    sphere = o3d.geometry.TriangleMesh.create_sphere(radius=1.0, resolution=12)
    unit_vertices, unit_triangles = np.asarray(sphere.vertices), np.asarray(sphere.triangles)
    for index, tree in enumerate(trees):
        half_height = (tree.top - tree.crown_base) / 2
        centre = np.array([tree.x, tree.y, float(terrain_height(tree.x, tree.y)) + tree.crown_base + half_height])
        add(unit_vertices * [tree.crown_radius, tree.crown_radius, half_height] + centre, unit_triangles, _TREE, index)
    return scene, kinds, owners


def _pulses(strip: int, strip_x: float, rng: np.random.Generator, settings: ScanSettings, extent: tuple[float, float]):
    spacing = 1.0 / np.sqrt(settings.pulses_per_m2_per_strip)
    m = settings.margin_m
    xs = np.arange(-m, extent[0] + m, spacing)
    ys = np.arange(-m, extent[1] + m, spacing)
    gx, gy = np.meshgrid(xs, ys, indexing="xy")
    targets = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-spacing / 2, spacing / 2, (gx.size, 2))
    target_z = terrain_height(targets[:, 0], targets[:, 1])
    flight_z = float(terrain_height(extent[0] / 2, extent[1] / 2)) + settings.altitude_m
    origins = np.column_stack([np.full(len(targets), strip_x), targets[:, 1], np.full(len(targets), flight_z)])
    directions = np.column_stack([targets, target_z]) - origins
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    angle = np.degrees(np.arctan2(directions[:, 0], -directions[:, 2]))
    within = np.abs(angle) <= settings.max_scan_angle_deg
    start = (settings.start - GPS_EPOCH).total_seconds() - ADJUSTED_GPS_OFFSET_S
    times = start + strip * settings.strip_interval_s + (targets[:, 1] + m) / settings.speed_m_s
    times += np.arange(len(targets)) * 1e-6  # pulses are emitted one after another
    return origins[within], directions[within], times[within]


def _cast(scene, kinds, owners, origins, directions, times, strip, rng, settings: ScanSettings) -> dict[str, np.ndarray]:
    pulse = np.arange(len(origins))
    start = origins.copy()
    active = np.ones(len(origins), dtype=bool)
    records = []
    for _ in range(settings.max_returns * 3):
        if not active.any():
            break
        rays = np.column_stack([start[active], directions[active]]).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy().astype(np.float64)
        geometry = hit["geometry_ids"].numpy()
        ids = pulse[active]
        found = np.isfinite(t)
        kind = np.full(len(ids), -1)
        kind[found] = [kinds[g] for g in geometry[found]]
        owner = np.full(len(ids), -1)
        owner[found] = [owners[g] for g in geometry[found]]
        points = start[ids] + directions[ids] * np.where(found, t, 0.0)[:, None]
        in_canopy = kind == _TREE
        returned = found & (~in_canopy | (rng.random(len(ids)) < settings.canopy_return_probability))
        records.append((ids[returned], points[returned], kind[returned], owner[returned]))
        # Pulses go on through canopies (a little past the crown's surface) and stop elsewhere.
        go_on = np.zeros(len(origins), dtype=bool)
        go_on[ids[in_canopy]] = True
        start[ids[in_canopy]] = points[in_canopy] + directions[ids[in_canopy]] * 0.3
        active = go_on
    ids = np.concatenate([r[0] for r in records])
    order = np.lexsort((np.concatenate([np.full(len(r[0]), k) for k, r in enumerate(records)]), ids))
    ids = ids[order]
    points = np.concatenate([r[1] for r in records])[order]
    kind = np.concatenate([r[2] for r in records])[order]
    owner = np.concatenate([r[3] for r in records])[order]

    # Keep at most `max_returns` per pulse, and number them.
    first_of_pulse = np.r_[True, ids[1:] != ids[:-1]]
    group_start = np.maximum.accumulate(np.where(first_of_pulse, np.arange(len(ids)), 0))
    return_number = np.arange(len(ids)) - group_start + 1
    keep = return_number <= settings.max_returns
    ids, points, kind, owner, return_number = ids[keep], points[keep], kind[keep], owner[keep], return_number[keep]
    counts = np.bincount(ids, minlength=len(origins))

    noise = directions[ids] * rng.normal(0, settings.range_noise_m, (len(ids), 1))
    noise[:, :2] += rng.normal(0, settings.planimetric_noise_m, (len(ids), 2))
    angle = np.degrees(np.arctan2(directions[ids, 0], -directions[ids, 2]))
    return {
        "xyz": points + noise,
        "kind": kind,
        "owner": owner,
        "return_number": return_number.astype(np.uint8),
        "number_of_returns": counts[ids].astype(np.uint8),
        "gps_time": times[ids] + (return_number - 1) * 1e-8,
        "scan_angle": angle,
        "strip": np.full(len(ids), strip, dtype=np.uint16),
    }


def _classify(scan: dict[str, np.ndarray], buildings: list[SceneBuilding], rng, settings: ScanSettings) -> np.ndarray:
    kind, owner, xyz = scan["kind"], scan["owner"], scan["xyz"]
    classification = np.full(len(kind), 1, dtype=np.uint8)
    classification[kind == _TERRAIN] = 2
    above = xyz[:, 2] - terrain_height(xyz[:, 0], xyz[:, 1])
    tree = kind == _TREE
    classification[tree] = np.where(above[tree] < 0.5, 3, np.where(above[tree] < 1.5, 4, 5))
    building = kind == _BUILDING
    classification[building] = 6
    ids_67 = [k for k, b in enumerate(buildings) if b.id in settings.class_67_buildings]
    classification[building & np.isin(owner, ids_67)] = 67
    classification[building & (rng.random(len(kind)) < settings.class_67_share)] = 67
    wrong = rng.random(len(kind)) < settings.misclassified_share
    classification[wrong & building] = rng.choice(np.array([1, 5], dtype=np.uint8), int((wrong & building).sum()))
    classification[wrong & (kind == _TERRAIN)] = 6
    return classification


def _intensity(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    base = np.select([kind == _TERRAIN, kind == _BUILDING], [900.0, 1400.0], 500.0)
    return np.clip(base + rng.normal(0, 150, len(kind)), 0, 65535).astype(np.uint16)
