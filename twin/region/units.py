"""Units of work: a run cut along a regular grid, each building in exactly one unit.

A unit is a square cell of a grid aligned on multiples of its size in the CRS (1 km
cells are the IGN LiDAR HD tiles). A building belongs to the unit holding its anchor:
its footprint's centroid, or for a footprint whose centroid falls outside it (a U-shape)
its representative point, so the assignment depends on the footprint alone. A unit may
read every point file within reach of its buildings, whichever tile they are in; what it
actually reads is decided per building (`twin.region.unit_run`), so a building gets the
same points however the area is cut into files and units.

A unit's fingerprint hashes what its result depends on: the software version and
parameters, its footprints (geometry, attributes, repairs) and the identity (path, size,
modification time) of the point files within the nearest-ground radius of them. The rare
buildings that fall back to the coarse terrain further out record the files they used
with their result (`twin.region.workdir`). A finished unit whose inputs are unchanged is
not run again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import shapely

from reconstruction.ground import MAX_TERRAIN_DISTANCE_M
from twin.config import GroundConfig
from twin.inputs.points import TERRAIN_CELL_M, PointSource
from twin.model import Footprint


@dataclass(frozen=True)
class PointFile:
    """A point file as units see it: where it is, what its header says it covers, and
    what identifies its content (size and modification time)."""

    path: str
    bounds: tuple[float, float, float, float]
    size_bytes: int
    mtime_ns: int
    point_count: int

    @staticmethod
    def of(source: PointSource) -> "PointFile":
        stat = os.stat(source.path)
        xmin, ymin, _, xmax, ymax, _ = source.bounds
        return PointFile(source.path, (xmin, ymin, xmax, ymax), stat.st_size, stat.st_mtime_ns, source.point_count)

    def identity(self) -> list[Any]:
        return [self.path, self.size_bytes, self.mtime_ns]


@dataclass(frozen=True)
class Reach:
    """How far around its footprint a building may need points, in metres."""

    ring: float
    """Always: the ground ring the terrain plane is fitted to."""
    nearby: float
    """When the ring holds too few ground points: the nearest-ground search."""
    terrain: float
    """When no ground point lies within `nearby`: the coarse terrain cells around the
    footprint's centroid (their centres within MAX_TERRAIN_DISTANCE_M, their points up to
    half a cell diagonal further)."""

    @staticmethod
    def of(ground: GroundConfig) -> "Reach":
        return Reach(
            ring=ground.ring_width_m,
            nearby=max(ground.ring_width_m, ground.nearest_radius_m),
            terrain=MAX_TERRAIN_DISTANCE_M + TERRAIN_CELL_M * math.sqrt(0.5),
        )


@dataclass(frozen=True, eq=False)
class Unit:
    id: str
    x0: float
    y0: float
    size: float
    footprints: tuple[Footprint, ...]
    """Sorted by id."""
    files: tuple[PointFile, ...]
    """Every point file within reach of a footprint (even the terrain's), sorted by path."""
    fingerprint: str

    def files_within(self, boxes: Sequence[Sequence[float]]) -> list[PointFile]:
        regions = [shapely.box(*b) for b in boxes]
        return [f for f in self.files if any(shapely.box(*f.bounds).intersects(r) for r in regions)]


def anchors(polygons: Sequence[shapely.Polygon]) -> np.ndarray:
    """(n, 2): each footprint's centroid, or its representative point when the centroid
    falls outside it."""
    if not polygons:
        return np.empty((0, 2))
    geometries = np.asarray(polygons, dtype=object)
    centroids = shapely.centroid(geometries)
    inside = shapely.contains(geometries, centroids)
    points = np.where(inside, centroids, shapely.point_on_surface(geometries))
    return shapely.get_coordinates(points)


def unit_id(x0: float, y0: float) -> str:
    return f"{_coordinate(x0)}_{_coordinate(y0)}"


def plan_units(
    footprints: Sequence[Footprint],
    files: Sequence[PointFile],
    size: float,
    reach: Reach,
    run_identity: dict[str, Any],
) -> list[Unit]:
    """The units holding at least one footprint, sorted by id."""
    if not footprints:
        return []
    cells = np.floor(anchors([f.polygon for f in footprints]) / size).astype(np.int64)
    members: dict[tuple[int, int], list[Footprint]] = {}
    for footprint, (i, j) in zip(footprints, cells.tolist()):
        members.setdefault((i, j), []).append(footprint)
    files = sorted(files, key=lambda f: f.path)
    file_boxes = shapely.box(*np.array([f.bounds for f in files]).T) if files else np.empty(0, dtype=object)
    tree = shapely.STRtree(file_boxes)
    identity = json.dumps(run_identity, sort_keys=True, default=str)
    units = []
    for (i, j), unit_footprints in members.items():
        unit_footprints.sort(key=lambda f: f.id)
        envelope = np.array([f.polygon.bounds for f in unit_footprints])
        within = _files_around(tree, files, envelope, reach.terrain)
        nearby = _files_around(tree, files, envelope, reach.nearby)
        x0, y0 = i * size, j * size
        fingerprint = _fingerprint(identity, unit_footprints, nearby)
        units.append(Unit(unit_id(x0, y0), x0, y0, size, tuple(unit_footprints), within, fingerprint))
    return sorted(units, key=lambda u: u.id)


def _files_around(tree: shapely.STRtree, files: Sequence[PointFile], envelopes: np.ndarray, distance: float):
    """The files overlapping the footprints' envelopes grown by `distance` (a superset:
    the grown envelopes' common box)."""
    box = shapely.box(
        envelopes[:, 0].min() - distance,
        envelopes[:, 1].min() - distance,
        envelopes[:, 2].max() + distance,
        envelopes[:, 3].max() + distance,
    )
    return tuple(files[k] for k in sorted(tree.query(box, predicate="intersects").tolist()))


def _fingerprint(identity: str, footprints: Sequence[Footprint], files: Sequence[PointFile]) -> str:
    digest = hashlib.sha256(identity.encode())
    for footprint in footprints:
        digest.update(footprint.id.encode())
        digest.update(shapely.to_wkb(footprint.polygon))
        digest.update(json.dumps(dict(footprint.attributes), sort_keys=True, default=str).encode())
        digest.update(json.dumps(list(footprint.notes)).encode())
    digest.update(json.dumps([f.identity() for f in files]).encode())
    return digest.hexdigest()


def _coordinate(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3f}"
