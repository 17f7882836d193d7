"""A building's roof as a heightfield: one height per grid cell over its footprint.

The grid is aligned with the footprint's dominant direction so that cell edges follow
the walls, which keeps part outlines straight. Each cell holds the median height of
its points: robust to the odd wall or stray point, and area-weighted where a point
count would over-weight strips scanned twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import shapely

from reconstruction.crop import counting_order
from reconstruction.orientation import rotation


@dataclass(frozen=True, eq=False)
class Heightfield:
    angle: float
    """Grid direction in radians; cell (i, j) spans [u0 + i*cell, u0 + (i+1)*cell] x [v0 + j*cell, ...]
    in the rotated frame."""
    u0: float
    v0: float
    cell: float
    heights: np.ndarray
    """(nu, nv) median point height per cell, NaN where a cell has no point."""
    spread: np.ndarray
    """(nu, nv) highest minus lowest point height per cell (large where a cell straddles a step)."""
    covered: np.ndarray
    """(nu, nv) cells that intersect the footprint."""
    inside: np.ndarray
    """(nu, nv) cells whose centre is inside the footprint."""

    def cell_region(self, mask: np.ndarray) -> shapely.Geometry:
        """The union of the cells of `mask` in map coordinates, normalized (the rings start
        and run, and the parts and holes come, in GEOS's canonical order): what GEOS's
        coverage union of the cells' boxes gives, normalized, but traced on the grid in a
        fraction of its time. Cells touching at a corner only are separate polygons, as in
        GEOS; a hole touching its exterior at a corner is a hole."""
        if not mask.any():
            return shapely.from_wkt("GEOMETRYCOLLECTION EMPTY")
        corners, ring_offsets, ring_part, exterior = _cell_rings(np.ascontiguousarray(mask, dtype=np.bool_))
        uv = np.column_stack([self.u0 + corners[:, 0] * self.cell, self.v0 + corners[:, 1] * self.cell])
        # Each part's exterior, then its holes.
        order = np.lexsort((~exterior, ring_part))
        lengths = np.diff(ring_offsets)[order]
        vertex_order = np.concatenate([np.arange(ring_offsets[k], ring_offsets[k + 1]) for k in order])
        part_offsets = np.searchsorted(ring_part[order], np.arange(ring_part.max() + 2))
        geometry = shapely.from_ragged_array(
            shapely.GeometryType.MULTIPOLYGON,
            self._grid_to_map(uv[vertex_order]),
            (np.concatenate([[0], np.cumsum(lengths)]), part_offsets, np.array([0, len(part_offsets) - 1])),
        )[0]
        if len(part_offsets) == 2:
            geometry = shapely.get_geometry(geometry, 0)
        return shapely.normalize(geometry)

    def _grid_to_map(self, uv: np.ndarray) -> np.ndarray:
        # Term by term rather than by a matrix product, whose rounding may depend on the
        # number of rows (BLAS kernels).
        (c, s), (minus_s, _) = rotation(self.angle)
        return np.column_stack([uv[:, 0] * c + uv[:, 1] * minus_s, uv[:, 0] * s + uv[:, 1] * c])

    def cell_indices(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid indices (i, j) of map points, clipped to the grid."""
        nu, nv = self.heights.shape
        return _clipped_cells(xy @ rotation(self.angle).T, self.u0, self.v0, self.cell, nu, nv)

    def cell_centres(self, cells: np.ndarray) -> np.ndarray:
        """Map coordinates of the centres of cells given as (k, 2) grid indices."""
        uv = np.column_stack([self.u0 + (cells[:, 0] + 0.5) * self.cell, self.v0 + (cells[:, 1] + 0.5) * self.cell])
        return uv @ rotation(self.angle)

    def to_map(self, geometry: shapely.Geometry) -> shapely.Geometry:
        return shapely.transform(geometry, lambda uv: uv @ rotation(self.angle))

    def of(self, points: np.ndarray) -> "Heightfield":
        """The heightfield of `points` (n, 3) on this grid over the same footprint."""
        nu, nv = self.heights.shape
        heights = np.full((nu, nv), np.nan)
        spread = np.full((nu, nv), np.nan)
        if len(points):
            i, j = self.cell_indices(points[:, :2])
            cells, medians, ranges = medians_by_cell(i * nv + j, points[:, 2])
            heights.reshape(-1)[cells] = medians
            spread.reshape(-1)[cells] = ranges
        heights[~self.covered] = np.nan
        spread[~self.covered] = np.nan
        return Heightfield(self.angle, self.u0, self.v0, self.cell, heights, spread, self.covered, self.inside)

    def data_heights(self, mask: np.ndarray | None = None) -> np.ndarray:
        selected = np.isfinite(self.heights) & (self.inside if mask is None else mask)
        return self.heights[selected]


@numba.njit(cache=True)
def _clipped_cells(uv, u0, v0, cell, nu, nv):
    """`Heightfield.cell_indices` of points turned into the grid's frame, in one compiled
    pass: numpy's passes took a tenth of a millisecond a call, three calls a roof."""
    i, j = np.empty(len(uv), np.int64), np.empty(len(uv), np.int64)
    for k in range(len(uv)):
        i[k] = min(max(int(_floor_division(uv[k, 0] - u0, cell)), 0), nu - 1)
        j[k] = min(max(int(_floor_division(uv[k, 1] - v0, cell)), 0), nv - 1)
    return i, j


@numba.njit(cache=True, inline="always")
def _floor_division(a, b):
    """`a // b` as Python and numpy compute it (from an exact remainder: the floor of the
    exact quotient), at the cost of a division. The rounded quotient is on the exact one's
    side of every integer, rounding being monotonic, unless it is itself an integer: only
    then is the remainder taken."""
    quotient = a / b
    floored = np.floor(quotient)
    return a // b if floored == quotient else floored


def rasterize(points: np.ndarray, footprint: shapely.Polygon, cell: float, angle: float) -> Heightfield:
    """The roof heightfield of `points` (n, 3) over `footprint`."""
    turn = rotation(angle)
    local = shapely.transform(footprint, lambda xy: xy @ turn.T)
    umin, vmin, umax, vmax = local.bounds
    u0, v0 = np.floor(umin / cell) * cell, np.floor(vmin / cell) * cell
    nu = max(1, int(np.ceil((umax - u0) / cell)))
    nv = max(1, int(np.ceil((vmax - v0) / cell)))

    iu, iv = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    shapely.prepare(local)
    inside = shapely.contains_xy(local, u0 + (iu + 0.5) * cell, v0 + (iv + 0.5) * cell)
    # A cell whose centre is inside meets the interior: only the others need their box.
    other_u, other_v = iu[~inside], iv[~inside]
    others = shapely.box(u0 + other_u * cell, v0 + other_v * cell, u0 + (other_u + 1) * cell, v0 + (other_v + 1) * cell)
    covered = inside.copy()
    covered[~inside] = shapely.intersects(local, others) & ~shapely.touches(local, others)

    empty = np.full((nu, nv), np.nan)
    return Heightfield(angle, float(u0), float(v0), cell, empty, empty, covered, inside).of(points)


def percentile(values: np.ndarray, q: float) -> float:
    """`np.percentile(values, q)` (linear interpolation) of a 1-d array without NaN, to the
    last bit, at a fraction of its overhead: numpy's general path took half a millisecond
    of a building's LOD1 heights. NaN for no values."""
    return _percentile(np.ascontiguousarray(values, dtype=np.float64), float(q))


@numba.njit(cache=True)
def _percentile(values, q):
    count = len(values)
    if count == 0:
        return np.nan
    ordered = np.sort(values)
    # numpy's steps and roundings: the virtual index, then its lerp from whichever end is
    # nearer.
    virtual = (count - 1) * (q / 100)
    if virtual >= count - 1:
        return ordered[count - 1]
    below = int(np.floor(virtual))
    weight = virtual - below
    low, high = ordered[below], ordered[below + 1]
    difference = high - low
    if weight >= 0.5:
        return high - difference * (1 - weight)
    return low + difference * weight


def medians_by_cell(cells: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct cell numbers (non-negative integers, one per point) in ascending order,
    and per cell the median of its points' heights `z` and their range (highest minus
    lowest)."""
    return _medians_by_cell(np.ascontiguousarray(cells, dtype=np.int64), np.ascontiguousarray(z, dtype=np.float64))


@numba.njit(cache=True)
def _medians_by_cell(cells, z):
    # A counting sort by cell, then each cell's few heights sorted: where sorting all the
    # points by (cell, height) took most of the time of rasterising a roof.
    order, starts = counting_order(cells)
    by_cell = z[order]
    found = 0
    for k in range(len(starts) - 1):
        found += starts[k + 1] > starts[k]
    numbers, medians, ranges = np.empty(found, np.int64), np.empty(found), np.empty(found)
    found = 0
    for k in range(len(starts) - 1):
        count = starts[k + 1] - starts[k]
        if count:
            heights = by_cell[starts[k] : starts[k + 1]]
            heights.sort()
            numbers[found] = k
            medians[found] = 0.5 * (heights[(count - 1) // 2] + heights[count // 2])
            ranges[found] = heights[count - 1] - heights[0]
            found += 1
    return numbers, medians, ranges


@numba.njit(cache=True)
def _cell_rings(mask: np.ndarray):
    """The boundary rings of the cells of `mask`: (closed rings' grid corners (v, 2), ring
    offsets into them, each ring's part (its 4-connected group of cells), whether each ring
    is its part's exterior).

    Each ring runs with its cells on the left (exteriors counterclockwise, holes
    clockwise). As in GEOS's union, cells make a part when 4-connected, and so do the
    cells outside: where two regions touch at a corner only, each keeps a ring of its own.
    """
    nu, nv = mask.shape
    part = np.full((nu, nv), -1, np.int64)
    stack = np.empty(nu * nv, np.int64)
    parts = 0
    for i in range(nu):
        for j in range(nv):
            if not mask[i, j] or part[i, j] >= 0:
                continue
            part[i, j] = parts
            stack[0] = i * nv + j
            top = 1
            while top:
                top -= 1
                ci, cj = stack[top] // nv, stack[top] % nv
                for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    ni, nj = ci + di, cj + dj
                    if 0 <= ni < nu and 0 <= nj < nv and mask[ni, nj] and part[ni, nj] < 0:
                        part[ni, nj] = parts
                        stack[top] = ni * nv + nj
                        top += 1
            parts += 1

    visited = np.zeros((nu, nv, 4), np.bool_)
    # One corner per boundary edge (at most 4 a cell), and each ring's first again.
    corners = np.empty((5 * nu * nv, 2), np.int64)
    count = 0
    offsets = [0]
    ring_part = []
    exterior = []
    for i in range(nu):
        for j in range(nv):
            if not mask[i, j]:
                continue
            for first in range(4):
                # The cell's edge in direction `first` leaves its corner (a, b).
                a, b = i - _CELL_OF_A[first], j - _CELL_OF_B[first]
                if visited[i, j, first] or not _is_boundary_edge(mask, a, b, first):
                    continue
                d = first
                doubled_area = 0
                while True:
                    visited[a + _CELL_OF_A[d], b + _CELL_OF_B[d], d] = True
                    corners[count, 0], corners[count, 1] = a, b
                    count += 1
                    na, nb = a + _STEP_A[d], b + _STEP_B[d]
                    doubled_area += a * nb - na * b
                    a, b = na, nb
                    left, right = (d + 1) % 4, (d + 3) % 4
                    left_is_edge, right_is_edge = _is_boundary_edge(mask, a, b, left), _is_boundary_edge(mask, a, b, right)
                    if left_is_edge and right_is_edge:
                        # Two cells of the mask touching at this corner only: the ring goes
                        # on along the other one when it is of the same part (it then
                        # parts two regions outside), else it stays with its own cell.
                        same = part[a + _CELL_OF_A[right], b + _CELL_OF_B[right]] == part[i, j]
                        d = right if same else left
                    elif left_is_edge:
                        d = left
                    elif not _is_boundary_edge(mask, a, b, d):
                        d = right
                    if a == i - _CELL_OF_A[first] and b == j - _CELL_OF_B[first] and d == first:
                        break
                corners[count, 0], corners[count, 1] = a, b
                count += 1
                offsets.append(count)
                ring_part.append(part[i, j])
                exterior.append(doubled_area > 0)
    return corners[:count].copy(), np.array(offsets), np.array(ring_part), np.array(exterior)


# Directions east, north, west, south: the step along each, and the cell on the left of
# the edge leaving a corner (a, b) that way (its cell) and the cell on its right.
_STEP_A, _STEP_B = (1, 0, -1, 0), (0, 1, 0, -1)
_CELL_OF_A, _CELL_OF_B = (0, -1, -1, 0), (0, 0, -1, -1)
_ACROSS_A, _ACROSS_B = (0, 0, -1, -1), (-1, 0, 0, -1)


@numba.njit(cache=True, inline="always")
def _is_boundary_edge(mask: np.ndarray, a: int, b: int, direction: int) -> bool:
    """Whether the edge leaving corner (a, b) in `direction` has a cell of the mask on its
    left and none on its right."""
    return _in_mask(mask, a + _CELL_OF_A[direction], b + _CELL_OF_B[direction]) and not _in_mask(
        mask, a + _ACROSS_A[direction], b + _ACROSS_B[direction]
    )


@numba.njit(cache=True, inline="always")
def _in_mask(mask: np.ndarray, i: int, j: int) -> bool:
    return 0 <= i < mask.shape[0] and 0 <= j < mask.shape[1] and mask[i, j]
