"""Measures of planar polygons and solids: vector areas, normals, volumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np
import shapely

from twin.model import Solid, Surface


def ring_vector_area(ring: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Newell's vector area of a ring: its normal times its area, signed by orientation."""
    p = ring - origin
    q = np.concatenate((p[1:], p[:1]))  # np.roll, at a fraction of its cost on a few vertices
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
    row, and their counts. From one lexsort, the rest compiled: np.unique's structured-row
    sort, then the lexsort's numpy steps, took several times longer on the few hundred
    rows of a roof's edges or a solid's vertices, seven times a building."""
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    return _unique_rows(rows, np.lexsort(rows.T[::-1]))


@numba.njit(cache=True)
def _unique_rows(rows, order):
    count, width = rows.shape
    starts = np.ones(count, np.bool_)
    for i in range(1, count):
        same = True
        for column in range(width):
            if rows[order[i], column] != rows[order[i - 1], column]:
                same = False
                break
        starts[i] = not same
    distinct = np.count_nonzero(starts)
    first = np.empty(distinct, np.int64)
    counts = np.zeros(distinct, np.int64)
    inverse = np.empty(count, np.int64)
    group = -1
    for i in range(count):
        if starts[i]:
            group += 1
            first[group] = order[i]
        inverse[order[i]] = group
        counts[group] += 1
    return rows[first], first, inverse, counts


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


def points_within(
    xy: np.ndarray, polygons: np.ndarray, rings_included: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(point index, polygon index) pairs of the points (n, 2) strictly inside each of the
    polygons, by point, then polygon: what `STRtree(polygons).query(points, "within")`
    gives, a point on a ring being in none; with `rings_included`, in each polygon or on
    its rings (the query's "intersects").

    Compiled, over the polygons' boxes: shapely's query made a point geometry of each
    raster sample and a prepared test per candidate, half a millisecond a partition.
    Points are located as GEOS locates them (its ray-crossing rules, and its orientation
    test with its error bound); the few too near a ring for that bound to settle are left
    to GEOS itself.
    """
    if len(polygons) == 0 or len(xy) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Not shapely.to_ragged_array: it costs more than the whole location.
    rings, ring_polygon = shapely.get_rings(polygons, return_index=True)
    coordinates, vertex_ring = shapely.get_coordinates(rings, return_index=True)
    ring_offsets = np.searchsorted(vertex_ring, np.arange(len(rings) + 1))
    polygon_offsets = np.searchsorted(ring_polygon, np.arange(len(polygons) + 1))
    boxes = shapely.bounds(polygons)
    xy = np.ascontiguousarray(xy, dtype=np.float64)
    point_index, polygon_index, unsettled = _points_within(
        xy, np.ascontiguousarray(coordinates), ring_offsets, polygon_offsets, boxes, rings_included
    )
    if unsettled.any():
        rest = np.flatnonzero(unsettled)
        predicate = "intersects" if rings_included else "within"
        found_point, found_polygon = shapely.STRtree(polygons).query(shapely.points(xy[rest]), predicate=predicate)
        point_index = np.concatenate([point_index, rest[found_point]])
        polygon_index = np.concatenate([polygon_index, found_polygon])
        order = np.lexsort((polygon_index, point_index))
        point_index, polygon_index = point_index[order], polygon_index[order]
    return point_index, polygon_index


@numba.njit(cache=True)
def boxes_in_cells(low_x, low_y, high_x, high_y, cell):
    """The boxes (their lowest and highest x and y) bucketed in the square cells of side
    `cell` of a grid from their lowest corner: (columns, rows, each cell's first entry and
    the end of the last, the boxes overlapping each cell in increasing order). Cell
    (a, b) is number a * rows + b."""
    x0, y0 = low_x.min(), low_y.min()
    columns, rows = int((high_x.max() - x0) / cell) + 1, int((high_y.max() - y0) / cell) + 1
    first_column = np.minimum(np.floor((low_x - x0) / cell).astype(np.int64), columns - 1)
    last_column = np.minimum(np.floor((high_x - x0) / cell).astype(np.int64), columns - 1)
    first_row = np.minimum(np.floor((low_y - y0) / cell).astype(np.int64), rows - 1)
    last_row = np.minimum(np.floor((high_y - y0) / cell).astype(np.int64), rows - 1)
    starts = np.zeros(columns * rows + 1, np.int64)
    for box in range(len(low_x)):
        for a in range(first_column[box], last_column[box] + 1):
            for b in range(first_row[box], last_row[box] + 1):
                starts[a * rows + b + 1] += 1
    for c in range(columns * rows):
        starts[c + 1] += starts[c]
    entries = np.empty(starts[-1], np.int64)
    filled = starts[:-1].copy()
    for box in range(len(low_x)):
        for a in range(first_column[box], last_column[box] + 1):
            for b in range(first_row[box], last_row[box] + 1):
                entries[filled[a * rows + b]] = box
                filled[a * rows + b] += 1
    return columns, rows, starts, entries


@numba.njit(cache=True)
def _points_within(xy, coordinates, ring_offsets, polygon_offsets, boxes, rings_included):
    """`points_within` for the settled points, and which points are not settled. The
    polygons are bucketed by their boxes in square cells, about one per polygon, so that
    a point tests only the polygons whose box covers its cell."""
    polygon_count = len(boxes)
    x0, y0, x1, y1 = boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()
    width, depth = x1 - x0, y1 - y0
    cell = max(np.sqrt(width * depth / polygon_count), max(width, depth) / 1024, 1e-9)
    columns, rows, cell_starts, cell_polygons = boxes_in_cells(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], cell)

    point_index, polygon_index = [], []
    unsettled = np.zeros(len(xy), np.bool_)
    found = np.empty(polygon_count, np.int64)
    for i in range(len(xy)):
        x, y = xy[i, 0], xy[i, 1]
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            continue
        c = min(int((x - x0) / cell), columns - 1) * rows + min(int((y - y0) / cell), rows - 1)
        count = 0
        for k in range(cell_starts[c], cell_starts[c + 1]):
            polygon = cell_polygons[k]
            if not (boxes[polygon, 0] <= x <= boxes[polygon, 2] and boxes[polygon, 1] <= y <= boxes[polygon, 3]):
                continue
            first_ring = polygon_offsets[polygon]
            contained = True
            for ring in range(first_ring, polygon_offsets[polygon + 1]):
                location = _ring_location(x, y, coordinates, ring_offsets[ring], ring_offsets[ring + 1])
                if location == _UNSETTLED:
                    unsettled[i] = True
                    break
                # Inside the exterior and outside every hole; on a ring only if included.
                if location == _ON_RING:
                    if rings_included:
                        continue
                    contained = False
                    break
                if location != (_INSIDE if ring == first_ring else _OUTSIDE):
                    contained = False
                    break
            if unsettled[i]:
                break
            if contained:
                found[count] = polygon
                count += 1
        if not unsettled[i]:
            for k in range(count):
                point_index.append(i)
                polygon_index.append(found[k])
    return np.array(point_index, dtype=np.int64), np.array(polygon_index, dtype=np.int64), unsettled


_OUTSIDE, _INSIDE, _ON_RING, _UNSETTLED = 0, 1, 2, 3


@numba.njit(cache=True)
def _ring_location(x, y, coordinates, start, end) -> int:
    """Where (x, y) lies with respect to a closed ring, by GEOS's ray-crossing rules
    (RayCrossingCounter, given each vertex and the one before it, as GEOS gives them): an
    upward edge counts its start and not its end."""
    crossings = 0
    for k in range(start + 1, end):
        x1, y1 = coordinates[k, 0], coordinates[k, 1]
        x2, y2 = coordinates[k - 1, 0], coordinates[k - 1, 1]
        if x1 < x and x2 < x:
            continue
        if x == x2 and y == y2:
            return _ON_RING
        if y1 == y and y2 == y:
            if min(x1, x2) <= x <= max(x1, x2):
                return _ON_RING
            continue
        if (y1 > y and y2 <= y) or (y2 > y and y1 <= y):
            orientation = _orientation(x1, y1, x2, y2, x, y)
            if orientation == 2:
                return _UNSETTLED
            if orientation == 0:
                return _ON_RING
            if y2 < y1:
                orientation = -orientation
            if orientation == 1:
                crossings += 1
    return _INSIDE if crossings % 2 else _OUTSIDE


@numba.njit(cache=True, inline="always")
def _orientation(ax, ay, bx, by, cx, cy) -> int:
    """The side of a->b that c lies on (1 left, -1 right, 0 on the line), or 2 where
    GEOS's floating-point filter cannot tell (it then computes in double-double)."""
    left = (ax - cx) * (by - cy)
    right = (ay - cy) * (bx - cx)
    determinant = left - right
    if left > 0.0:
        if right <= 0.0:
            return (determinant > 0) - (determinant < 0)
        total = left + right
    elif left < 0.0:
        if right >= 0.0:
            return (determinant > 0) - (determinant < 0)
        total = -left - right
    else:
        return (determinant > 0) - (determinant < 0)
    bound = 1e-15 * total
    if determinant >= bound or -determinant >= bound:
        return (determinant > 0) - (determinant < 0)
    return 2
