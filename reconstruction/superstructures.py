"""Roof superstructures: chimneys, dormers and roof equipment standing above the roof planes.

LoD2.2 includes the larger superstructures, but plane detection leaves out those covering
less than `min_plane_area_m2`. They are found in what a first roof partition leaves
unexplained: connected cells of the roof heightfield standing `superstructure_min_height_m`
or more above the roof faces. Each becomes a box on the grid's axes, the footprint's
directions, with a flat top at the median height of its cells. The caller adds its sides
to the roof lines and its top to the planes and partitions again, so that the labelling
weighs each box against the roof beneath, as any other face: a low or slender one, whose
misfit costs less than its outline, stays roof.

A superstructure stands above the roof all around it. Cells straddling a step between two
roof levels stand above the lower level's face when the step line falls a little off, but
no higher than the upper level beside them: such a cluster is the step's wall, not a box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import shapely
from scipy import ndimage

from reconstruction.extrude import Plane, RoofFace
from reconstruction.geometry import points_within
from reconstruction.heightfield import Heightfield
from twin.config import Lod2Config

MIN_FILL = 0.5
"""A cluster covering less of its box than this (an L along two edges) is not one box."""
SURROUNDINGS_QUANTILE = 75
"""A cluster must stand `superstructure_min_height_m` above this percentile of the cell heights
around it. Beside a step the upper level is half the ring, so the median would not do; the
highest cell alone would let one stray cell veto a chimney."""


@dataclass(frozen=True, eq=False)
class Superstructure:
    outline: shapely.Polygon
    plane: Plane


def superstructures(field: Heightfield, faces: Sequence[RoofFace], config: Lod2Config) -> list[Superstructure]:
    """The boxes standing above `faces` in the roof heightfield `field`."""
    with_data = np.isfinite(field.heights) & field.inside
    cells = np.argwhere(with_data)
    roof = _roof_heights(faces, field.cell_centres(cells))
    above = np.zeros(field.heights.shape, dtype=bool)
    above[tuple(cells.T)] = field.heights[with_data] - roof > config.superstructure_min_height_m
    clusters, _ = ndimage.label(above)
    cell_area = field.cell**2
    found = []
    for number, window in enumerate(ndimage.find_objects(clusters), start=1):
        members = clusters[window] == number
        area = members.sum() * cell_area
        if not config.superstructure_min_area_m2 <= area <= config.superstructure_max_area_m2:
            continue
        if members.mean() < MIN_FILL:
            continue
        top = float(np.median(field.heights[window][members]))
        around = _surrounding_heights(field.heights, with_data, clusters, number, window)
        if len(around) and top - np.percentile(around, SURROUNDINGS_QUANTILE) < config.superstructure_min_height_m:
            continue
        rows, columns = window
        box = shapely.box(
            field.u0 + rows.start * field.cell,
            field.v0 + columns.start * field.cell,
            field.u0 + rows.stop * field.cell,
            field.v0 + columns.stop * field.cell,
        )
        found.append(Superstructure(field.to_map(box), Plane.horizontal(top)))
    return found


def _surrounding_heights(
    heights: np.ndarray, with_data: np.ndarray, clusters: np.ndarray, number: int, window: tuple[slice, ...]
) -> np.ndarray:
    """Heights of the cells with data bordering cluster `number` (its 8-neighbourhood)."""
    grown = tuple(slice(max(w.start - 1, 0), w.stop + 1) for w in window)
    inner = clusters[grown] == number
    ring = ndimage.binary_dilation(inner, structure=np.ones((3, 3), bool)) & ~inner & with_data[grown]
    return heights[grown][ring]


def _roof_heights(faces: Sequence[RoofFace], xy: np.ndarray) -> np.ndarray:
    """Height of the roof face over each point (of the first face, on an edge between
    two); NaN over none."""
    heights = np.full(len(xy), np.nan)
    point_index, face_index = points_within(xy, np.array([face.polygon for face in faces]), rings_included=True)
    first = np.unique(point_index, return_index=True)[1]
    for k in np.unique(face_index[first]):
        chosen = point_index[first][face_index[first] == k]
        heights[chosen] = faces[k].plane.height_at(xy[chosen, 0], xy[chosen, 1])
    return heights
