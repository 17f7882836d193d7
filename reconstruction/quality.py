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
import shapely

from reconstruction.extrude import Plane, RoofFace
from reconstruction.crop import reach_beyond_square
from reconstruction.geometry import boxes_in_cells, row_dots, surface_vector_areas
from reconstruction.triangulate import triangulate_surface
from twin.model import Solid, Surface, SurfaceKind

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
    point, so that facade points count for what they are. In double precision, to each
    face's polygon on the plane through the mean of its vertices: a roof face's vertices on
    the millimetre grid stray from one plane by up to a millimetre, which moved the RMSE
    of the reference buildings by 0.02 mm at most from the distances to their triangles.
    """
    surfaces = [surface for solid in solids for surface in solid.surfaces]
    if len(points) == 0 or not surfaces:
        return None
    origin = points.mean(axis=0)
    faces = _Faces.of(surfaces, origin)
    squared = _squared_distances_to_faces(
        np.ascontiguousarray(points - origin, dtype=np.float64), faces.vertices, faces.ring_starts,
        faces.first_ring, faces.normals, faces.offsets, faces.boxes,
    )
    return float(np.sqrt(np.mean(squared)))


@dataclass(frozen=True)
class _Faces:
    """Planar polygons with holes as flat arrays for `_squared_distances_to_faces`."""

    vertices: np.ndarray
    """(v, 3), ring after ring, surface after surface."""
    ring_starts: np.ndarray
    """Each ring's first vertex, and the end of the last ring."""
    first_ring: np.ndarray
    """Each face's first ring, and the end of the last face's rings."""
    normals: np.ndarray
    """Unit normals, zero where a face has no area."""
    offsets: np.ndarray
    """normal . x on each face's plane."""
    boxes: np.ndarray
    """(f, 6): each face's lowest then highest coordinates."""

    @classmethod
    def of(cls, surfaces: list[Surface], origin: np.ndarray) -> _Faces:
        """The surfaces as faces; those of more than `MAX_FACE_VERTICES` vertices as their
        triangles, so that no point tests a campus roof's thousand-vertex outline."""
        areas = surface_vector_areas(surfaces)
        norms = np.sqrt(row_dots(areas, areas))
        normals = areas / np.where(norms > 0, norms, 1.0)[:, None]
        vertex_counts = np.array([sum(len(ring) for ring in surface.rings) for surface in surfaces])
        face_rings = [surface.rings for surface in surfaces]
        large = np.flatnonzero((vertex_counts > MAX_FACE_VERTICES) & (norms > 0))
        if len(large):
            kept = np.ones(len(surfaces), dtype=bool)
            kept[large] = False
            face_rings = [rings for rings, keep in zip(face_rings, kept) if keep]
            face_normals = [normals[kept]]
            for k in large:
                vertices, triangles = triangulate_surface(surfaces[k])
                face_rings.extend([vertices[triangle]] for triangle in triangles)
                face_normals.append(np.repeat(normals[k : k + 1], len(triangles), axis=0))
            normals = np.concatenate(face_normals)
        rings = [ring for face in face_rings for ring in face]
        ring_lengths = np.array([len(ring) for ring in rings], dtype=np.int64)
        ring_counts = np.array([len(face) for face in face_rings], dtype=np.int64)
        vertices = np.concatenate(rings) - origin
        ring_starts = np.concatenate([[0], np.cumsum(ring_lengths)])
        first_ring = np.concatenate([[0], np.cumsum(ring_counts)])
        face_starts = ring_starts[first_ring[:-1]]
        # Through the mean of a face's vertices: on a millimetre grid, a roof face's
        # vertices stray from any one plane by up to a millimetre.
        centres = np.add.reduceat(vertices, face_starts) / np.diff(ring_starts[first_ring])[:, None]
        offsets = row_dots(normals, centres)
        boxes = np.hstack([np.minimum.reduceat(vertices, face_starts), np.maximum.reduceat(vertices, face_starts)])
        return cls(vertices, ring_starts, first_ring, np.ascontiguousarray(normals), offsets, boxes)


MAX_FACE_VERTICES = 32


@numba.njit(cache=True)
def _squared_distances_to_faces(points, vertices, ring_starts, first_ring, normals, offsets, boxes) -> np.ndarray:
    """Squared distance from each point to the nearest of the faces (`_Faces`' fields).

    Written by hand: over a face whose plane the point projects into, the distance is the
    distance to the plane; elsewhere it is the distance to the nearest edge. The faces are
    bucketed by their boxes in square cells in plan, and each point visits square rings of
    cells around its own until the nearest face found is nearer than any unvisited cell;
    within them, faces whose box or plane is already farther are skipped. The previous
    point's nearest face is measured first (the points come in roughly spatial order).
    A ray-casting library would need the faces triangulated first, which took longer than
    this whole loop on a house.
    """
    face_count = len(offsets)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    width, depth = boxes[:, 3].max() - x0, boxes[:, 4].max() - y0
    # About one cell per face.
    cell = max(np.sqrt(width * depth / face_count), 0.5, max(width, depth) / 1024)
    columns, rows, cell_starts, cell_faces = boxes_in_cells(boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], cell)

    squared = np.empty(len(points))
    measured_for = np.full(face_count, -1, np.int64)
    nearest = 0
    for i in range(len(points)):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        column = min(max(int(np.floor((x - x0) / cell)), 0), columns - 1)
        row = min(max(int(np.floor((y - y0) / cell)), 0), rows - 1)
        measured_for[nearest] = i
        best, nearest = _measure(x, y, z, nearest, np.inf, nearest, vertices, ring_starts, first_ring, normals, offsets, boxes)
        ring = 0
        while True:
            for a in range(max(column - ring, 0), min(column + ring, columns - 1) + 1):
                on_edge = abs(a - column) == ring
                b = row - ring
                while b <= row + ring:
                    if 0 <= b < rows:
                        for k in range(cell_starts[a * rows + b], cell_starts[a * rows + b + 1]):
                            face = cell_faces[k]
                            if measured_for[face] != i:
                                measured_for[face] = i
                                best, nearest = _measure(
                                    x, y, z, face, best, nearest, vertices, ring_starts, first_ring, normals, offsets, boxes
                                )
                    # Inside the ring only its two end cells are new.
                    b += 1 if on_edge or ring == 0 else 2 * ring
            reach = reach_beyond_square(x, y, x0, y0, cell, column, row, ring, columns, rows)
            if reach == np.inf or (reach > 0 and reach * reach >= best):
                break
            ring += 1
        squared[i] = best
    return squared


@numba.njit(cache=True, inline="always")
def _measure(x, y, z, face, best, nearest, vertices, ring_starts, first_ring, normals, offsets, boxes):
    """The smaller of `best` and the point's squared distance to the face, and the face it
    belongs to (`nearest` if not this one)."""
    gap_x = max(boxes[face, 0] - x, 0.0, x - boxes[face, 3])
    gap_y = max(boxes[face, 1] - y, 0.0, y - boxes[face, 4])
    gap_z = max(boxes[face, 2] - z, 0.0, z - boxes[face, 5])
    if gap_x * gap_x + gap_y * gap_y + gap_z * gap_z >= best:
        return best, nearest
    nx, ny, nz = normals[face, 0], normals[face, 1], normals[face, 2]
    height = x * nx + y * ny + z * nz - offsets[face]
    if height * height >= best:
        return best, nearest
    foot_x, foot_y, foot_z = x - height * nx, y - height * ny, z - height * nz
    if _contains(foot_x, foot_y, foot_z, nx, ny, nz, vertices, ring_starts, first_ring[face], first_ring[face + 1]):
        return height * height, face
    for ring in range(first_ring[face], first_ring[face + 1]):
        start, end = ring_starts[ring], ring_starts[ring + 1]
        for a in range(start, end):
            b = a + 1 if a + 1 < end else start
            edge = _squared_distance_to_segment(x, y, z, vertices[a], vertices[b])
            if edge < best:
                best, nearest = edge, face
    return best, nearest


@numba.njit(cache=True, inline="always")
def _contains(x, y, z, nx, ny, nz, vertices, ring_starts, ring, ring_end) -> bool:
    """Whether a point of a face's plane lies inside the face (even-odd over its rings),
    tested in the coordinate plane onto which the face projects largest; never for a face
    without area."""
    ax, ay, az = abs(nx), abs(ny), abs(nz)
    if ax == 0.0 and ay == 0.0 and az == 0.0:
        return False
    u, v = (1, 2) if ax >= ay and ax >= az else ((0, 2) if ay >= az else (0, 1))
    pu, pv = (y, z) if u == 1 else ((x, z) if v == 2 else (x, y))
    inside = False
    for r in range(ring, ring_end):
        start, end = ring_starts[r], ring_starts[r + 1]
        for a in range(start, end):
            b = a + 1 if a + 1 < end else start
            au, av, bu, bv = vertices[a, u], vertices[a, v], vertices[b, u], vertices[b, v]
            if (av > pv) != (bv > pv) and pu < au + (pv - av) * (bu - au) / (bv - av):
                inside = not inside
    return inside


@numba.njit(cache=True, inline="always")
def _squared_distance_to_segment(x, y, z, start, end) -> float:
    along_x, along_y, along_z = end[0] - start[0], end[1] - start[1], end[2] - start[2]
    offset_x, offset_y, offset_z = x - start[0], y - start[1], z - start[2]
    length_squared = along_x * along_x + along_y * along_y + along_z * along_z
    t = 0.0
    if length_squared > 0:
        t = min(max((offset_x * along_x + offset_y * along_y + offset_z * along_z) / length_squared, 0.0), 1.0)
    gap_x, gap_y, gap_z = offset_x - t * along_x, offset_y - t * along_y, offset_z - t * along_z
    return gap_x * gap_x + gap_y * gap_y + gap_z * gap_z


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
            _nearer_to_prism(z, *outlines[id(polygon)], float(bottom), float(top), nearest)
        result.append(float(np.sqrt(np.mean(nearest**2))))
    return result


@numba.njit(cache=True)
def _nearer_to_prism(z, to_outline, inside, bottom, top, nearest):
    """Lowers each point's `nearest` distance to that to a prism from `bottom` to `top`
    over a polygon, given the point's distance `to_outline` in plan from the polygon's
    rings and whether it lies `inside`. Compiled: in numpy, a pass and a temporary per
    term, for every prism of every LOD1.x model."""
    for i in range(len(z)):
        below_or_above = max(max(z[i] - top, bottom - z[i]), 0.0)
        if not inside[i]:
            distance = np.hypot(to_outline[i], below_or_above)
        elif below_or_above > 0:
            distance = below_or_above
        else:
            distance = min(min(top - z[i], z[i] - bottom), to_outline[i])
        nearest[i] = min(nearest[i], distance)


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
