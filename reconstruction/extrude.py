"""Extrusion of a roof partition into one closed, outward-oriented solid.

A roof partition is a set of 2D faces tiling the footprint, each carrying the plane of
its roof. The solid has one ground surface at the ground height, one roof surface per
face, and vertical walls: along the outline from the ground up to the roof, and inside
the footprint wherever two neighbouring faces meet at different heights (steps).

Written here rather than taken from a library because the solid must be watertight in
the strict sense validators check (every edge shared by exactly two surfaces, in
opposite directions, no T-junctions), which general mesh extruders do not guarantee
for faces at different heights. Vertices are snapped to a millimetre grid so that
faces share them exactly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numba
import numpy as np
import shapely
from shapely.geometry.polygon import orient

from twin.model import Solid, Surface, SurfaceKind

SNAP_M = 0.001
_SCALE = 1.0 / SNAP_M
ON_GRID_M = 1e-6
"""Coordinates within this of the grid are on it (floating point cannot hold millimetres exactly)."""
SAME_HEIGHT_KEYS = 2
"""Heights of two faces at one vertex within this many millimetres are the same height:
rounding differences, not a step."""


class ExtrusionError(ValueError):
    """The partition cannot give a valid solid (for example a roof below the ground)."""


@dataclass(frozen=True)
class Plane:
    """The roof plane z = z0 + slope_x * (x - x0) + slope_y * (y - y0).

    Anchored at a point near the data so that heights stay exact with large projected
    coordinates.
    """

    x0: float
    y0: float
    z0: float
    slope_x: float = 0.0
    slope_y: float = 0.0

    @staticmethod
    def horizontal(z: float) -> "Plane":
        return Plane(0.0, 0.0, float(z))

    @staticmethod
    def from_normal(normal: Sequence[float], point: Sequence[float]) -> "Plane":
        nx, ny, nz = (float(v) for v in normal)
        if abs(nz) < 1e-9:
            raise ExtrusionError("a vertical plane cannot carry a roof")
        return Plane(float(point[0]), float(point[1]), float(point[2]), -nx / nz, -ny / nz)

    def height_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
        """Heights at arrays of points, or at one point as a Python float (the extrusion asks
        thousands of single heights, which numpy would make several times slower)."""
        return self.z0 + self.slope_x * (x - self.x0) + self.slope_y * (y - self.y0)

    @property
    def normal(self) -> np.ndarray:
        n = np.array([-self.slope_x, -self.slope_y, 1.0])
        return n / np.linalg.norm(n)


@dataclass(frozen=True, eq=False)
class RoofFace:
    polygon: shapely.Polygon
    plane: Plane
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Carried onto the roof surface (slope, azimuth...)."""


def extrude_flat(polygon: shapely.Polygon, ground_z: float, roof_z: float) -> Solid:
    """A prism: the polygon extruded from `ground_z` up to a flat roof at `roof_z`."""
    return extrude_faces([RoofFace(polygon, Plane.horizontal(roof_z))], ground_z)


def extrude_faces(faces: Sequence[RoofFace], ground_z: float) -> Solid:
    """One closed solid from roof faces that tile a footprint without overlaps."""
    if not faces:
        raise ExtrusionError("no roof face to extrude")
    ground_key = _snap(ground_z)
    rings_per_face = [_face_rings(face.polygon) for face in faces]
    vertices = _VertexTable()
    face_rings = [[vertices.add_ring(ring) for ring in rings] for rings in rings_per_face]
    face_rings = _node(face_rings, vertices)
    heights = _HeightTable(faces, vertices)
    face_rings = _split_crossing_steps(face_rings, vertices, heights)
    heights.unify_near_equal(face_rings)

    edge_owner: dict[tuple[int, int], int] = {}
    for face_index, rings in enumerate(face_rings):
        for ring in rings:
            for u, v in _ring_edges(ring):
                if (u, v) in edge_owner:
                    raise ExtrusionError("roof faces overlap: an edge is used twice in the same direction")
                edge_owner[(u, v)] = face_index

    heights_at_vertex: dict[int, set[int]] = defaultdict(set)
    for face_index, rings in enumerate(face_rings):
        for ring in rings:
            for u in ring:
                z = heights.key(face_index, u)
                if z <= ground_key:
                    raise ExtrusionError(
                        f"roof at {z * SNAP_M:.3f} m is not above the ground at {ground_z:.3f} m"
                    )
                heights_at_vertex[u].add(z)

    walls: list[Surface] = []
    boundary_edges: list[tuple[int, int]] = []
    for (u, v), face_index in edge_owner.items():
        twin_face = edge_owner.get((v, u))
        upper_u, upper_v = heights.key(face_index, u), heights.key(face_index, v)
        if twin_face is None:
            boundary_edges.append((u, v))
            lower_u = lower_v = ground_key
        else:
            lower_u, lower_v = heights.key(twin_face, u), heights.key(twin_face, v)
            # Each step wall is built once, from the side of the higher face.
            if upper_u < lower_u or upper_v < lower_v or (upper_u == lower_u and upper_v == lower_v):
                continue
        ring = _wall_ring(u, v, lower_u, lower_v, upper_u, upper_v, heights_at_vertex, ground_key)
        walls.append(Surface((vertices.lift(ring),), SurfaceKind.WALL))

    roofs = [
        Surface(
            tuple(vertices.lift([(u, heights.key(face_index, u)) for u in ring]) for ring in rings),
            SurfaceKind.ROOF,
            faces[face_index].attributes,
        )
        for face_index, rings in enumerate(face_rings)
    ]
    grounds = [
        Surface(tuple(vertices.lift([(u, ground_key) for u in reversed(ring)]) for ring in rings), SurfaceKind.GROUND)
        for rings in _chain_ground_rings(boundary_edges, vertices)
    ]
    return Solid(tuple(grounds + roofs + walls))


def _snap(value: float | np.ndarray) -> int | np.ndarray:
    if isinstance(value, (float, int)):
        return round(float(value) * _SCALE)  # half to even, as np.rint
    snapped = np.rint(np.asarray(value, dtype=float) * _SCALE).astype(np.int64)
    return int(snapped) if snapped.ndim == 0 else snapped


def _face_rings(polygon: shapely.Polygon) -> list[np.ndarray]:
    if polygon.geom_type != "Polygon" or polygon.is_empty:
        raise ExtrusionError(f"a roof face must be a non-empty polygon, got {polygon.geom_type}")
    polygon = orient(polygon, 1.0)
    return [np.asarray(polygon.exterior.coords)[:-1, :2]] + [
        np.asarray(hole.coords)[:-1, :2] for hole in polygon.interiors
    ]


class _VertexTable:
    """2D vertices snapped to the millimetre grid, each with one integer id."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int], int] = {}
        self.keys: list[tuple[int, int]] = []
        self.largest_move = 0.0
        """The farthest snapping moved a coordinate (m): zero for faces already on the grid."""

    def add(self, key: tuple[int, int]) -> int:
        vertex_id = self._ids.get(key)
        if vertex_id is None:
            vertex_id = self._ids[key] = len(self.keys)
            self.keys.append(key)
        return vertex_id

    def add_ring(self, coords: np.ndarray) -> list[int]:
        ring: list[int] = []
        snapped = _snap(coords)
        self.largest_move = max(self.largest_move, float(np.abs(snapped * SNAP_M - coords).max(initial=0.0)))
        for key in map(tuple, snapped.tolist()):
            vertex_id = self.add(key)
            if not ring or ring[-1] != vertex_id:
                ring.append(vertex_id)
        if len(ring) > 1 and ring[0] == ring[-1]:
            ring.pop()
        if len(ring) < 3:
            raise ExtrusionError("a roof face collapses below 1 mm")
        return ring

    def xy(self) -> np.ndarray:
        return np.asarray(self.keys, dtype=float) * SNAP_M

    def lift(self, ring: Sequence[tuple[int, int]]) -> np.ndarray:
        return np.array([(*self.keys[u], z) for u, z in ring], dtype=float) * SNAP_M


class _HeightTable:
    """Snapped roof height of each face at each of its vertices."""

    def __init__(self, faces: Sequence[RoofFace], vertices: _VertexTable) -> None:
        self._faces = faces
        self._vertices = vertices
        self._cache: dict[tuple[int, int], int] = {}

    def key(self, face_index: int, vertex_id: int) -> int:
        cached = self._cache.get((face_index, vertex_id))
        if cached is None:
            x, y = self._vertices.keys[vertex_id]
            cached = _snap(self._faces[face_index].plane.height_at(x * SNAP_M, y * SNAP_M))
            self._cache[(face_index, vertex_id)] = cached
        return cached

    def set(self, face_index: int, vertex_id: int, key: int) -> None:
        self._cache[(face_index, vertex_id)] = key

    def unify_near_equal(self, face_rings: list[list[list[int]]]) -> None:
        """Gives the faces meeting at a vertex one height where theirs differ by rounding only."""
        faces_at: dict[int, list[int]] = defaultdict(list)
        for face_index, rings in enumerate(face_rings):
            for ring in rings:
                for u in ring:
                    faces_at[u].append(face_index)
        for u, face_indices in faces_at.items():
            ordered = sorted(set(face_indices), key=lambda f: self.key(f, u))
            group = [ordered[0]]
            for face_index in ordered[1:] + [None]:
                if face_index is not None and self.key(face_index, u) - self.key(group[-1], u) <= SAME_HEIGHT_KEYS:
                    group.append(face_index)
                    continue
                top = self.key(group[-1], u)
                for member in group:
                    self.set(member, u, top)
                group = [face_index]


def _ring_edges(ring: Sequence[int]):
    return zip(ring, list(ring[1:]) + [ring[0]])


def _node(face_rings: list[list[list[int]]], vertices: _VertexTable) -> list[list[list[int]]]:
    """Inserts into every edge the vertices of other faces lying on it (no T-junctions)."""
    xy = vertices.xy()
    # Snapping moves each point by up to 0.7 mm, so a vertex on an edge may lie 1.4 mm off
    # it. Faces already on the grid (the LOD2.2 partition) are noded exactly instead: one
    # of their vertices a millimetre from another face's edge is not on it.
    tolerance = 2 * SNAP_M if vertices.largest_move > ON_GRID_M else ON_GRID_M
    edges = np.array([edge for rings in face_rings for ring in rings for edge in _ring_edges(ring)])
    inserted = _vertices_on_edges(xy, edges, tolerance)
    noded = []
    position = 0
    for rings in face_rings:
        noded_rings = []
        for ring in rings:
            out: list[int] = []
            for u in ring:
                out.append(u)
                out.extend(inserted.get(position, ()))
                position += 1
            noded_rings.append(out)
        noded.append(noded_rings)
    return noded


def _vertices_on_edges(xy: np.ndarray, edges: np.ndarray, tolerance: float) -> dict[int, list[int]]:
    """Per edge (index into `edges`, pairs of vertex ids), the other vertices within
    `tolerance` of it, in order along it; candidates are the vertices in each edge's box
    widened by `tolerance`."""
    by_x = np.argsort(xy[:, 0], kind="stable")
    edge_index, vertex = _in_edge_boxes(np.ascontiguousarray(xy), edges, tolerance, by_x, xy[by_x, 0].copy())
    a, b = xy[edges[edge_index, 0]], xy[edges[edge_index, 1]]
    direction = b - a
    length_sq = np.einsum("ij,ij->i", direction, direction)
    t = np.einsum("ij,ij->i", xy[vertex] - a, direction) / length_sq
    distance = np.linalg.norm(xy[vertex] - (a + t[:, None] * direction), axis=1)
    margin = SNAP_M / np.sqrt(length_sq)
    on = (distance < tolerance) & (t > margin) & (t < 1 - margin)
    on &= (vertex != edges[edge_index, 0]) & (vertex != edges[edge_index, 1])
    order = np.lexsort((vertex[on], t[on], edge_index[on]))
    inserted: dict[int, list[int]] = {}
    for edge, found in zip(edge_index[on][order].tolist(), vertex[on][order].tolist()):
        inserted.setdefault(edge, []).append(found)
    return inserted


@numba.njit(cache=True)
def _in_edge_boxes(xy, edges, tolerance, by_x, sorted_x):
    """(edge, vertex) pairs of the vertices inside each edge's box widened by `tolerance`.

    Compiled, over the vertices sorted by x: a spatial index of shapely's cost a tenth of
    a millisecond to build and query for a house's few dozen edges."""
    edge_index, vertex = [], []
    for e in range(len(edges)):
        a, b = edges[e, 0], edges[e, 1]
        low_x, high_x = min(xy[a, 0], xy[b, 0]) - tolerance, max(xy[a, 0], xy[b, 0]) + tolerance
        low_y, high_y = min(xy[a, 1], xy[b, 1]) - tolerance, max(xy[a, 1], xy[b, 1]) + tolerance
        for k in range(np.searchsorted(sorted_x, low_x), len(sorted_x)):
            if sorted_x[k] > high_x:
                break
            v = by_x[k]
            if low_y <= xy[v, 1] <= high_y:
                edge_index.append(e)
                vertex.append(v)
    return np.array(edge_index, dtype=np.int64), np.array(vertex, dtype=np.int64)


def _split_crossing_steps(
    face_rings: list[list[list[int]]], vertices: _VertexTable, heights: _HeightTable
) -> list[list[list[int]]]:
    """Splits shared edges where two faces' roofs cross, so each step wall has one upper side.

    All crossings are found in one pass: a split edge's two pieces meet at one height, so
    they cross nothing, and the other edges are left as they were."""
    owner = {}
    for face_index, rings in enumerate(face_rings):
        for ring in rings:
            for u, v in _ring_edges(ring):
                owner[(u, v)] = face_index
    splits: dict[tuple[int, int], int] = {}
    for (u, v), face_index in owner.items():
        other = owner.get((v, u))
        if other is None or face_index > other:
            continue
        du = heights.key(face_index, u) - heights.key(other, u)
        dv = heights.key(face_index, v) - heights.key(other, v)
        if min(abs(du), abs(dv)) > SAME_HEIGHT_KEYS and du * dv < 0:
            t = du / (du - dv)
            a, b = np.asarray(vertices.keys[u], float), np.asarray(vertices.keys[v], float)
            w = vertices.add(tuple(int(round(c)) for c in a + t * (b - a)))
            if w in (u, v):
                continue
            splits[(u, v)] = splits[(v, u)] = w
            # The roofs meet at the crossing: one height there for both, whatever the rounding.
            meeting = max(heights.key(face_index, w), heights.key(other, w))
            heights.set(face_index, w, meeting)
            heights.set(other, w, meeting)
    if not splits:
        return face_rings
    return [[_with_splits(ring, splits) for ring in rings] for rings in face_rings]


def _with_splits(ring: list[int], splits: dict[tuple[int, int], int]) -> list[int]:
    """The ring with each split edge's new vertex inserted between its ends."""
    out: list[int] = []
    for a, b in _ring_edges(ring):
        out.append(a)
        if (a, b) in splits:
            out.append(splits[(a, b)])
    return out


def _wall_ring(
    u: int,
    v: int,
    lower_u: int,
    lower_v: int,
    upper_u: int,
    upper_v: int,
    heights_at_vertex: dict[int, set[int]],
    ground_key: int,
) -> list[tuple[int, int]]:
    """A vertical wall on edge u->v, facing right of the edge, with every height met at u and v.

    Including the intermediate heights of the other surfaces meeting at a vertical edge
    makes the wall share exactly the same edge pieces as its neighbours.
    """

    def column(vertex: int, low: int, high: int) -> list[int]:
        levels = heights_at_vertex[vertex] | {ground_key}
        return sorted(z for z in levels if low < z < high)

    ring = [(u, lower_u), (v, lower_v)]
    ring += [(v, z) for z in column(v, lower_v, upper_v)]
    if upper_v != lower_v:
        ring.append((v, upper_v))
    if upper_u != lower_u:
        ring.append((u, upper_u))
    ring += [(u, z) for z in reversed(column(u, lower_u, upper_u))]
    return ring


def _chain_ground_rings(boundary_edges: list[tuple[int, int]], vertices: _VertexTable) -> list[list[list[int]]]:
    """The outline's edges chained into rings, grouped as exterior + holes per ground surface."""
    next_vertex: dict[int, list[int]] = defaultdict(list)
    for u, v in sorted(boundary_edges):
        next_vertex[u].append(v)
    rings: list[list[int]] = []
    for start in sorted(next_vertex):
        while next_vertex[start]:
            ring = [start]
            current = next_vertex[start].pop(0)
            while current != start:
                ring.append(current)
                if not next_vertex[current]:
                    raise ExtrusionError("the roof faces' outline is not closed")
                current = next_vertex[current].pop(0)
            rings.append(ring)
    xy = vertices.xy()
    areas = [_signed_area(xy[ring]) for ring in rings]
    exteriors = [ring for ring, area in zip(rings, areas) if area > 0]
    holes = [ring for ring, area in zip(rings, areas) if area <= 0]
    groups = [[ring] for ring in exteriors]
    if not holes:
        return groups
    exterior_shapes = [shapely.Polygon(xy[ring]) for ring in exteriors]
    for hole in holes:
        probe = shapely.Point(xy[hole[0]])
        owner = int(np.argmin([shape.distance(probe) for shape in exterior_shapes]))
        groups[owner].append(hole)
    return groups


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    # Joined rather than np.roll, which costs several times more on a few vertices.
    return 0.5 * float(np.dot(x, np.concatenate((y[1:], y[:1]))) - np.dot(np.concatenate((x[1:], x[:1])), y))
