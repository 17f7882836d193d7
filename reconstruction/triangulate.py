"""Triangles of planar polygons with holes, for meshes (glTF, ray casting, checks).

Each surface is projected onto its own plane and triangulated by GEOS's constrained
Delaunay triangulation (through shapely), which respects holes; triangles reuse the
surface's own vertices and turn the same way as the surface, so the mesh of a closed,
outward-oriented solid is closed and outward-oriented too. Strictly convex rings without
holes (most walls are rectangles, many roof faces quadrilaterals) are cut as a fan instead:
a valid triangulation too, found for all of a solid's rings in a few array operations,
where GEOS costs a projection and a call per surface. So are convex rings with vertices on
their straight sides (walls carrying the corners of the steps beside them), fanned from a
corner whose two sides are single edges: no fan triangle then lies along a side.
"""

from __future__ import annotations

import numpy as np
import shapely

from reconstruction.geometry import RingLayout, cross, cross_rows, surface_normal, unique_rows
from twin.model import Solid, Surface

MIN_TURN_SINE = 1e-6
"""Vertices turning less than this (about 0.2 arc seconds) are taken as lying on a straight
edge, where a fan would make a zero-area triangle."""


def triangulate_surface(surface: Surface) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (k, 3), triangles (t, 3) indexing them), oriented like the surface."""
    vertices = np.concatenate(surface.rings)
    if len(surface.rings) == 1:
        apex = _fan_apexes([vertices])[0]
        if apex >= 0:
            return vertices, _fans(np.array([0]), np.array([len(vertices)]), np.array([apex]))
    return vertices, _delaunay(surface, vertices)


def _delaunay(surface: Surface, vertices: np.ndarray) -> np.ndarray:
    """GEOS's constrained Delaunay triangles of the surface projected onto its plane, as
    indices into its `vertices`, oriented like the surface."""
    normal = surface_normal(surface)
    if not normal.any():
        return np.zeros((0, 3), dtype=np.int64)  # a surface without area has no triangles
    u = cross(normal, np.array([1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0]))
    u /= np.linalg.norm(u)
    v = cross(normal, u)
    origin = vertices[0]
    flat = np.column_stack([(vertices - origin) @ u, (vertices - origin) @ v])
    offsets = np.cumsum([0] + [len(r) for r in surface.rings])
    rings = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    parts = shapely.get_parts(shapely.constrained_delaunay_triangles(shapely.Polygon(rings[0], rings[1:])))
    if len(parts) == 0:
        return np.zeros((0, 3), dtype=np.int64)
    # Each triangle's ring is its 3 corners and the first again; the corners are the
    # surface's own projected vertices, found by exact match (the last of equal ones).
    corners = shapely.get_coordinates(shapely.get_exterior_ring(parts)).reshape(-1, 4, 2)[:, :3].reshape(-1, 2)
    lookup = {point: index for index, point in enumerate(map(tuple, flat.tolist()))}
    indices = [lookup.get(point, -1) for point in map(tuple, corners.tolist())]
    triangles = np.array(indices, dtype=np.int64).reshape(-1, 3)
    for row in np.flatnonzero((triangles < 0).any(axis=1)):
        # A corner GEOS moved: the triangle takes the nearest vertices.
        triangles[row] = [np.argmin(np.linalg.norm(flat - corner, axis=1)) for corner in corners[3 * row : 3 * row + 3]]
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    flipped = cross_rows(b - a, c - a) @ normal < 0
    triangles[flipped] = triangles[flipped][:, [0, 2, 1]]
    return triangles


def triangle_widths(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Each triangle's height over its longest side: near 0 for a sliver whose corners lie
    on one line but for rounding."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    doubled_area = np.linalg.norm(cross_rows(b - a, c - a), axis=1)
    longest = np.max([np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1), np.linalg.norm(a - c, axis=1)], axis=0)
    return doubled_area / np.maximum(longest, 1e-9)


def triangulate_solid(solid: Solid) -> tuple[np.ndarray, np.ndarray]:
    """One mesh for a solid, with the vertices shared between its surfaces merged."""
    surfaces = solid.surfaces
    vertices = np.concatenate([ring for surface in surfaces for ring in surface.rings])
    counts = np.array([sum(len(ring) for ring in surface.rings) for surface in surfaces])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    single = np.array([len(surface.rings) == 1 for surface in surfaces])
    apexes = np.full(len(surfaces), -1)
    apexes[single] = _fan_apexes([surface.rings[0] for surface in surfaces if len(surface.rings) == 1])
    fanned = apexes >= 0
    all_triangles = [_fans(starts[fanned], counts[fanned], apexes[fanned])]
    for index in np.flatnonzero(~fanned):
        own = vertices[starts[index] : starts[index] + counts[index]]
        all_triangles.append(_delaunay(surfaces[index], own) + starts[index])
    keys = np.rint(vertices * 1000).astype(np.int64)
    _, first, inverse, _ = unique_rows(keys)
    return vertices[first], inverse[np.concatenate(all_triangles)]


def _fan_apexes(rings: list[np.ndarray]) -> np.ndarray:
    """Per ring, the vertex to fan it from, or -1 where a fan would not do.

    A fan covers a ring without overlap or sliver when the ring is convex (it turns the same
    way at every vertex, or not at all, and once around in all: same-way turns alone would
    admit a pentagram, which turns twice around) and fans from a corner whose neighbours are
    corners too, so that no fan triangle lies along a side. Turns are measured about each
    ring's own Newell normal, so a convex ring turns positively whichever way it runs. The
    first such corner is taken: a strictly convex ring fans from its first vertex."""
    if not rings:
        return np.zeros(0, dtype=np.int64)
    vertices = np.concatenate(rings)
    layout = RingLayout.of(rings)
    starts, following = layout.starts, layout.successors
    ring = np.repeat(np.arange(len(rings)), [len(r) for r in rings])
    points = vertices - vertices[starts][ring]
    normals = np.add.reduceat(cross_rows(points, points[following]), starts)
    normals /= np.maximum(np.linalg.norm(normals, axis=1), 1e-300)[:, None]
    edges = vertices[following] - vertices
    next_edges = edges[following]
    turns = np.einsum("ij,ij->i", cross_rows(edges, next_edges), normals[ring])
    lengths = np.linalg.norm(edges, axis=1)
    sines = turns / np.maximum(lengths * lengths[following], 1e-300)
    angles = np.arctan2(turns, np.einsum("ij,ij->i", edges, next_edges))
    convex = (np.minimum.reduceat(sines, starts) >= -MIN_TURN_SINE) & (
        np.abs(np.add.reduceat(angles, starts) - 2 * np.pi) < 1e-6
    )
    # sines[k] is the turn at the vertex following k
    corner = np.empty(len(vertices), dtype=bool)
    corner[following] = sines > MIN_TURN_SINE
    preceding = np.empty_like(following)
    preceding[following] = np.arange(len(vertices))
    apex = corner & corner[following] & corner[preceding]
    # Per ring, its first apex, or the vertex count where it has none.
    chosen = np.minimum.reduceat(np.where(apex, np.arange(len(vertices)), len(vertices)), starts)
    return np.where(convex & (chosen < len(vertices)), chosen - starts, -1)


def _fans(starts: np.ndarray, counts: np.ndarray, apexes: np.ndarray) -> np.ndarray:
    """Fan triangles of rings of `counts` vertices from `starts`, each from its vertex
    `apexes` (counted from its start), (sum(counts - 2), 3)."""
    fans = counts - 2
    ring_start, ring_count = np.repeat(starts, fans), np.repeat(counts, fans)
    apex = np.repeat(apexes, fans)
    step = np.arange(fans.sum()) - np.repeat(np.cumsum(fans) - fans, fans) + 1
    corners = [apex, (apex + step) % ring_count, (apex + step + 1) % ring_count]
    return np.column_stack([ring_start + c for c in corners]).astype(np.int64)
