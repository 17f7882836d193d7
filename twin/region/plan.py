"""`twin plan`: the units of a regional run and their estimated points, buildings, time and
memory, before anything is decoded.

The tile index is LAS/LAZ files (their headers give extents and point counts), folders
of them, or a vector file of tile polygons (then points are estimated from a density).
Buildings are counted from the footprints when given (each in the unit holding its
anchor, as the run does), else estimated from a density. Time and memory use the rates
measured by `benchmarks/regional_tile.py` and stored in `throughput.json` beside this
module: a unit decodes every tile its buildings' ground rings reach, in full (LAZ has no
spatial index), then reconstructs its buildings.
"""

from __future__ import annotations

import heapq
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import laspy
import numpy as np
import pyogrio
import shapely

from twin.config import GroundConfig
from twin.errors import InputError
from twin.inputs.communes import CommuneSet
from twin.region.units import anchors, unit_id

THROUGHPUT_FILE = Path(__file__).with_name("throughput.json")
POINT_SUFFIXES = (".las", ".laz")


@dataclass(frozen=True)
class Tile:
    name: str
    bounds: tuple[float, float, float, float]
    points: int


@dataclass(frozen=True)
class PlannedUnit:
    id: str
    buildings: int
    own_points: int
    """Points of the tiles overlapping the unit's square."""
    decoded_points: int
    """Points of every tile the unit decodes (its own and those its buildings' rings reach)."""
    seconds: float
    memory_mb: float


@dataclass(frozen=True)
class Plan:
    tiles: tuple[Tile, ...]
    units: tuple[PlannedUnit, ...]
    buildings_counted: bool
    communes: tuple[dict[str, Any], ...]
    workers: int
    wall_seconds: float
    throughput: dict[str, Any]

    @property
    def peak_memory_mb(self) -> float:
        return max((u.memory_mb for u in self.units), default=0.0)


def read_tile_index(paths: Sequence[str | Path], density: float) -> list[Tile]:
    """Tiles from LAS/LAZ headers (files or folders of them) or from a vector tile index
    (points estimated as `density` per m²)."""
    tiles: list[Tile] = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder; give LAS/LAZ files, folders of them or a vector tile index")
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in POINT_SUFFIXES)
            if not files:
                raise InputError(f"{path}: no .las or .laz file in this folder")
            tiles += [_tile_of_points(f) for f in files]
        elif path.suffix.lower() in POINT_SUFFIXES:
            tiles.append(_tile_of_points(path))
        else:
            tiles += _tiles_of_vector(path, density)
    return tiles


def _tile_of_points(path: Path) -> Tile:
    try:
        with laspy.open(path) as reader:
            header = reader.header
    except Exception as error:
        raise InputError(f"{path}: not a readable LAS/LAZ file ({type(error).__name__}: {error})") from None
    return Tile(str(path), (header.mins[0], header.mins[1], header.maxs[0], header.maxs[1]), int(header.point_count))


def _tiles_of_vector(path: Path, density: float) -> list[Tile]:
    try:
        _, fids, wkb, _ = pyogrio.raw.read(path, return_fids=True, columns=[])
    except Exception as error:
        raise InputError(f"{path}: neither LAS/LAZ nor a vector tile index GDAL can read ({error})") from None
    tiles = []
    for fid, geometry in zip(fids, shapely.from_wkb(wkb)):
        if geometry is None or geometry.is_empty:
            continue
        tiles.append(Tile(f"{path.name}:{fid}", tuple(geometry.bounds), round(geometry.area * density)))
    if not tiles:
        raise InputError(f"{path}: the tile index has no tile polygon")
    return tiles


def load_throughput() -> dict[str, Any]:
    return json.loads(THROUGHPUT_FILE.read_text())


def plan_region(
    tiles: Sequence[Tile],
    unit_size: float,
    workers: int,
    footprint_polygons: Sequence[shapely.Polygon] | None = None,
    buildings_per_km2: float = 1000.0,
    communes: CommuneSet | None = None,
    throughput: dict[str, Any] | None = None,
) -> Plan:
    throughput = throughput or load_throughput()
    ring = GroundConfig().ring_width_m
    boxes = shapely.box(*np.array([t.bounds for t in tiles]).T)
    tree = shapely.STRtree(boxes)
    points = np.array([t.points for t in tiles], dtype=np.int64)

    members: dict[tuple[int, int], list[int]] = {}
    if footprint_polygons is not None:
        cells = np.floor(anchors(list(footprint_polygons)) / unit_size).astype(np.int64)
        for index, (i, j) in enumerate(cells.tolist()):
            members.setdefault((i, j), []).append(index)
        envelopes = shapely.bounds(np.asarray(footprint_polygons, dtype=object))
    else:
        for bounds in np.array([t.bounds for t in tiles]):
            i0, j0 = np.floor(bounds[:2] / unit_size).astype(int)
            i1, j1 = np.floor(bounds[2:] / unit_size).astype(int)
            for i in range(i0, i1 + 1):
                for j in range(j0, j1 + 1):
                    members.setdefault((i, j), [])

    units = []
    for (i, j), indices in sorted(members.items()):
        square = shapely.box(i * unit_size, j * unit_size, (i + 1) * unit_size, (j + 1) * unit_size)
        own = tree.query(square, predicate="intersects")
        if footprint_polygons is not None:
            buildings = len(indices)
            rings = shapely.box(*(envelopes[indices] + [-ring, -ring, ring, ring]).T)
            decoded = np.unique(tree.query(rings, predicate="intersects")[1])
        else:
            covered = shapely.union_all(boxes[own]).intersection(square).area if len(own) else 0.0
            buildings = round(covered / 1e6 * buildings_per_km2)
            decoded = tree.query(square.buffer(ring, join_style="mitre"), predicate="intersects")
        if len(own) == 0 and buildings == 0:
            continue
        own_points, decoded_points = int(points[own].sum()), int(points[decoded].sum())
        seconds = decoded_points / throughput["read_points_per_s"] + buildings / throughput["buildings_per_s"]
        memory = throughput["rss_mb_per_million_points"] * decoded_points / 1e6
        units.append(PlannedUnit(unit_id(i * unit_size, j * unit_size), buildings, own_points, decoded_points, seconds, memory))

    commune_rows = _communes(communes, tiles, boxes, footprint_polygons, buildings_per_km2, throughput) if communes else ()
    return Plan(tuple(tiles), tuple(units), footprint_polygons is not None, commune_rows, workers,
                _makespan([u.seconds for u in units], workers), throughput)


def _communes(communes: CommuneSet, tiles, boxes, footprint_polygons, buildings_per_km2, throughput):
    """Per commune: its buildings and the points of the tiles over it (by area), and the
    time a run of the commune alone would take on one worker."""
    density = np.array([t.points / max(shapely.box(*t.bounds).area, 1.0) for t in tiles])
    counts = {c.code: 0 for c in communes.communes}
    if footprint_polygons is not None:
        for code in communes.assign(list(footprint_polygons)):
            if code is not None:
                counts[code] += 1
    rows = []
    for commune in communes.communes:
        overlap = shapely.area(shapely.intersection(boxes, commune.polygon))
        point_count = int(np.sum(overlap * density))
        buildings = counts[commune.code] if footprint_polygons is not None else round(commune.polygon.area / 1e6 * buildings_per_km2)
        seconds = point_count / throughput["read_points_per_s"] + buildings / throughput["buildings_per_s"]
        rows.append({"code": commune.code, "name": commune.name, "buildings": buildings, "points": point_count,
                     "seconds_one_worker": seconds})
    return tuple(rows)


def _makespan(durations: Sequence[float], workers: int) -> float:
    """Wall time of running the units on `workers`, longest first, each to the worker free first."""
    loads = [0.0] * max(1, workers)
    for duration in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + duration)
    return max(loads)


def duration_text(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
