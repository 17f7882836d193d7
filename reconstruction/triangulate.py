"""Triangles of planar polygons with holes, for meshes (glTF, ray casting, checks).

Each surface is projected onto its own plane and triangulated by GEOS's constrained
Delaunay triangulation (through shapely), which respects holes; triangles reuse the
surface's own vertices and turn the same way as the surface, so the mesh of a closed,
outward-oriented solid is closed and outward-oriented too.
"""

from __future__ import annotations

import numpy as np
import shapely

from reconstruction.geometry import cross, cross_rows, surface_normal
from twin.model import Solid, Surface


def triangulate_surface(surface: Surface) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (k, 3), triangles (t, 3) indexing them), oriented like the surface."""
    vertices = np.concatenate(surface.rings)
    normal = surface_normal(surface)
    if len(surface.rings) == 1 and len(vertices) == 3:
        return vertices, np.array([[0, 1, 2]])
    u = cross(normal, np.array([1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0]))
    u /= np.linalg.norm(u)
    v = cross(normal, u)
    origin = vertices[0]
    flat = np.column_stack([(vertices - origin) @ u, (vertices - origin) @ v])
    offsets = np.cumsum([0] + [len(r) for r in surface.rings])
    rings = [flat[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    polygon = shapely.Polygon(rings[0], rings[1:])
    lookup = {tuple(p): i for i, p in enumerate(flat.tolist())}
    triangles = []
    for triangle in shapely.get_parts(shapely.constrained_delaunay_triangles(polygon)):
        corners = np.asarray(triangle.exterior.coords)[:3]
        indices = [lookup.get(tuple(c)) for c in corners.tolist()]
        if None in indices:
            indices = [int(np.argmin(np.linalg.norm(flat - c, axis=1))) for c in corners]
        triangles.append(indices)
    triangles = np.array(triangles, dtype=np.int64).reshape(-1, 3)
    if len(triangles):
        a, b, c = (vertices[triangles[:, k]] for k in range(3))
        flipped = cross_rows(b - a, c - a) @ normal < 0
        triangles[flipped] = triangles[flipped][:, [0, 2, 1]]
    return vertices, triangles


def triangulate_solid(solid: Solid) -> tuple[np.ndarray, np.ndarray]:
    """One mesh for a solid, with the vertices shared between its surfaces merged."""
    all_vertices, all_triangles, offset = [], [], 0
    for surface in solid.surfaces:
        vertices, triangles = triangulate_surface(surface)
        all_vertices.append(vertices)
        all_triangles.append(triangles + offset)
        offset += len(vertices)
    vertices = np.concatenate(all_vertices)
    keys = np.rint(vertices * 1000).astype(np.int64)
    unique, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return vertices[first], inverse.reshape(-1)[np.concatenate(all_triangles)]
