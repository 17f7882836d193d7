"""Points indexed by a grid in xy: per-building crops of a point cloud without a scan of all
points, and the cells that a roof's neighbour search (`planes.nearest_neighbours`) scans."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import shapely


@dataclass(frozen=True, eq=False)
class GridIndex:
    """Points sorted by the grid cell they fall in; a cell's points are one slice."""

    x0: float
    y0: float
    cell: float
    ny: int
    order: np.ndarray
    """Point indices sorted by cell number (column * ny + row)."""
    cell_starts: np.ndarray
    """Where each cell number's points start in `order`, and then the point count: cell k's
    points are order[cell_starts[k]:cell_starts[k + 1]]."""


def build_grid_index(xy: np.ndarray, cell: float = 10.0) -> GridIndex:
    if len(xy) == 0:
        return GridIndex(0.0, 0.0, cell, 1, np.empty(0, np.int64), np.zeros(1, np.int64))
    x, y = xy[:, 0], xy[:, 1]
    x0, y0 = float(x.min()), float(y.min())
    ny, order, cell_starts = _sort_by_cell(x, y, x0, y0, cell)
    return GridIndex(x0, y0, cell, ny, order, cell_starts)


@numba.njit(cache=True)
def _sort_by_cell(x, y, x0, y0, cell):
    """The index's rows, order and cell starts. A cell is floor((x - x0) / cell) here and
    in the queries, and rounding is monotonic, so a box's cells hold all its points."""
    keys = np.empty(len(x), np.int64)
    rows = 0
    for i in range(len(x)):
        rows = max(rows, int(np.floor((y[i] - y0) / cell)) + 1)
    for i in range(len(x)):
        keys[i] = int(np.floor((x[i] - x0) / cell)) * rows + int(np.floor((y[i] - y0) / cell))
    order, cell_starts = counting_order(keys)
    return rows, order, cell_starts


@numba.njit(cache=True)
def counting_order(keys):
    """The stable order that sorts non-negative integer `keys`, and where each key's run
    starts in it, then its length: key k's items are order[starts[k]:starts[k + 1]].

    A counting sort: one pass and no comparison, where numpy's argsort and bincount took
    several, both on a unit's millions of points and on a roof's thousands."""
    starts = np.zeros(keys.max() + 2, np.int64)
    for key in keys:
        starts[key + 1] += 1
    for k in range(1, len(starts)):
        starts[k] += starts[k - 1]
    order = np.empty(len(keys), np.int64)
    filled = starts[:-1].copy()
    for i in range(len(keys)):
        order[filled[keys[i]]] = i
        filled[keys[i]] += 1
    return order, starts


@numba.njit(cache=True, inline="always")
def reach_beyond_square(x, y, x0, y0, cell, column, row, ring, columns, rows) -> float:
    """How far in plan (x, y) lies from any cell of a grid (`columns` x `rows` cells of
    side `cell` from (x0, y0)) outside the square of cells within `ring` of its cell
    (`column`, `row`): the distance to the nearest side of the square that has cells
    beyond it; infinite when the square covers the grid. A search visiting squares of
    cells ring by ring stops once what it found is nearer than this."""
    reach = np.inf
    if column - ring > 0:
        reach = min(reach, x - (x0 + (column - ring) * cell))
    if column + ring < columns - 1:
        reach = min(reach, x0 + (column + ring + 1) * cell - x)
    if row - ring > 0:
        reach = min(reach, y - (y0 + (row - ring) * cell))
    if row + ring < rows - 1:
        reach = min(reach, y0 + (row + ring + 1) * cell - y)
    return reach


def indices_in_bounds(index: GridIndex, xy: np.ndarray, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """Indices of the points (n, 2) within `bounds` (edges included), in ascending order."""
    if len(index.order) == 0:
        return np.empty(0, np.int64)
    xmin, ymin, xmax, ymax = bounds
    i0 = max(0, math.floor((xmin - index.x0) / index.cell))
    i1 = math.floor((xmax - index.x0) / index.cell)
    j0 = max(0, math.floor((ymin - index.y0) / index.cell))
    j1 = min(index.ny - 1, math.floor((ymax - index.y0) / index.cell))
    if i1 < i0 or j1 < j0:
        return np.empty(0, np.int64)
    return _in_box(index.order, index.cell_starts, index.ny, i0, i1, j0, j1, xy, xmin, ymin, xmax, ymax)


@numba.njit(cache=True)
def _in_box(order, cell_starts, rows, i0, i1, j0, j1, xy, xmin, ymin, xmax, ymax):
    """The points of cells i0..i1 x j0..j1 within the box, sorted. Compiled: in numpy, the
    cells' slices were joined, then their points gathered and compared, each a copy. The
    cells reach past the box, by half their area or more around a house: dropping those
    points first spares sorting them and testing them against a polygon."""
    last_number = len(cell_starts) - 1
    # Each column's cells j0..j1 are consecutive numbers, so one slice of `order`; numbers
    # past the last cell have no points.
    total = 0
    for i in range(i0, i1 + 1):
        total += cell_starts[min(i * rows + j1 + 1, last_number)] - cell_starts[min(i * rows + j0, last_number)]
    found = np.empty(total, np.int64)
    count = 0
    for i in range(i0, i1 + 1):
        for s in range(cell_starts[min(i * rows + j0, last_number)], cell_starts[min(i * rows + j1 + 1, last_number)]):
            k = order[s]
            if xmin <= xy[k, 0] <= xmax and ymin <= xy[k, 1] <= ymax:
                found[count] = k
                count += 1
    return np.sort(found[:count])


def indices_in_polygon(index: GridIndex, xy: np.ndarray, region: shapely.Geometry) -> np.ndarray:
    """Indices of the points inside `region`, in ascending order."""
    candidates = indices_in_bounds(index, xy, region.bounds)
    if len(candidates) == 0:
        return candidates
    shapely.prepare(region)
    return candidates[shapely.contains_xy(region, xy[candidates, 0], xy[candidates, 1])]


def canonical_order(points: np.ndarray) -> np.ndarray:
    """The order that sorts the points (n, 3) by x, then y, then z, equal points by index:
    `np.lexsort((z, y, x))`, at half its time or less on LiDAR crops, where few points
    share an x. One stable sort by x, then each run of equal x sorted by y and z."""
    order = np.argsort(points[:, 0], kind="stable")
    for start, end in _sort_short_runs(points, order):
        run = order[start:end]
        order[start:end] = run[np.lexsort((points[run, 2], points[run, 1]))]
    return order


@numba.njit(cache=True)
def _sort_short_runs(points: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Sorts in place, by y then z and stably, each run of `order` (points sorted by x)
    with one x over at most 16 points; returns the longer runs' (start, end) rows."""
    long_runs = []
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and points[order[end], 0] == points[order[start], 0]:
            end += 1
        if end - start > 16:
            long_runs.append((start, end))
        else:
            for i in range(start + 1, end):
                item, j = order[i], i
                while j > start and (
                    points[order[j - 1], 1] > points[item, 1]
                    or (points[order[j - 1], 1] == points[item, 1] and points[order[j - 1], 2] > points[item, 2])
                ):
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = item
        start = end
    runs = np.empty((len(long_runs), 2), np.int64)
    for k, (run_start, run_end) in enumerate(long_runs):
        runs[k] = run_start, run_end
    return runs
