"""Roof lines: where roof faces may meet, as infinite lines in the footprint's frame.

Two kinds of lines, as in 3DBAG's method:
- the outlines of each plane's points (on the footprint-aligned grid: the cells whose
  points mostly belong to the plane), simplified into straight pieces: they carry step
  edges (a tower's walls on a podium) and the limits of planes;
- the exact intersection lines of neighbouring planes that meet without a step (ridges,
  valleys, hips).
Lines within `line_angle_deg` of the footprint's main directions are turned onto them,
and parallel lines closer than `line_offset_m` merge (an intersection line wins over
outline pieces, being exact).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numba
import numpy as np
import shapely

from reconstruction.geometry import unique_rows
from reconstruction.heightfield import Heightfield
from reconstruction.orientation import angle_difference
from reconstruction.planes import RoofPlane
from twin.config import Lod2Config

MEETING_DISTANCE_M = 0.75
"""Two planes meet (a ridge, valley or hip, not a step) when their intersection line runs
within this distance of the edge between their cells."""
FREE_LINE_LENGTH_M = 2.0
"""Outline pieces in none of the footprint's directions are roof lines only when this long."""


@dataclass(frozen=True)
class RoofLine:
    """The line {p : n . (p - origin) = offset}, n = (-sin angle, cos angle)."""

    angle: float
    """Direction in radians, within [0, pi)."""
    offset: float
    weight: float
    """Length of the evidence behind the line, in metres."""
    exact: bool
    """True for the intersection of two planes."""

    def segment(self, origin: np.ndarray, half_length: float) -> shapely.LineString:
        direction = np.array([np.cos(self.angle), np.sin(self.angle)])
        normal = np.array([-direction[1], direction[0]])
        centre = origin + normal * self.offset
        return shapely.LineString([centre - direction * half_length, centre + direction * half_length])


def plane_label_grid(field: Heightfield, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cell, the plane most of its points belong to (-1 where none)."""
    labelled = labels >= 0
    if not labelled.any():
        return np.full(field.heights.shape, -1)
    i, j = field.cell_indices(points[labelled, :2])
    return _majority_labels(i, j, labels[labelled].astype(np.int64), int(labels.max()) + 1, field.covered)


@numba.njit(cache=True)
def _majority_labels(i, j, labels, label_count, covered):
    """`plane_label_grid` from the labelled points' cells, compiled: numpy's vote count and
    its passes over every cell took a quarter of a millisecond a roof. Ties go to the
    lowest label."""
    nu, nv = covered.shape
    votes = np.zeros((nu, nv, label_count), np.int64)
    for k in range(len(labels)):
        votes[i[k], j[k], labels[k]] += 1
    grid = np.full((nu, nv), -1, np.int64)
    for a in range(nu):
        for b in range(nv):
            if not covered[a, b]:
                continue
            best = 0
            for label in range(1, label_count):
                if votes[a, b, label] > votes[a, b, best]:
                    best = label
            if votes[a, b, best] > 0:
                grid[a, b] = best
    return grid


def roof_lines(
    field: Heightfield,
    label_grid: np.ndarray,
    planes: tuple[RoofPlane, ...],
    footprint: shapely.Polygon,
    origin: np.ndarray,
    config: Lod2Config,
) -> list[RoofLine]:
    directions = _footprint_directions(footprint, field.angle, config)
    lines = _outline_lines(field, label_grid, len(planes), footprint, origin, directions, config)
    lines += _intersection_lines(field, label_grid, planes, origin, config)
    merged = _merge(lines, config)
    # Every line crosses the whole footprint, so faces grow with the square of the line
    # count: past `max_lines`, the lines with the least evidence go (exact ones stay).
    exact = [line for line in merged if line.exact]
    others = sorted((line for line in merged if not line.exact), key=lambda l: (-l.weight, l.angle, l.offset))
    return exact + others[: max(0, config.max_lines - len(exact))]


def _footprint_directions(footprint: shapely.Polygon, main_angle: float, config: Lod2Config) -> list[float]:
    """The main directions, and those of the footprint's edges longer than a roof line."""
    directions = [main_angle % np.pi, (main_angle + np.pi / 2) % np.pi]
    for ring in [footprint.exterior, *footprint.interiors]:
        coords = np.asarray(ring.coords)
        for a, b in zip(coords[:-1], coords[1:]):
            if np.hypot(*(b - a)) >= config.min_line_length_m:
                angle = float(np.mod(np.arctan2(b[1] - a[1], b[0] - a[0]), np.pi))
                if all(angle_difference(angle, d) > np.radians(config.line_angle_deg) for d in directions):
                    directions.append(angle)
    return directions


def _outline_lines(field, label_grid, n_planes, footprint, origin, directions, config: Lod2Config) -> list[RoofLine]:
    pieces = []
    for label in range(n_planes):
        mask = label_grid == label
        if not mask.any():
            continue
        region = field.cell_region(mask).simplify(0.75 * field.cell)
        for polygon in shapely.get_parts(region):
            for ring in [polygon.exterior, *polygon.interiors]:
                coords = np.asarray(ring.coords)
                for a, b in zip(coords[:-1], coords[1:]):
                    length = float(np.hypot(*(b - a)))
                    if length >= config.min_line_length_m:
                        pieces.append((a, b, length))
    if not pieces:
        return []
    ends = np.array([(a, b) for a, b, _ in pieces])
    along = _along_outline(shapely.linestrings(ends), footprint.boundary, field.cell)
    lines = []
    for (a, b, length), on_outline in zip(pieces, along.tolist()):
        if on_outline:
            continue
        angle = float(np.mod(np.arctan2(b[1] - a[1], b[0] - a[0]), np.pi))
        nearest = min(directions, key=lambda d: angle_difference(angle, d))
        if angle_difference(angle, nearest) <= np.radians(config.line_angle_deg):
            angle = nearest
        elif length < FREE_LINE_LENGTH_M:
            continue  # a stair step of the grid, not an edge of the roof
        lines.append(_line(angle, (a + b) / 2 - origin, length, False, field.angle, config))
    return lines


def _along_outline(pieces: np.ndarray, outline: shapely.Geometry, tolerance: float) -> np.ndarray:
    """Whether each piece of a plane's outline runs along the footprint's own outline (no
    roof line): its ends, quarters and middle all within `tolerance` of it."""
    near = np.ones(len(pieces), dtype=bool)
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        near &= shapely.distance(outline, shapely.line_interpolate_point(pieces, t, normalized=True)) <= tolerance
    return near


def _intersection_lines(field, label_grid, planes, origin, config: Lod2Config) -> list[RoofLine]:
    lines = []
    for a, b, cells in _adjacent_cells(label_grid):
        plane_a, plane_b = planes[a].plane, planes[b].plane
        if planes[a].is_horizontal and planes[b].is_horizontal:
            continue
        xy = field.cell_centres(cells)
        # plane_a = plane_b  <=>  g . (p - origin) = h, with g the difference of the slopes
        gx = plane_a.slope_x - plane_b.slope_x
        gy = plane_a.slope_y - plane_b.slope_y
        norm = np.hypot(gx, gy)
        if norm < 1e-6:
            continue
        h = plane_b.height_at(*origin) - plane_a.height_at(*origin)
        distance = np.abs((xy - origin) @ np.array([gx, gy]) - h) / norm
        if np.median(distance) > MEETING_DISTANCE_M:
            continue  # the planes meet far from where their points do: a step, not a ridge
        # The point of the line nearest to where the planes' cells meet anchors it.
        middle = xy.mean(axis=0) - origin
        g = np.array([gx, gy])
        anchor = middle + g * (h - g @ middle) / norm**2
        lines.append(_line(np.arctan2(gx, -gy), anchor, len(cells) * field.cell, True, field.angle, config))
    return lines


def _adjacent_cells(label_grid: np.ndarray):
    """Pairs of labels that touch on the grid (in order), with the cells along their shared
    edge (sorted, each once), from all the grid's touching cells at once."""
    nu, nv = label_grid.shape
    rows = []  # (lower label, higher label, i, j) of both cells of every touching pair
    for di, dj in ((1, 0), (0, 1)):
        a = label_grid[: nu - di, : nv - dj]
        b = label_grid[di:, dj:]
        i, j = np.nonzero((a != b) & (a >= 0) & (b >= 0))
        low, high = np.minimum(a[i, j], b[i, j]), np.maximum(a[i, j], b[i, j])
        rows += [np.column_stack([low, high, i, j]), np.column_stack([low, high, i + di, j + dj])]
    cells = unique_rows(np.concatenate(rows).astype(np.int64))[0]
    if len(cells) == 0:
        return
    bounds = np.append(np.flatnonzero(np.r_[True, np.any(cells[1:, :2] != cells[:-1, :2], axis=1)]), len(cells))
    for start, end in zip(bounds[:-1], bounds[1:]):
        yield int(cells[start, 0]), int(cells[start, 1]), cells[start:end, 2:]


def _line(angle: float, anchor: np.ndarray, weight: float, exact: bool, main_angle: float, config: Lod2Config) -> RoofLine:
    """The line through `anchor` (relative to the origin) in direction `angle`, turned onto
    the footprint's main directions when close to one (an exact intersection line only
    when within 3 degrees: it is measured, not guessed)."""
    angle = float(np.mod(angle, np.pi))
    limit = np.radians(3.0 if exact else config.line_angle_deg)
    for direction in (main_angle % np.pi, (main_angle + np.pi / 2) % np.pi):
        if angle_difference(angle, direction) < limit:
            angle = float(direction)
    offset = float(-np.sin(angle) * anchor[0] + np.cos(angle) * anchor[1])
    return RoofLine(angle, offset, weight, exact)


def _merge(lines: list[RoofLine], config: Lod2Config) -> list[RoofLine]:
    """Parallel lines closer than `line_offset_m` become one (an exact line wins): each line,
    strongest first, joins the first line kept before it that it is close to.

    The kept lines are searched by direction (a kept line keeps its angle), and within one
    by offset, not one by one: a campus roof's thousands of outline pieces against hundreds
    of kept lines took most of its roof lines' time."""
    same_direction = np.radians(2.0)
    tolerance = config.line_offset_m
    remaining = sorted(lines, key=lambda l: (not l.exact, -l.weight, l.angle, l.offset))
    merged: list[RoofLine] = []
    by_angle: dict[float, list[tuple[float, int]]] = {}  # per kept angle, (offset, index) sorted
    for line in remaining:
        match = None
        for angle, kept_lines in by_angle.items():
            if angle_difference(line.angle, angle) > same_direction:
                continue
            offset = line.offset if abs(line.angle - angle) < np.pi / 2 else -line.offset
            # Widened by a hair, then tested exactly: the bisection's bounds are rounded.
            first = bisect.bisect_left(kept_lines, (offset - tolerance - 1e-9,))
            for kept_offset, k in kept_lines[first:]:
                if kept_offset > offset + tolerance + 1e-9:
                    break
                if abs(offset - kept_offset) <= tolerance and (match is None or k < match[0]):
                    match = (k, offset)
        if match is None:
            by_angle.setdefault(line.angle, [])
            bisect.insort(by_angle[line.angle], (line.offset, len(merged)))
            merged.append(line)
            continue
        k, offset = match
        kept = merged[k]
        if not kept.exact:
            total = kept.weight + line.weight
            joined = RoofLine(kept.angle, (kept.offset * kept.weight + offset * line.weight) / total, total, False)
        else:
            joined = RoofLine(kept.angle, kept.offset, kept.weight + line.weight, True)
        kept_lines = by_angle[kept.angle]
        kept_lines.remove((kept.offset, k))
        bisect.insort(kept_lines, (joined.offset, k))
        merged[k] = joined
    return merged
