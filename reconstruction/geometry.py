"""Measures of planar polygons and solids: vector areas, normals, volumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from twin.model import Solid, Surface


def ring_vector_area(ring: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Newell's vector area of a ring: its normal times its area, signed by orientation."""
    p = ring - origin
    q = np.roll(p, -1, axis=0)
    return 0.5 * cross_rows(p, q).sum(axis=0)


def cross_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cross products of the rows of two (n, 3) arrays: the same arithmetic as
    numpy.cross, without its axis handling, which costs more than the products on the
    few vertices of a ring (this runs for every ring of every solid)."""
    product = np.empty((len(a), 3))
    for axis, (i, j) in enumerate(((1, 2), (2, 0), (0, 1))):
        np.multiply(a[:, i], b[:, j], out=product[:, axis])
        product[:, axis] -= a[:, j] * b[:, i]
    return product


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cross product of two 3-vectors, as numpy.cross computes it (see cross_rows)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def surface_vector_area(surface: Surface, origin: np.ndarray) -> np.ndarray:
    """Vector area of a polygon with holes (holes run the other way, so they subtract)."""
    return sum((ring_vector_area(ring, origin) for ring in surface.rings), np.zeros(3))


def surface_vector_areas(surfaces: Sequence[Surface]) -> np.ndarray:
    """`surface_vector_area` of each surface about its first vertex, (n, 3), all at once and
    to the last bit the same."""
    rings = [ring for surface in surfaces for ring in surface.rings]
    ring_counts = [len(surface.rings) for surface in surfaces]
    ring_surface = np.repeat(np.arange(len(surfaces)), ring_counts)
    vertex_ring = np.repeat(np.arange(len(rings)), [len(ring) for ring in rings])
    origins = np.array([surface.rings[0][0] for surface in surfaces])
    points = np.concatenate(rings) - origins[ring_surface[vertex_ring]]
    terms = cross_rows(points, points[RingLayout.of(rings).successors])
    ring_areas = 0.5 * group_sums(terms, vertex_ring, len(rings))
    return group_sums(ring_areas, ring_surface, len(surfaces))


def group_sums(values: np.ndarray, group: np.ndarray, group_count: int) -> np.ndarray:
    """The sum of the rows (n, k) of `values` in each group, added first to last as
    numpy.sum adds one group's rows (bincount goes in order, and column by column is
    several times faster than np.add.at on rows; np.add.reduceat would add pairwise)."""
    sums = np.empty((group_count, values.shape[1]))
    for column in range(values.shape[1]):
        sums[:, column] = np.bincount(group, weights=values[:, column], minlength=group_count)
    return sums


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What np.unique(rows, axis=0, return_index=True, return_inverse=True,
    return_counts=True) gives for an integer (n, k) array: the distinct rows in
    lexicographic order, the index of each one's first occurrence, each row's distinct
    row, and their counts. From one lexsort: np.unique's structured-row sort took several
    times longer on the few hundred rows of a roof's edges or a solid's vertices."""
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    starts = np.ones(len(rows), dtype=bool)
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    inverse = np.empty(len(rows), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    counts = np.diff(np.append(np.flatnonzero(starts), len(rows)))
    return ordered[starts], order[starts], inverse, counts


@numba.njit(cache=True)
def component_labels(node_count: int, ends: np.ndarray, other_ends: np.ndarray) -> np.ndarray:
    """The connected component of each node of the undirected graph with these edges,
    numbered in the order of their lowest nodes, as scipy's `connected_components` numbers
    them.

    By union-find, compiled: on the graphs here (a roof's faces, a solid's surfaces, a
    footprint's raster cells), building scipy's sparse graph took longer than the search."""
    parent = np.arange(node_count)
    for a, b in zip(ends, other_ends):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        parent[max(a, b)] = min(a, b)
    labels = np.empty(node_count, np.int64)
    count = 0
    for node in range(node_count):
        root = node
        while parent[root] != root:
            root = parent[root]
        # Roots are their components' lowest nodes, so each is met before its other nodes.
        if root == node:
            labels[node] = count
            count += 1
        else:
            labels[node] = labels[root]
    return labels


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The dot products of the rows of two (n, 3) arrays, each as np.dot computes it."""
    return (a[:, None, :] @ b[:, :, None])[:, 0, 0]


def surface_area(surface: Surface) -> float:
    origin = surface.rings[0][0]
    return float(np.linalg.norm(surface_vector_area(surface, origin)))


def surface_normal(surface: Surface) -> np.ndarray:
    area = surface_vector_area(surface, surface.rings[0][0])
    norm = np.linalg.norm(area)
    return area / norm if norm > 0 else area


def solid_origin(solid: Solid) -> np.ndarray:
    return solid.surfaces[0].rings[0][0]


def solid_volume(solid: Solid) -> float:
    """Signed volume by the divergence theorem: positive for a closed, outward-oriented shell.

    All of the solid's rings at once: per ring in numpy, this runs for every LoD of every
    building, where the calls would cost more than the arithmetic."""
    rings = [ring for surface in solid.surfaces for ring in surface.rings]
    layout = RingLayout.of(rings)
    points = np.concatenate(rings) - solid_origin(solid)
    ring_areas = 0.5 * np.add.reduceat(cross_rows(points, points[layout.successors]), layout.starts)
    first_rings = np.cumsum([0] + [len(surface.rings) for surface in solid.surfaces[:-1]])
    surface_areas = np.add.reduceat(ring_areas, first_rings)
    corners = points[layout.starts[first_rings]]
    return float(np.einsum("ij,ij->", corners, surface_areas)) / 3.0


@dataclass(frozen=True)
class RingLayout:
    """Where rings lie once concatenated into one (n, 3) array of vertices: each ring's first
    vertex, and for every vertex the index of the next one around its ring."""

    starts: np.ndarray
    successors: np.ndarray

    @staticmethod
    def of(rings: list[np.ndarray]) -> "RingLayout":
        lengths = np.array([len(ring) for ring in rings])
        ends = np.cumsum(lengths)
        successors = np.arange(1, ends[-1] + 1)
        successors[ends - 1] = ends - lengths
        return RingLayout(ends - lengths, successors)
