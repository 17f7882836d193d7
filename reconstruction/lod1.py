"""LOD1 heights: roof percentiles (LOD1.2) and a split into parts at height steps (LOD1.3).

LOD1.3 segments the roof heightfield: neighbouring cells join a region unless their
heights jump by more than `edge_jump_m` (a step edge). Cells straddling a step (their
own points spread over more than `edge_jump_m`) and empty cells take the region of the
nearest other cell, so they cannot bridge two levels. Regions then merge while two
neighbours differ by less than `step_height_m`, and regions smaller than
`min_part_area_m2` or narrower than `MIN_PART_WIDTH_M` (strips of wall points where a
footprint is offset) merge into their closest neighbour in height. The parts are the
regions' cells clipped to the footprint, so they tile it exactly; their inner edges
are simplified together (a coverage), keeping neighbours edge-matched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import shapely
from scipy import ndimage

from reconstruction.geometry import component_labels
from reconstruction.heightfield import Heightfield, percentile
from twin.config import Lod1Config

MIN_PIECE_AREA_M2 = 1.0
MIN_PART_WIDTH_M = 1.5


@dataclass(frozen=True)
class RoofHeights:
    min: float
    p50: float
    p70: float
    max: float
    lod1: float
    """Height of the LOD1.2 block (the configured percentile, 70 by default)."""
    cells_with_data: int
    nodata_fraction: float


@dataclass(frozen=True)
class Lod13Part:
    polygon: shapely.Polygon
    height: float


def roof_heights(field: Heightfield, config: Lod1Config) -> RoofHeights | None:
    """Percentiles of the roof heightfield inside the footprint; None without any data."""
    values = field.data_heights()
    inside_cells = int(field.inside.sum())
    if len(values) == 0:
        values = field.data_heights(field.covered)
        inside_cells = max(inside_cells, int(field.covered.sum()))
    if len(values) == 0:
        return None
    p50, p70, lod1 = (percentile(values, q) for q in (50, 70, config.roof_percentile))
    return RoofHeights(
        min=float(values.min()),
        p50=float(p50),
        p70=float(p70),
        max=float(values.max()),
        lod1=float(lod1),
        cells_with_data=len(values),
        nodata_fraction=float(1 - len(values) / inside_cells) if inside_cells else 1.0,
    )


def lod13_parts(field: Heightfield, footprint: shapely.Polygon, config: Lod1Config) -> list[Lod13Part]:
    """The footprint split into parts of distinct heights; one part when the roof has no step."""
    labels, heights = segment_heights(field, config)
    if len(heights) <= 1:
        return [Lod13Part(footprint, _percentile(field.heights[field.covered], config))]
    pieces = []
    for label in range(len(heights)):
        region = field.cell_region(labels == label)
        clipped = region.intersection(footprint)
        pieces += [(piece, label) for piece in _polygons(clipped) if piece.area > 0]
    pieces = _absorb_small_pieces(pieces, heights)
    polygons = shapely.coverage_simplify(
        [p for p, _ in pieces], tolerance=field.cell, simplify_boundary=False
    )
    parts = []
    for polygon, (_, label) in zip(polygons, pieces):
        for piece in _polygons(shapely.make_valid(polygon)):
            if piece.area >= MIN_PIECE_AREA_M2:
                parts.append(Lod13Part(piece, float(heights[label])))
    if len(parts) <= 1:
        return [Lod13Part(footprint, _percentile(field.heights[field.covered], config))]
    return sorted(parts, key=lambda p: (-round(p.polygon.area, 3), p.polygon.centroid.x, p.polygon.centroid.y))


def _percentile(values: np.ndarray, config: Lod1Config) -> float:
    values = values[np.isfinite(values)]
    return percentile(values, config.roof_percentile)


def segment_heights(field: Heightfield, config: Lod1Config) -> tuple[np.ndarray, np.ndarray]:
    """Region labels per cell (-1 outside) and each region's height."""
    covered = field.covered
    data = np.isfinite(field.heights)
    if not data.any():
        return np.full(covered.shape, -1), np.empty(0)
    nearest = ndimage.distance_transform_edt(~data, return_distances=False, return_indices=True)
    filled = field.heights[tuple(nearest)]
    stable = covered & data & (field.spread <= config.edge_jump_m)
    if not stable.any():
        stable = covered & data

    index = np.full(covered.shape, -1, dtype=np.int64)
    index[stable] = np.arange(stable.sum())
    rows, cols = [], []
    for a, b in (((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
                 ((slice(None), slice(None, -1)), (slice(None), slice(1, None)))):
        joined = stable[a] & stable[b] & (np.abs(filled[a] - filled[b]) < config.edge_jump_m)
        rows.append(index[a][joined])
        cols.append(index[b][joined])
    n = int(stable.sum())
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    component = component_labels(n, rows_all, cols_all)
    grown = np.full(covered.shape, -1, dtype=np.int64)
    grown[stable] = component
    nearest_stable = ndimage.distance_transform_edt(~stable, return_distances=False, return_indices=True)
    labels = np.where(covered, grown[tuple(nearest_stable)], -1)
    labels = _merge_regions(labels, field.heights, filled, field.cell, config)
    unique = np.unique(labels[labels >= 0])
    relabel = np.full(labels.max() + 1, -1)
    relabel[unique] = np.arange(len(unique))
    labels = np.where(labels >= 0, relabel[np.maximum(labels, 0)], -1)
    heights = np.array([_region_height(labels == k, field.heights, filled, config) for k in range(len(unique))])
    return labels, heights


def _region_height(mask: np.ndarray, heights: np.ndarray, filled: np.ndarray, config: Lod1Config) -> float:
    values = heights[mask & np.isfinite(heights)]
    return percentile(values if len(values) else filled[mask], config.roof_percentile)


def _merge_regions(
    labels: np.ndarray, heights: np.ndarray, filled: np.ndarray, cell: float, config: Lod1Config
) -> np.ndarray:
    """Merges small or narrow regions, then neighbours closer in height than a step, closest
    first. After each merge only the merged region's height, size and shape are measured
    again, and the neighbour pairs renamed: the others have not changed."""
    erosion = max(1, int(round(MIN_PART_WIDTH_M / 2 / cell)))

    def narrow(mask: np.ndarray) -> bool:
        return not _survives_erosion(mask, erosion)

    regions = np.unique(labels[labels >= 0]).tolist()
    height = {k: _region_height(labels == k, heights, filled, config) for k in regions}
    cells = {k: int((labels == k).sum()) for k in regions}
    thin = {k: narrow(labels == k) for k in regions}
    pairs = set(_adjacent_pairs(labels))
    while len(height) > 1 and pairs:
        area = {k: float(count) * cell**2 for k, count in cells.items()}
        small = [k for k in height if area[k] < config.min_part_area_m2 or thin[k]]
        if small:
            k = min(small, key=lambda r: (area[r], r))
            neighbours = [b if a == k else a for a, b in pairs if k in (a, b)]
            if not neighbours:
                return labels
            target = min(neighbours, key=lambda r: (abs(height[r] - height[k]), r))
        else:
            a, b = min(pairs, key=lambda p: (abs(height[p[0]] - height[p[1]]), p))
            if abs(height[a] - height[b]) >= config.step_height_m:
                return labels
            k, target = (a, b) if area[a] < area[b] else (b, a)
        labels = np.where(labels == k, target, labels)
        merged = labels == target
        height[target] = _region_height(merged, heights, filled, config)
        cells[target] += cells.pop(k)
        thin[target] = narrow(merged)
        del height[k], thin[k]
        renamed = ((target if a == k else a, target if b == k else b) for a, b in pairs)
        pairs = {(min(a, b), max(a, b)) for a, b in renamed if a != b}
    return labels


@numba.njit(cache=True)
def _survives_erosion(mask, iterations):
    """Whether `iterations` erosions of `mask` by the 4-neighbour cross, cells beyond the
    grid counting as empty, leave a cell (`ndimage.binary_erosion(mask,
    iterations=iterations).any()`): whether some cell lies farther than `iterations` steps
    from every empty cell, the cross's erosions adding up to a diamond. Those steps are
    counted in two sweeps over the grid: scipy's erosions took a fifth of a millisecond a
    roof, a call per region and per merge."""
    rows, columns = mask.shape
    steps = np.zeros((rows, columns), np.int64)
    for i in range(rows):
        for j in range(columns):
            if mask[i, j]:
                steps[i, j] = 1 + min(steps[i - 1, j] if i > 0 else 0, steps[i, j - 1] if j > 0 else 0)
    for i in range(rows - 1, -1, -1):
        for j in range(columns - 1, -1, -1):
            if mask[i, j]:
                below = steps[i + 1, j] if i < rows - 1 else 0
                right = steps[i, j + 1] if j < columns - 1 else 0
                steps[i, j] = min(steps[i, j], 1 + min(below, right))
            if steps[i, j] > iterations:
                return True
    return False


def _adjacent_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:-1, :], labels[1:, :]), (labels[:, :-1], labels[:, 1:])):
        differ = (a != b) & (a >= 0) & (b >= 0)
        for x, y in zip(a[differ].tolist(), b[differ].tolist()):
            pairs.add((min(x, y), max(x, y)))
    return sorted(pairs)


def _absorb_small_pieces(
    pieces: list[tuple[shapely.Polygon, int]], heights: np.ndarray
) -> list[tuple[shapely.Polygon, int]]:
    """Slivers left by clipping join the neighbour they share the longest edge with."""
    pieces = list(pieces)
    while True:
        small = [i for i, (p, _) in enumerate(pieces) if p.area < MIN_PIECE_AREA_M2]
        if not small or len(pieces) == 1:
            return pieces
        i = min(small, key=lambda k: pieces[k][0].area)
        polygon, _ = pieces[i]
        shared = [
            (polygon.boundary.intersection(other.boundary).length, j)
            for j, (other, _) in enumerate(pieces)
            if j != i
        ]
        length, j = max(shared)
        if length <= 0:
            pieces.pop(i)
            continue
        merged = shapely.union(pieces[j][0], polygon)
        merged_polygons = _polygons(merged)
        pieces[j] = (max(merged_polygons, key=lambda p: p.area), pieces[j][1])
        pieces.pop(i)


def _polygons(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    if geometry.geom_type == "Polygon":
        return [geometry] if not geometry.is_empty else []
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in _polygons(g)]
    return []
