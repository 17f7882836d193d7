"""Roof superstructures: chimneys, dormers and roof equipment standing above the roof planes.

LoD2.2 includes the larger superstructures, but plane detection leaves out those covering
less than `min_plane_area_m2`. They are found in what a first roof partition leaves
unexplained: connected cells of the roof heightfield standing `superstructure_min_height_m`
or more above the roof faces. Each becomes a box on the grid's axes, the footprint's
directions, with a flat top at the median height of its cells. The caller adds its sides
to the roof lines and its top to the planes and partitions again, so that the labelling
weighs each box against the roof beneath, as any other face: a low or slender one, whose
misfit costs less than its outline, stays roof.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import shapely
from scipy import ndimage

from reconstruction.extrude import Plane, RoofFace
from reconstruction.heightfield import Heightfield
from twin.config import Lod2Config

MIN_FILL = 0.5
"""A cluster covering less of its box than this (an L along two edges) is not one box."""
MAX_SLENDER_CELLS = 2
"""A cluster one cell wide and longer than this is a strip of wall or parapet points, not a
superstructure; a shorter one is a flue or a vent."""


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
        if (min(members.shape) == 1 and max(members.shape) > MAX_SLENDER_CELLS) or members.mean() < MIN_FILL:
            continue
        rows, columns = window
        box = shapely.box(
            field.u0 + rows.start * field.cell,
            field.v0 + columns.start * field.cell,
            field.u0 + rows.stop * field.cell,
            field.v0 + columns.stop * field.cell,
        )
        top = float(np.median(field.heights[window][members]))
        found.append(Superstructure(field.to_map(box), Plane.horizontal(top)))
    return found


def _roof_heights(faces: Sequence[RoofFace], xy: np.ndarray) -> np.ndarray:
    """Height of the roof face over each point; NaN over none."""
    heights = np.full(len(xy), np.nan)
    tree = shapely.STRtree([face.polygon for face in faces])
    point_index, face_index = tree.query(shapely.points(xy), predicate="intersects")
    first = np.unique(point_index, return_index=True)[1]
    for k in np.unique(face_index[first]):
        chosen = point_index[first][face_index[first] == k]
        heights[chosen] = faces[k].plane.height_at(xy[chosen, 0], xy[chosen, 1])
    return heights
