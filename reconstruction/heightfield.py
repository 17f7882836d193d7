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

    def cell_boxes(self, mask: np.ndarray) -> np.ndarray:
        """The cells of `mask` as shapely boxes in map coordinates."""
        i, j = np.nonzero(mask)
        u = self.u0 + i * self.cell
        v = self.v0 + j * self.cell
        boxes = shapely.box(u, v, u + self.cell, v + self.cell)
        return shapely.transform(boxes, lambda uv: uv @ rotation(self.angle))

    def cell_indices(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Grid indices (i, j) of map points, clipped to the grid."""
        uv = xy @ rotation(self.angle).T
        nu, nv = self.heights.shape
        i = np.clip(((uv[:, 0] - self.u0) // self.cell).astype(np.int64), 0, nu - 1)
        j = np.clip(((uv[:, 1] - self.v0) // self.cell).astype(np.int64), 0, nv - 1)
        return i, j

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
