"""Quality and roof attributes of a building's models.

- RMSE of a LoD: the root mean square distance between the building's points and the
  nearest surface of the LoD's solids.
- Roof type, as 3DBAG names them: flat (one horizontal height), multiple flat (several),
  sloped (no horizontal face) or mixed; faces under `TYPE_MIN_FACE_M2` are ignored.
- Per roof face: slope (degrees from horizontal) and azimuth (compass bearing of the
  downhill direction, degrees clockwise from north).
- Areas of the solid's surfaces by kind, and an estimated number of storeys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
import open3d as o3d
import shapely

from reconstruction.extrude import Plane, RoofFace
from reconstruction.geometry import row_dots, surface_vector_areas
from reconstruction.triangulate import triangulate_solid
from twin.model import Solid, SurfaceKind

HORIZONTAL_DEG = 5.0
TYPE_MIN_FACE_M2 = 2.0
FLAT_HEIGHT_TOLERANCE_M = 0.5
STOREY_HEIGHT_M = 3.0
ATTIC_MIN_HEIGHT_M = 2.2
"""A sloped roof whose ridge stands this far above the eaves gives one more (attic) storey."""


def slope_deg(plane: Plane) -> float:
    return float(np.degrees(np.arctan(np.hypot(plane.slope_x, plane.slope_y))))


def azimuth_deg(plane: Plane) -> float | None:
    """Bearing of the downhill direction; None for a horizontal plane."""
    if np.hypot(plane.slope_x, plane.slope_y) < 1e-9:
        return None
    return float(np.degrees(np.arctan2(-plane.slope_x, -plane.slope_y)) % 360)


def face_attributes(plane: Plane) -> dict[str, float]:
    attributes = {"slope": round(slope_deg(plane), 2)}
    azimuth = azimuth_deg(plane)
    if azimuth is not None:
        attributes["azimuth"] = round(azimuth, 2)
    return attributes


def rmse(points: np.ndarray, solids: list[Solid]) -> float | None:
    """RMSE of the distances from points (n, 3) to the nearest surface of the solids.

    Distances to the whole surface (walls included) rather than to the roof above each
    point, so that facade points count for what they are; computed with open3d's
    Embree-backed distance queries.
    """
    if len(points) == 0 or not solids:
        return None
    scene = o3d.t.geometry.RaycastingScene()
    origin = points.mean(axis=0)
    for solid in solids:
        vertices, triangles = triangulate_solid(solid)
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = o3d.core.Tensor((vertices - origin).astype(np.float32))
        mesh.triangle.indices = o3d.core.Tensor(triangles.astype(np.int32))
        scene.add_triangles(mesh)
    distance = scene.compute_distance(o3d.core.Tensor((points - origin).astype(np.float32))).numpy()
    return float(np.sqrt(np.mean(distance.astype(np.float64) ** 2)))


def prism_rmses(points: np.ndarray, models: Sequence[list[tuple[shapely.Polygon, float, float]]]) -> list[float | None]:
    """Per model, the RMSE of the distances from points (n, 3) to the nearest surface of its
    prisms given as (polygon, bottom, top): what `rmse` gives for their extruded solids, in
    closed form (None without points or prisms).

    Over a prism's polygon the nearest surface is its top, its bottom or, between them,
    its nearest wall; beside it, the nearest point of its outline at the height clamped
    to its walls. Exact, and no triangles or ray-casting scene to build for LOD1.x. The
    points' distances to a polygon's outline, the costliest part, are measured once for
    all the prisms on that polygon (the same object): a LOD1.3 of one part stands on the
    LOD1.2 block's footprint.
    """
    if len(points) == 0:
        return [None] * len(models)
    xy, z = points[:, :2], points[:, 2]
    outlines: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    result: list[float | None] = []
    for prisms in models:
        if not prisms:
            result.append(None)
            continue
        nearest = np.full(len(points), np.inf)
        for polygon, bottom, top in prisms:
            if id(polygon) not in outlines:
                outlines[id(polygon)] = (_distance_to_rings(xy, polygon), shapely.contains_xy(polygon, xy[:, 0], xy[:, 1]))
            to_outline, inside = outlines[id(polygon)]
            below_or_above = np.maximum(np.maximum(z - top, bottom - z), 0.0)
            within = np.minimum(np.minimum(top - z, z - bottom), to_outline)
            over = np.where(below_or_above > 0, below_or_above, within)
            distance = np.where(inside, over, np.hypot(to_outline, below_or_above))
            nearest = np.minimum(nearest, distance)
        result.append(float(np.sqrt(np.mean(nearest**2))))
    return result


def _distance_to_rings(xy: np.ndarray, polygon: shapely.Polygon) -> np.ndarray:
    """Distance from each point (n, 2) to the polygon's rings."""
    rings = [np.asarray(ring.coords)[:, :2] for ring in (polygon.exterior, *polygon.interiors)]
    segments = np.vstack([np.hstack([coords[:-1], coords[1:]]) for coords in rings])
    return _distance_to_segments(np.ascontiguousarray(xy, dtype=np.float64), segments)


@numba.njit(cache=True)
def _distance_to_segments(xy: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Distance from each point (n, 2) to the nearest of the segments (m, 4: start, end).

    Compiled: shapely would first make a geometry of every point, and numpy would make a
    pass over all the points per segment; either takes several times this loop."""
    distance = np.empty(len(xy))
    for i in range(len(xy)):
        nearest_squared = np.inf
        for start_x, start_y, end_x, end_y in segments:
            along_x, along_y = end_x - start_x, end_y - start_y
            offset_x, offset_y = xy[i, 0] - start_x, xy[i, 1] - start_y
            length_squared = along_x * along_x + along_y * along_y
            t = 0.0
            if length_squared > 0:
                t = min(max((offset_x * along_x + offset_y * along_y) / length_squared, 0.0), 1.0)
            gap_x, gap_y = offset_x - t * along_x, offset_y - t * along_y
            nearest_squared = min(nearest_squared, gap_x * gap_x + gap_y * gap_y)
        distance[i] = np.sqrt(nearest_squared)
    return distance


def roof_type(faces: list[RoofFace]) -> str:
    kept = [f for f in faces if f.polygon.area >= TYPE_MIN_FACE_M2] or faces
    horizontal = [slope_deg(f.plane) < HORIZONTAL_DEG for f in kept]
    if all(horizontal):
        heights = sorted(f.plane.height_at(*f.polygon.representative_point().coords[0]) for f in kept)
        return "flat" if heights[-1] - heights[0] <= FLAT_HEIGHT_TOLERANCE_M else "multiple flat"
    return "sloped" if not any(horizontal) else "mixed"


@dataclass(frozen=True)
class SurfaceAreas:
    ground: float
    flat_roof: float
    sloped_roof: float
    wall: float


def surface_areas(solid: Solid) -> SurfaceAreas:
    vectors = surface_vector_areas(solid.surfaces)
    areas = np.sqrt(row_dots(vectors, vectors))
    upright = vectors[:, 2] / np.where(areas > 0, areas, 1.0)
    flat_roofs = np.degrees(np.arccos(np.clip(upright, -1, 1))) < HORIZONTAL_DEG
    ground = flat = sloped = wall = 0.0
    for surface, area, is_flat in zip(solid.surfaces, areas.tolist(), flat_roofs.tolist()):
        if surface.kind == SurfaceKind.GROUND:
            ground += area
        elif surface.kind == SurfaceKind.WALL:
            wall += area
        elif is_flat:
            flat += area
        else:
            sloped += area
    return SurfaceAreas(ground, flat, sloped, wall)


def storeys(ground_z: float, eave_z: float, ridge_z: float) -> int:
    """Storeys under the eaves at about 3 m each, plus an attic under a high sloped roof."""
    below_eaves = max(1, int(round((eave_z - ground_z) / STOREY_HEIGHT_M)))
    return below_eaves + (1 if ridge_z - eave_z >= ATTIC_MIN_HEIGHT_M + STOREY_HEIGHT_M / 2 else 0)


def quality_flag(status: str, valid: bool, rmse_m: float | None, nodata_fraction: float) -> str:
    """One word for the whole building: good, check, or poor."""
    if status in ("failed", "no points") or not valid:
        return "poor"
    if status == "fallback" or rmse_m is None or rmse_m > 0.3 or nodata_fraction > 0.3:
        return "check"
    return "good"
