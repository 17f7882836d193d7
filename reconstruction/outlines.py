"""Building outlines from the building points alone, for areas without footprints.

1. The building points are rasterised; small gaps are closed and small holes filled
   (a courtyard larger than `max_hole_m2` stays a hole); specks are dropped.
2. Each connected component is one candidate building. Its main direction comes from
   its roughly simplified outline; its points are rasterised again on a grid turned to
   that direction, so that its walls follow cell edges and the outline comes out straight.
   Each edge then moves in to where the points along it end.
3. Adjoining buildings are split where the roof steps by `split_step_m` or more between
   two parts that both reach the outline and are large enough (a tower standing inside
   its podium is not split off). Each split line is then redrawn from the points, in
   straight pieces along the higher building's wall.
4. Each outline gets an id from its location: `b_<x>_<y>` of a point inside it, to 0.1 m.
"""

from __future__ import annotations

import numpy as np
import shapely
from scipy import ndimage
from shapely.ops import split

from reconstruction.heightfield import Heightfield, rasterize
from reconstruction.lod1 import segment_heights
from reconstruction.orientation import angle_difference, dominant_angle, rotation
from twin.config import Lod1Config, OutlineConfig

SPLIT_BAND_M = 2.0
"""A split line is placed by the points this close to it."""
SPLIT_PIECE_M = 1.0
"""A split line is straightened into pieces that follow its course on the grid within this."""
SPLIT_SNAP_DEG = 15.0
"""Pieces within this angle of the outline's main directions are turned onto them..."""
FREE_PIECE_M = 2.0
"""... and others are kept only when this long."""
OUTLINE_CLEARANCE_M = 0.1
"""A split line's ends go this far past the outline, so that it cuts cleanly."""
MAX_SPLIT_SHIFT_M = 1.5
"""A piece moves at most this far across from the grid's line."""
MIN_SIDE_POINTS = 10
"""A piece stays on the grid's line without this many points of each building beside it."""
WALL_ABOVE_ROOF_M = 1.0
"""Points this far above the lower roof at a split are the higher building's (its roof or wall)."""
EDGE_BAND_M = 1.0
"""An outline edge is placed by the points this far inside it..."""
EDGE_QUANTILE = 0.95
"""... at this quantile of their distances across it..."""
MIN_EDGE_POINTS = 10
"""... when there are this many; otherwise it stays."""
WALL_SPREAD_M = 0.15
"""A split line goes this far past the higher building's outermost points, into the lower
one: its wall's points, scattered about the wall, stay with it, and the lower roof's points
it takes lie against that wall."""


def building_outlines(points: np.ndarray, config: OutlineConfig) -> list[tuple[str, shapely.Polygon]]:
    """(id, outline) of the buildings in `points` (n, 3), sorted by id."""
    outlines = []
    for component in _components(points[:, :2], config):
        members = points[component]
        outline = _regularised_outline(members, config)
        if outline is None:
            continue
        parts = _split_at_steps(members, outline, config)
        fitted = _fitted_to_points(outline, members[:, :2], config.cell_size_m)
        for part in _clipped(parts, fitted):
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


def _fitted_to_points(outline: shapely.Polygon, xy: np.ndarray, cell: float) -> shapely.Polygon:
    """The outline with each edge moved in to where its points end.

    Cells holding any point make the outline, so each edge lies up to a cell outside the
    building's outermost points, half a cell on average: a tenth too much area for a
    house. Each edge long enough to have points along it moves in to a high quantile of
    their distances across it (robust to a stray point), by at most a cell; corners are
    where neighbouring edges meet again. An outline the moves would make invalid, or
    shrink by more than 30 %, stays as it was.
    """
    outline = shapely.orient_polygons(outline)
    rings = []
    for ring in [outline.exterior, *outline.interiors]:
        coords = np.asarray(ring.coords)[:-1]
        if len(coords) < 3:
            return outline
        starts, ends = coords, np.roll(coords, -1, axis=0)
        lines = []
        for start, end in zip(starts, ends):
            along = end - start
            length = float(np.hypot(*along))
            direction = along / length
            # Exteriors run counter-clockwise and holes clockwise: the outside of the
            # polygon is on the right of every edge.
            outward = np.array([direction[1], -direction[0]])
            t = (xy - start) @ direction
            s = (xy - start) @ outward
            beside = (t >= 0) & (t <= length) & (s > -EDGE_BAND_M) & (s <= 0)
            shift = 0.0
            if beside.sum() >= MIN_EDGE_POINTS:
                shift = float(np.clip(np.quantile(s[beside], EDGE_QUANTILE), -cell, 0.0))
            lines.append((direction, start + outward * shift))
        vertices = []
        for k, corner in enumerate(coords):
            (d1, p1), (d2, p2) = lines[k - 1], lines[k]
            vertices += _joined(d1, p1, d2, p2, corner, 2 * cell)
        rings.append(vertices)
    fitted = shapely.Polygon(rings[0], rings[1:])
    if not fitted.is_valid or fitted.area < 0.7 * outline.area:
        return outline
    return fitted


def _clipped(parts: list[shapely.Polygon], fitted: shapely.Polygon) -> list[shapely.Polygon]:
    """The parts of an outline within its fitted outline, noded together so that
    neighbours still share their edges exactly. A part the fitting cuts at a narrow neck
    gives one outline per piece."""
    if len(parts) == 1:
        return [fitted]
    noded = shapely.union_all([fitted.boundary, *(part.boundary for part in parts)])
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    probes = shapely.point_on_surface(faces)
    inside = shapely.contains(fitted, probes)
    clipped = []
    for part in parts:
        mine = faces[inside & shapely.contains(part, probes)]
        if len(mine):
            pieces = shapely.get_parts(shapely.coverage_union_all(mine))
            clipped += [piece for piece in pieces if piece.geom_type == "Polygon"]
    return clipped


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
        region = field.cell_region(labels == label).intersection(outline)
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
    parts = [_largest(shapely.make_valid(p)) for p in simplified if _largest(shapely.make_valid(p)) is not None]
    return _straightened_splits(parts, points, field, step.edge_jump_m)


def _straightened_splits(
    parts: list[shapely.Polygon], points: np.ndarray, field: Heightfield, edge_jump: float
) -> list[shapely.Polygon]:
    """The parts with each split line between two of them redrawn from the points.

    On the grid, a split line follows cell edges: a cell off the wall, and in steps where
    the wall runs across the grid, which leaves strips of the higher roof's points in
    the lower building, metres from its model. Each split line is redrawn as straight
    pieces along its course, each placed between the points of the higher building (its
    roof, and its wall above the lower roof) and those of the lower one. A redrawn line
    that does not cut the two parts cleanly in two leaves them as they were.
    """
    if len(parts) < 2:
        return parts
    nu, nv = field.heights.shape
    centres = field.cell_centres(np.argwhere(np.ones((nu, nv), dtype=bool)))
    side_heights = [_nearest_part_heights(part, centres, field, edge_jump) for part in parts]
    cell_i, cell_j = field.cell_indices(points[:, :2])
    located = shapely.points(points[:, :2])
    parts = list(parts)
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            shared = shapely.line_merge(parts[a].boundary.intersection(parts[b].boundary))
            if shared.geom_type != "LineString" or shared.length < SPLIT_PIECE_M:
                continue
            near = shapely.dwithin(shared, located, SPLIT_BAND_M)
            height_a = side_heights[a][cell_i[near], cell_j[near]]
            height_b = side_heights[b][cell_i[near], cell_j[near]]
            rise = points[near, 2] - np.minimum(height_a, height_b)
            pair = shapely.union(parts[a], parts[b])
            course = _fitted_course(shared, points[near, :2], rise, field.angle)
            pieces = list(shapely.get_parts(split(pair, course)))
            if len(pieces) == 1:
                pieces = list(shapely.get_parts(split(pair, _reaching(course, pair))))
            if len(pieces) != 2 or any(p.geom_type != "Polygon" for p in pieces):
                continue
            first, second = sorted(pieces, key=lambda p: -p.intersection(parts[a]).area)
            candidate = parts[:a] + [first] + parts[a + 1 : b] + [second] + parts[b + 1 :]
            if first.intersection(parts[a]).area > 0.5 * parts[a].area and shapely.coverage_is_valid(candidate):
                parts = candidate
    return parts


def _nearest_part_heights(
    part: shapely.Polygon, centres: np.ndarray, field: Heightfield, edge_jump: float
) -> np.ndarray:
    """Per cell, the roof height of the part's nearest cell well inside it (off its edges
    and steps); `centres` are the map coordinates of all the field's cells, row by row."""
    nu, nv = field.heights.shape
    inside = shapely.contains_xy(part, centres[:, 0], centres[:, 1]).reshape(nu, nv)
    steady = inside & np.isfinite(field.heights) & (np.nan_to_num(field.spread, nan=np.inf) <= edge_jump)
    interior = ndimage.binary_erosion(steady)
    if not interior.any():
        interior = steady if steady.any() else inside & np.isfinite(field.heights)
    if not interior.any():
        return np.full((nu, nv), np.nan)
    nearest = ndimage.distance_transform_edt(~interior, return_distances=False, return_indices=True)
    return field.heights[tuple(nearest)]


def _fitted_course(
    shared: shapely.LineString, xy: np.ndarray, rise: np.ndarray, main_angle: float
) -> shapely.LineString:
    """The split line `shared` as straight pieces, each moved across to separate the
    points of the higher building from the lower one's (`rise`: heights above the lower
    roof), and extended past its ends to cut."""
    coords = np.asarray(shared.simplify(SPLIT_PIECE_M).coords)
    directions = (main_angle % np.pi, (main_angle + np.pi / 2) % np.pi)
    pieces = []
    for start, end in zip(coords[:-1], coords[1:]):
        angle = float(np.mod(np.arctan2(*(end - start)[::-1]), np.pi))
        nearest = min(directions, key=lambda d: angle_difference(angle, d))
        aligned = angle_difference(angle, nearest) <= np.radians(SPLIT_SNAP_DEG)
        pieces.append((start, end, nearest if aligned else angle, aligned or np.hypot(*(end - start)) >= FREE_PIECE_M))
    # A short piece across the main directions is the grid cutting a corner: the pieces
    # either side, extended, make the corner.
    pieces = [piece[:3] for piece in pieces if piece[3]] or [piece[:3] for piece in pieces]
    lines = []
    for start, end, angle in pieces:
        along = end - start
        direction = np.array([np.cos(angle), np.sin(angle)])
        if direction @ along < 0:
            direction = -direction
        normal = np.array([-direction[1], direction[0]])
        middle = (start + end) / 2
        t = (xy - middle) @ direction
        s = (xy - middle) @ normal
        beside = (np.abs(t) <= np.hypot(*along) / 2) & (np.abs(s) < SPLIT_BAND_M)
        offset = _separating_offset(s[beside], rise[beside])
        lines.append((direction, normal, middle + normal * offset))
    first_start, last_end = pieces[0][0], pieces[-1][1]
    reach_back = SPLIT_BAND_M + np.hypot(*(first_start - coords[0]))
    reach_on = SPLIT_BAND_M + np.hypot(*(last_end - coords[-1]))
    vertices = [lines[0][2] + lines[0][0] * ((first_start - lines[0][2]) @ lines[0][0] - reach_back)]
    for (d1, _, p1), (d2, _, p2), before, after in zip(lines[:-1], lines[1:], pieces[:-1], pieces[1:]):
        corner = (before[1] + after[0]) / 2
        vertices += _joined(d1, p1, d2, p2, corner, SPLIT_BAND_M + np.hypot(*(after[0] - before[1])))
    d, _, p = lines[-1]
    vertices.append(p + d * ((last_end - p) @ d + reach_on))
    return shapely.LineString(vertices)


def _reaching(course: shapely.LineString, outline: shapely.Polygon) -> shapely.LineString:
    """The course with each end that stops inside the outline carried on, straight, to
    just past where it leaves it: a piece moved across near an end can meet a slanting
    outline farther on than the split line did, and then cuts nothing."""
    coords = np.asarray(course.coords)
    reach = float(np.hypot(*np.subtract(outline.bounds[2:], outline.bounds[:2])))
    for end, before in ((0, 1), (-1, -2)):
        if not outline.contains(shapely.Point(coords[end])):
            continue
        direction = coords[end] - coords[before]
        direction /= np.hypot(*direction)
        ray = shapely.LineString([coords[end], coords[end] + direction * reach])
        exits = shapely.get_coordinates(ray.intersection(outline.boundary))
        if len(exits):
            nearest = exits[np.argmin(np.hypot(*(exits - coords[end]).T))]
            coords[end] = nearest + direction * OUTLINE_CLEARANCE_M
    return shapely.LineString(coords)


def _separating_offset(s: np.ndarray, rise: np.ndarray) -> float:
    """The shift across a piece that puts the points `rise` metres above the lower roof
    on the side their distances to the two models say, then `WALL_SPREAD_M` further into
    the lower building; 0 (the grid's line) without enough points of both buildings.

    The higher building's points (its roof, and its wall above the lower roof) left in
    the lower one are as far from its model as they stand above its roof; the lower
    roof's points taken by the higher one lie against its wall, as far from it as from
    the line. The cut minimises the sum of these squared distances: where the higher
    roof overhangs the lower one, the line follows the overhang's edge."""
    higher = rise > WALL_ABOVE_ROOF_M
    if higher.sum() < MIN_SIDE_POINTS or (~higher).sum() < MIN_SIDE_POINTS:
        return 0.0
    toward_higher = 1.0 if s[higher].mean() > s[~higher].mean() else -1.0
    order = np.argsort(s * toward_higher, kind="stable")
    s, rise, higher = s[order] * toward_higher, rise[order], higher[order]
    cuts = np.concatenate([[s[0] - SPLIT_BAND_M], (s[:-1] + s[1:]) / 2, [s[-1] + SPLIT_BAND_M]])
    # A cut before sorted point k leaves the higher points before k in the lower building
    # and gives the lower points from k on to the higher one.
    left_behind = np.concatenate([[0.0], np.cumsum(np.where(higher, rise**2, 0.0))])
    lower_s = np.where(higher, 0.0, s)
    count_after = np.concatenate([np.cumsum((~higher)[::-1])[::-1], [0]])
    sum_after = np.concatenate([np.cumsum(lower_s[::-1])[::-1], [0.0]])
    square_after = np.concatenate([np.cumsum((lower_s**2)[::-1])[::-1], [0.0]])
    taken = square_after - 2 * cuts * sum_after + cuts**2 * count_after
    cost = left_behind + taken
    best = np.flatnonzero(cost <= cost.min() + 1e-9)
    offset = float(cuts[best[np.argmin(np.abs(cuts[best]))]]) - WALL_SPREAD_M
    return float(np.clip(offset * toward_higher, -MAX_SPLIT_SHIFT_M, MAX_SPLIT_SHIFT_M))


def _joined(
    d1: np.ndarray, p1: np.ndarray, d2: np.ndarray, p2: np.ndarray, corner: np.ndarray, within: float
) -> list[np.ndarray]:
    """The vertices joining the line through p1 along d1 to the line through p2 along d2
    at `corner`: where they cross, when that is within `within` of it; otherwise (lines
    parallel, or nearly) a jog across at the corner."""
    crossing = _crossing(d1, p1, d2, p2)
    if crossing is not None and np.hypot(*(crossing - corner)) <= within:
        return [crossing]
    return [p1 + d1 * ((corner - p1) @ d1), p2 + d2 * ((corner - p2) @ d2)]


def _crossing(d1: np.ndarray, p1: np.ndarray, d2: np.ndarray, p2: np.ndarray) -> np.ndarray | None:
    """Where the lines through p1 along d1 and p2 along d2 cross; None when nearly parallel."""
    determinant = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(determinant) < np.sin(np.radians(5.0)):
        return None
    t = ((p2 - p1)[0] * d2[1] - (p2 - p1)[1] * d2[0]) / determinant
    return p1 + d1 * t
