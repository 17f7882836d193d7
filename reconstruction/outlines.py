"""Building outlines from the building points alone, for areas without footprints.

1. The building points are rasterised; small gaps are closed and small holes filled
   (a courtyard larger than `max_hole_m2` stays a hole); specks are dropped.
2. Each connected component is one candidate building. Its main direction comes from
   its roughly simplified outline; its points are rasterised again on a grid turned to
   that direction, so that its walls follow cell edges and the outline comes out straight.
3. Adjoining buildings are split where the roof steps by `split_step_m` or more between
   two parts that both reach the outline and are large enough (a tower standing inside
   its podium is not split off).
4. Each outline gets an id from its location: `b_<x>_<y>` of a point inside it, to 0.1 m.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage

from reconstruction.heightfield import rasterize
from reconstruction.lod1 import segment_heights
from reconstruction.orientation import dominant_angle, rotation
from twin.config import Lod1Config, OutlineConfig


def building_outlines(points: np.ndarray, config: OutlineConfig) -> list[tuple[str, shapely.Polygon]]:
    """(id, outline) of the buildings in `points` (n, 3), sorted by id."""
    outlines = []
    for component in _components(points[:, :2], config):
        members = points[component]
        outline = _regularised_outline(members, config)
        if outline is None:
            continue
        for part in _split_at_steps(members, outline, config):
            if part.area >= config.min_area_m2:
                anchor = part.representative_point()
                outlines.append((f"b_{anchor.x:.1f}_{anchor.y:.1f}", part))
    return sorted(outlines, key=lambda item: item[0])


def _occupancy(xy: np.ndarray, origin: np.ndarray, cell: float, shape: tuple[int, int]) -> np.ndarray:
    i = ((xy[:, 0] - origin[0]) // cell).astype(np.int64)
    j = ((xy[:, 1] - origin[1]) // cell).astype(np.int64)
    grid = np.zeros(shape, dtype=bool)
    grid[i, j] = True
    return grid


def _clean(grid: np.ndarray, config: OutlineConfig) -> np.ndarray:
    padded = np.pad(grid, config.closing_cells + 1)
    closed = ndimage.binary_closing(padded, iterations=config.closing_cells)
    closed = closed[config.closing_cells + 1 : -config.closing_cells - 1, config.closing_cells + 1 : -config.closing_cells - 1]
    holes, count = ndimage.label(ndimage.binary_fill_holes(closed) & ~closed)
    if count:
        sizes = ndimage.sum(np.ones_like(holes), holes, index=np.arange(1, count + 1)) * config.cell_size_m**2
        small = np.isin(holes, np.flatnonzero(sizes < config.max_hole_m2) + 1)
        closed |= small
    return closed


def _components(xy: np.ndarray, config: OutlineConfig) -> list[np.ndarray]:
    """Indices of the points of each connected group of building cells."""
    if len(xy) == 0:
        return []
    cell = config.cell_size_m
    origin = np.floor(xy.min(axis=0) / cell) * cell - cell
    shape = tuple((np.ceil((xy.max(axis=0) - origin) / cell) + 2).astype(int))
    grid = _clean(_occupancy(xy, origin, cell, shape), config)
    labels, count = ndimage.label(grid)
    point_labels = labels[((xy[:, 0] - origin[0]) // cell).astype(int), ((xy[:, 1] - origin[1]) // cell).astype(int)]
    order = np.argsort(point_labels, kind="stable")
    bounds = np.searchsorted(point_labels[order], np.arange(1, count + 2))
    return [order[bounds[k] : bounds[k + 1]] for k in range(count) if bounds[k + 1] > bounds[k]]


def _cells_polygon(grid: np.ndarray, origin: np.ndarray, cell: float) -> shapely.Geometry:
    i, j = np.nonzero(grid)
    boxes = shapely.box(origin[0] + i * cell, origin[1] + j * cell, origin[0] + (i + 1) * cell, origin[1] + (j + 1) * cell)
    return shapely.coverage_union_all(boxes)


def _regularised_outline(points: np.ndarray, config: OutlineConfig) -> shapely.Polygon | None:
    cell = config.cell_size_m
    xy = points[:, :2]
    origin = np.floor(xy.min(axis=0) / cell) * cell - cell
    shape = tuple((np.ceil((xy.max(axis=0) - origin) / cell) + 2).astype(int))
    rough = _largest(_cells_polygon(_clean(_occupancy(xy, origin, cell, shape), config), origin, cell))
    if rough is None or rough.area < config.min_area_m2:
        return None
    angle = dominant_angle(rough.simplify(2 * cell))
    turn = rotation(angle)
    uv = xy @ turn.T
    uv_origin = np.floor(uv.min(axis=0) / cell) * cell - cell
    uv_shape = tuple((np.ceil((uv.max(axis=0) - uv_origin) / cell) + 2).astype(int))
    grid = _clean(_occupancy(uv, uv_origin, cell, uv_shape), config)
    local = _largest(_cells_polygon(grid, uv_origin, cell))
    if local is None:
        return None
    outline = shapely.transform(local, lambda p: p @ turn).simplify(cell)
    outline = shapely.make_valid(outline)
    return _largest(outline)


def _largest(geometry: shapely.Geometry) -> shapely.Polygon | None:
    polygons = [p for p in shapely.get_parts(geometry) if p.geom_type == "Polygon" and not p.is_empty]
    return max(polygons, key=lambda p: p.area) if polygons else None


def _split_at_steps(points: np.ndarray, outline: shapely.Polygon, config: OutlineConfig) -> list[shapely.Polygon]:
    field = rasterize(points, outline, config.cell_size_m, dominant_angle(outline))
    step = Lod1Config(step_height_m=config.split_step_m, edge_jump_m=min(1.5, config.split_step_m),
                      min_part_area_m2=config.min_split_area_m2)
    labels, _ = segment_heights(field, step)
    regions = [label for label in np.unique(labels[labels >= 0])]
    if len(regions) <= 1:
        return [outline]
    parts = []
    for label in regions:
        region = shapely.coverage_union_all(field.cell_boxes(labels == label)).intersection(outline)
        parts += [p for p in shapely.get_parts(region) if p.geom_type == "Polygon"]
    boundary = outline.exterior
    reaching = [p for p in parts if p.area >= config.min_split_area_m2 and p.boundary.intersection(boundary).length > 2.0]
    if len(reaching) <= 1:
        return [outline]
    # Parts that do not reach the outline (a tower inside its podium) join their largest neighbour.
    others = [p for p in parts if not any(p is r for r in reaching)]
    for part in sorted(others, key=lambda p: -p.area):
        k = max(range(len(reaching)), key=lambda r: reaching[r].boundary.intersection(part.boundary).length)
        reaching[k] = shapely.union(reaching[k], part)
    simplified = shapely.coverage_simplify(reaching, tolerance=config.cell_size_m, simplify_boundary=False)
    return [_largest(shapely.make_valid(p)) for p in simplified if _largest(shapely.make_valid(p)) is not None]
