"""LAS/LAZ/COPC point clouds, read in chunks and cropped to what the footprints need.

Only the building and ground classes are kept, and only inside a keep mask (a coarse
grid over the footprints' neighbourhoods), so memory follows the footprints, not the
tiles. Every ground point of a file read also feeds coarse terrain sums on a fixed grid,
the last point-based fallback for a building's ground height.

COPC files are valid LAZ 1.4 files and are read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import laspy
import numba
import numpy as np
import pyproj
import shapely

from twin.config import ClassMapping
from twin.errors import InputError
from twin.geodesy import resolve_compound_crs
from twin.gpstime import GPS_WEEK_SECONDS, gps_date
from twin.model import TerrainGrid

CHUNK_POINTS = 2_000_000
TERRAIN_CELL_M = 10.0


@dataclass(frozen=True)
class PointSource:
    """What the run read from one point file, for the metadata record."""

    path: str
    size_bytes: int
    point_count: int
    las_version: str
    point_format: int
    crs: str
    bounds: tuple[float, float, float, float, float, float]
    acquisition_dates: tuple[str, str] | None

    def footprint(self) -> shapely.Polygon:
        return shapely.box(self.bounds[0], self.bounds[1], self.bounds[3], self.bounds[4])


@dataclass(frozen=True)
class KeepMask:
    """Cells of a coarse grid that hold some footprint's neighbourhood."""

    x0: float
    y0: float
    cell: float
    cells: np.ndarray  # bool (nx, ny)

    @staticmethod
    def of_boxes(boxes: np.ndarray, cell: float = 5.0) -> "KeepMask":
        """The cells touching any of the (xmin, ymin, xmax, ymax) rows of `boxes`."""
        x0, y0 = float(boxes[:, 0].min()), float(boxes[:, 1].min())
        nx = max(1, int(np.ceil((boxes[:, 2].max() - x0) / cell)))
        ny = max(1, int(np.ceil((boxes[:, 3].max() - y0) / cell)))
        cells = np.zeros((nx, ny), dtype=bool)
        low = np.floor((boxes[:, :2] - (x0, y0)) / cell).astype(np.int64)
        high = np.minimum(np.floor((boxes[:, 2:] - (x0, y0)) / cell).astype(np.int64), (nx - 1, ny - 1))
        for (i0, j0), (i1, j1) in zip(low, high):
            cells[i0 : i1 + 1, j0 : j1 + 1] = True
        return KeepMask(x0, y0, cell, cells)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _in_cells(x, y, self.x0, self.y0, self.cell, self.cells)


def open_sources(
    paths: Sequence[str | Path], crs_override: str | None, vertical_crs: str | None
) -> tuple[list[PointSource], pyproj.CRS, list[str]]:
    """Reads every header; returns the sources, their shared compound CRS and notes."""
    if not paths:
        raise InputError("no point file given: pass at least one LAS/LAZ file with --points")
    sources, crs_per_source, notes = [], [], []
    for path in paths:
        path = Path(path)
        header = _read_header(path)
        header_crs = _header_crs(path, header)
        if header_crs is None and crs_override is None:
            raise InputError(
                f"{path}: the file has no CRS in its header; pass it with --crs "
                "(for IGN LiDAR HD: --crs EPSG:2154)"
            )
        if header_crs is not None and crs_override is not None and not _same_horizontal(header_crs, crs_override):
            raise InputError(
                f"{path}: the header says {header_crs.name} but --crs says {pyproj.CRS(crs_override).name}; "
                "drop --crs to use the header, or fix the file"
            )
        chosen = header_crs if header_crs is not None else pyproj.CRS(crs_override)
        crs, crs_notes = resolve_compound_crs(chosen, vertical_crs, source=str(path))
        notes.extend(crs_notes)
        crs_per_source.append(crs)
        sources.append(
            PointSource(
                path=str(path),
                size_bytes=path.stat().st_size,
                point_count=int(header.point_count),
                las_version=str(header.version),
                point_format=int(header.point_format.id),
                crs=crs.to_string(),
                bounds=(*map(float, header.mins), *map(float, header.maxs)),
                acquisition_dates=None,
            )
        )
    first = crs_per_source[0]
    for source, crs in zip(sources[1:], crs_per_source[1:]):
        if not crs.equals(first):
            raise InputError(
                f"{source.path} is in {crs.name} but {sources[0].path} is in {first.name}; "
                "all point files of a run must share one CRS (reproject with PDAL or las2las)"
            )
    return sources, first, sorted(set(notes))


@dataclass(frozen=True, eq=False)
class FilePoints:
    """The building and ground points one file holds inside a keep mask.

    `roof_gps_time` is None when the file's GPS times are not adjusted standard GPS
    time (then no date can be read from them).
    """

    roof_xyz: np.ndarray
    roof_gps_time: np.ndarray | None
    ground_xyz: np.ndarray
    acquisition_dates: tuple[str, str] | None
    decoded_points: int


def read_file(
    path: str,
    classes: ClassMapping,
    keep: KeepMask | None,
    terrain: "TerrainSums | None" = None,
    parallel: bool = True,
) -> FilePoints:
    """Streams one LAS/LAZ file in chunks and keeps the building and ground points inside
    `keep` (all of them when None). Every ground point of the file, kept or not, is added
    to `terrain` once the whole file has been decoded, so a file that breaks halfway adds
    nothing. `parallel` decodes LAZ on every core (else on one: for workers that each
    have a core)."""
    building_table = _class_table(classes.building)
    ground_table = _class_table(classes.ground)
    file_terrain = terrain.empty_like() if terrain is not None else None
    first_time, last_time, has_time, decoded = np.inf, -np.inf, True, 0
    try:
        backend = laspy.LazBackend.LazrsParallel if parallel else laspy.LazBackend.Lazrs
        with laspy.open(path, laz_backend=backend, decompression_selection=_NEEDED_FIELDS) as reader:
            header = reader.header
            declared_adjusted = _declares_adjusted_gps_time(header)
            has_time = "gps_time" in header.point_format.dimension_names
            scales = np.asarray(header.scales, dtype=np.float64)
            offsets = np.asarray(header.offsets, dtype=np.float64)
            roofs = _Gathered(header.point_count, with_time=has_time)
            grounds = _Gathered(header.point_count, with_time=False)
            for chunk in reader.chunk_iterator(CHUNK_POINTS):
                classification = np.asarray(chunk.classification, dtype=np.uint8)
                decoded += len(classification)
                gps = np.asarray(chunk.gps_time, dtype=np.float64) if has_time else np.empty(0)
                if has_time and len(classification):
                    first_time, last_time = min(first_time, gps.min()), max(last_time, gps.max())
                x, y, z = chunk.array["X"], chunk.array["Y"], chunk.array["Z"]
                if file_terrain is not None:
                    every_ground = _Gathered(len(classification), with_time=False)
                    every_ground.add(x, y, z, gps, classification, ground_table, scales, offsets, None)
                    file_terrain.add(every_ground.xyz[: every_ground.count])
                roofs.add(x, y, z, gps, classification, building_table, scales, offsets, keep)
                grounds.add(x, y, z, gps, classification, ground_table, scales, offsets, keep)
    except InputError:
        raise
    except Exception as error:
        raise InputError(
            f"{path}: the point data cannot be decoded ({type(error).__name__}: {error}); "
            "the file is probably truncated or corrupt: download or export it again"
        ) from None
    dates = None
    if has_time and np.isfinite(first_time) and (declared_adjusted or last_time > GPS_WEEK_SECONDS):
        dates = (gps_date(first_time), gps_date(last_time))
    if terrain is not None:
        terrain.merge(file_terrain)
    return FilePoints(
        roof_xyz=roofs.xyz[: roofs.count],
        roof_gps_time=roofs.time[: roofs.count] if dates else None,
        ground_xyz=grounds.xyz[: grounds.count],
        acquisition_dates=dates,
        decoded_points=decoded,
    )


_NEEDED_FIELDS = (
    laspy.DecompressionSelection.XY_RETURNS_CHANNEL
    | laspy.DecompressionSelection.Z
    | laspy.DecompressionSelection.CLASSIFICATION
    | laspy.DecompressionSelection.GPS_TIME
)
"""LAS 1.4 point formats 6-10 compress fields in layers; the other layers (intensity,
scan angle, colours...) are skipped, which makes decoding faster."""


def joined(parts: Sequence[np.ndarray], empty_shape: tuple[int, ...]) -> np.ndarray:
    """The parts end to end; a single part as it is, without a copy (memory counts here)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(empty_shape)


def _class_table(codes: Sequence[int]) -> np.ndarray:
    table = np.zeros(256, dtype=bool)
    table[list(codes)] = True
    return table


class _Gathered:
    """Points of some classes that a keep mask holds, scaled and appended chunk after chunk
    straight into arrays sized for the whole file: no array per chunk to join at the end,
    which on a 20 M point tile cost as much again as the selection (a third of the decoding
    time), most of it in page faults. Pages never written take no memory."""

    def __init__(self, point_count: int, with_time: bool) -> None:
        capacity = min(point_count, MAX_INITIAL_CAPACITY)
        self.with_time = with_time
        self.xyz = np.empty((capacity, 3))
        self.time = np.empty(capacity if with_time else 0)
        self.count = 0

    def add(self, x, y, z, gps, classification, wanted, scales, offsets, keep: "KeepMask | None") -> None:
        needed = self.count + len(classification)
        if needed > len(self.xyz):  # past MAX_INITIAL_CAPACITY
            capacity = max(needed, 2 * len(self.xyz))
            self.xyz = _grown(self.xyz, self.count, capacity)
            if self.with_time:
                self.time = _grown(self.time, self.count, capacity)
        mask = keep if keep is not None else _UNUSED_MASK
        self.count = _append_kept(
            x, y, z, gps, classification, wanted, scales, offsets, keep is None,
            mask.x0, mask.y0, mask.cell, mask.cells, self.xyz, self.time, self.count,
        )


def _grown(values: np.ndarray, count: int, capacity: int) -> np.ndarray:
    """`values` with room for `capacity` rows, its first `count` copied: the rest is left
    unwritten, so it takes no memory until used (joining an empty array would copy it)."""
    grown = np.empty((capacity,) + values.shape[1:])
    grown[:count] = values[:count]
    return grown


_UNUSED_MASK = KeepMask(0.0, 0.0, 1.0, np.ones((1, 1), dtype=bool))
"""Stands in for a missing keep mask: every point is kept then, without a look at it."""


MAX_INITIAL_CAPACITY = 1 << 26
"""Points a file's arrays are first sized for (1.5 GB of address space for the
coordinates); beyond, they grow by doubling."""


# The loops below are compiled: in numpy, the class selection, the gathers from the
# chunk's interleaved fields, the scaling and the keep test each took a pass over millions
# of points, 0.8 s of the 6 s the benchmark tile took to read.


@numba.njit(cache=True)
def _append_kept(x, y, z, gps, classification, wanted, scales, offsets, keep_all, x0, y0, cell, cells, xyz, times, count):
    """Writes from row `count` of `xyz` (and `times`, unless empty) the scaled points of
    the classes `wanted` inside the keep mask's cells (all of them with `keep_all`);
    returns the new count."""
    for i in range(len(classification)):
        if wanted[classification[i]]:
            px = (x[i] * scales[0]) + offsets[0]
            py = (y[i] * scales[1]) + offsets[1]
            if keep_all or _in_cell(px, py, x0, y0, cell, cells):
                xyz[count, 0] = px
                xyz[count, 1] = py
                xyz[count, 2] = (z[i] * scales[2]) + offsets[2]
                if len(times):
                    times[count] = gps[i]
                count += 1
    return count


@numba.njit(cache=True)
def _in_cells(x, y, x0, y0, cell, cells):
    """Whether each point (x, y) falls in a true cell of `cells` (a grid of `cell` squares
    from (x0, y0))."""
    inside = np.empty(len(x), np.bool_)
    for i in range(len(x)):
        inside[i] = _in_cell(x[i], y[i], x0, y0, cell, cells)
    return inside


@numba.njit(cache=True)
def _in_cell(x, y, x0, y0, cell, cells):
    columns, rows = cells.shape
    column, row = np.floor((x - x0) / cell), np.floor((y - y0) / cell)
    return 0 <= column < columns and 0 <= row < rows and cells[int(column), int(row)]


class TerrainSums:
    """Ground heights summed per cell of a fixed grid (cells aligned on multiples of
    `TERRAIN_CELL_M` in the CRS) over a bounding box.

    Heights are summed as whole millimetres in integers, so a cell's mean is exactly the
    same whatever order its points arrive in, and so whichever files they come from.
    """

    def __init__(self, bounds: tuple[float, float, float, float]) -> None:
        xmin, ymin, xmax, ymax = bounds
        self.i0 = int(np.floor(xmin / TERRAIN_CELL_M))
        self.j0 = int(np.floor(ymin / TERRAIN_CELL_M))
        self.nx = int(np.floor(xmax / TERRAIN_CELL_M)) - self.i0 + 1
        self.ny = int(np.floor(ymax / TERRAIN_CELL_M)) - self.j0 + 1
        self.sums = np.zeros(self.nx * self.ny, dtype=np.int64)
        self.counts = np.zeros(self.nx * self.ny, dtype=np.int64)

    def empty_like(self) -> "TerrainSums":
        other = object.__new__(TerrainSums)
        other.i0, other.j0, other.nx, other.ny = self.i0, self.j0, self.nx, self.ny
        other.sums, other.counts = np.zeros_like(self.sums), np.zeros_like(self.counts)
        return other

    def add(self, xyz: np.ndarray) -> None:
        i = np.floor(xyz[:, 0] / TERRAIN_CELL_M).astype(np.int64) - self.i0
        j = np.floor(xyz[:, 1] / TERRAIN_CELL_M).astype(np.int64) - self.j0
        inside = (i >= 0) & (i < self.nx) & (j >= 0) & (j < self.ny)
        flat = i[inside] * self.ny + j[inside]
        millimetres = np.rint(xyz[inside, 2] * 1000).astype(np.int64)
        self.sums += np.bincount(flat, weights=millimetres, minlength=len(self.sums)).astype(np.int64)
        self.counts += np.bincount(flat, minlength=len(self.counts))

    def merge(self, other: "TerrainSums") -> None:
        self.sums += other.sums
        self.counts += other.counts

    def around(self, x: float, y: float, radius: float) -> TerrainGrid:
        """The mean height of the cells whose centre lies within `radius` of (x, y) (NaN
        for the others and where no ground point fell), on a grid of the fixed cells
        around (x, y): the same grid whatever bounds the sums cover."""
        i = np.arange(int(np.floor((x - radius) / TERRAIN_CELL_M)), int(np.floor((x + radius) / TERRAIN_CELL_M)) + 1)
        j = np.arange(int(np.floor((y - radius) / TERRAIN_CELL_M)), int(np.floor((y + radius) / TERRAIN_CELL_M)) + 1)
        near = np.hypot((i[:, None] + 0.5) * TERRAIN_CELL_M - x, (j[None, :] + 0.5) * TERRAIN_CELL_M - y) <= radius
        local_i, local_j = i - self.i0, j - self.j0
        known = ((local_i >= 0) & (local_i < self.nx))[:, None] & ((local_j >= 0) & (local_j < self.ny))[None, :]
        flat = np.clip(local_i, 0, self.nx - 1)[:, None] * self.ny + np.clip(local_j, 0, self.ny - 1)[None, :]
        counts = np.where(known, self.counts[flat], 0)
        filled = near & (counts > 0)
        heights = np.full(near.shape, np.nan)
        heights[filled] = self.sums[flat][filled] / counts[filled] / 1000.0
        return TerrainGrid(float(i[0] * TERRAIN_CELL_M), float(j[0] * TERRAIN_CELL_M), TERRAIN_CELL_M, heights)


def _declares_adjusted_gps_time(header: laspy.LasHeader) -> bool:
    """Whether the header declares adjusted standard GPS time. Many producers (IGN among
    them) write adjusted times but leave the flag on GPS week time, so times beyond one
    week are read as adjusted too."""
    return header.global_encoding.gps_time_type == laspy.header.GpsTimeType.STANDARD


def _read_header(path: Path) -> laspy.LasHeader:
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path given to --points")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass the LAS/LAZ files inside it (e.g. {path}/*.laz)")
    try:
        with laspy.open(path) as reader:
            return reader.header
    except PermissionError:
        raise InputError(f"{path}: cannot be read (permission denied)") from None
    except Exception as error:
        raise InputError(
            f"{path}: not a readable LAS/LAZ file ({type(error).__name__}: {error}); "
            "check that the download finished or export it again"
        ) from None


def _header_crs(path: Path, header: laspy.LasHeader) -> pyproj.CRS | None:
    try:
        return header.parse_crs()
    except Exception as error:
        raise InputError(
            f"{path}: the CRS in the header cannot be parsed ({error}); pass the CRS with --crs"
        ) from None


def _same_horizontal(crs: pyproj.CRS, other: str) -> bool:
    horizontal = crs.sub_crs_list[0] if crs.is_compound else crs
    try:
        other_crs = pyproj.CRS(other)
    except pyproj.exceptions.CRSError as error:
        raise InputError(f"--crs {other}: not a CRS pyproj knows ({error})") from None
    other_horizontal = other_crs.sub_crs_list[0] if other_crs.is_compound else other_crs
    return horizontal.equals(other_horizontal)
