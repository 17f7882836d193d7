"""Walls shared by adjoining buildings (terraced houses, party walls).

Two buildings share wall where their footprints share an edge: there, each one's wall
surfaces are projected onto the vertical plane of that edge (abscissa along the edge,
height), and the area covered by both buildings' walls is shared wall area, counted
for each of the two.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import shapely

from twin.model import Building, SurfaceKind

ON_EDGE_M = 0.02
"""A wall lies on a shared edge when all its vertices are this close to the edge's line."""


def shared_wall_areas(buildings: Sequence[Building], lod: str = "2.2") -> dict[str, float]:
    """Shared wall area (m2) per building id, for buildings with a solid at `lod`."""
    solid_buildings = [b for b in buildings if b.solids(lod) and not b.footprint.is_empty]
    shared: dict[str, float] = defaultdict(float)
    if len(solid_buildings) < 2:
        return dict(shared)
    footprints = [b.footprint for b in solid_buildings]
    tree = shapely.STRtree(footprints)
    for i, j in zip(*tree.query(footprints, predicate="touches")):
        if i >= j:
            continue
        edge = shapely.line_merge(footprints[i].boundary.intersection(footprints[j].boundary))
        for segment in _segments(edge):
            area = _shared_area(solid_buildings[i], solid_buildings[j], segment, lod)
            shared[solid_buildings[i].id] += area
            shared[solid_buildings[j].id] += area
    return {k: round(v, 2) for k, v in shared.items()}


def _segments(edge: shapely.Geometry) -> list[np.ndarray]:
    """Straight pieces (2 points each) of the shared boundary."""
    pieces = []
    for line in shapely.get_parts(edge):
        if line.geom_type != "LineString":
            continue
        coords = np.asarray(line.coords)
        pieces += [np.array([a, b]) for a, b in zip(coords[:-1], coords[1:]) if np.hypot(*(b - a)) > 0.05]
    return pieces


def _shared_area(a: Building, b: Building, segment: np.ndarray, lod: str) -> float:
    start, end = segment
    direction = (end - start) / np.linalg.norm(end - start)
    profiles = [_wall_profile(building, start, direction, lod) for building in (a, b)]
    segment_band = shapely.box(0.0, -1e4, float(np.linalg.norm(end - start)), 1e4)
    return float(profiles[0].intersection(profiles[1]).intersection(segment_band).area)


def _wall_profile(building: Building, start: np.ndarray, direction: np.ndarray, lod: str) -> shapely.Geometry:
    """The building's walls on the line through `start` along `direction`, in (along, height)."""
    normal = np.array([-direction[1], direction[0]])
    polygons = []
    for solid in building.solids(lod):
        for surface in solid.surfaces:
            if surface.kind != SurfaceKind.WALL:
                continue
            ring = surface.rings[0]
            offsets = (ring[:, :2] - start) @ normal
            if np.abs(offsets).max() > ON_EDGE_M:
                continue
            along = (ring[:, :2] - start) @ direction
            polygon = shapely.Polygon(np.column_stack([along, ring[:, 2]]))
            if polygon.area > 0:
                polygons.append(shapely.make_valid(polygon))
    return shapely.union_all(polygons) if polygons else shapely.Polygon()
