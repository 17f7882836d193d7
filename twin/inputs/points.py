"""LAS/LAZ/COPC point clouds, read in chunks and cropped to what the footprints need.

Only the building and ground classes are kept, and only inside a keep mask (a coarse
grid over the footprints' neighbourhoods), so memory follows the footprints, not the
tiles. Every ground point of the tiles also feeds a coarse terrain grid, the last
point-based fallback for a building's ground height.

COPC files are valid LAZ 1.4 files and are read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import laspy
import numpy as np
import pyproj
import shapely

from twin.config import ClassMapping
from twin.errors import InputError
from twin.geodesy import resolve_compound_crs
from twin.gpstime import GPS_WEEK_SECONDS, gps_date
from twin.model import PointCloud, TerrainGrid

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
    def around(region: shapely.Geometry, cell: float = 5.0) -> "KeepMask":
        xmin, ymin, xmax, ymax = region.bounds
        nx = max(1, int(np.ceil((xmax - xmin) / cell)))
        ny = max(1, int(np.ceil((ymax - ymin) / cell)))
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        boxes = shapely.box(
            xmin + ix * cell, ymin + iy * cell, xmin + (ix + 1) * cell, ymin + (iy + 1) * cell
        )
        shapely.prepare(region)
        return KeepMask(xmin, ymin, cell, shapely.intersects(region, boxes))

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ix = np.floor((x - self.x0) / self.cell).astype(np.int64)
        iy = np.floor((y - self.y0) / self.cell).astype(np.int64)
        nx, ny = self.cells.shape
        inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
        keep = np.zeros(len(x), dtype=bool)
        keep[inside] = self.cells[ix[inside], iy[inside]]
        return keep


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


def read_points(
    sources: Sequence[PointSource],
    crs: pyproj.CRS,
    classes: ClassMapping,
    keep: KeepMask | None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[PointCloud, TerrainGrid, list[PointSource]]:
    """Building and ground points inside `keep`, the terrain grid of all ground points,
    and the sources completed with their acquisition dates."""
    wanted = np.array(sorted({*classes.building, *classes.ground}), dtype=np.uint8)
    ground_classes = np.array(classes.ground, dtype=np.uint8)
    terrain = _TerrainAccumulator(sources)
    xyz_parts, class_parts, time_parts = [], [], []
    has_time = True
    completed = []
    for source in sources:
        first_time, last_time = np.inf, -np.inf
        declared_adjusted = False
        try:
            with laspy.open(source.path) as reader:
                declared_adjusted = _declares_adjusted_gps_time(reader.header)
                for chunk in reader.chunk_iterator(CHUNK_POINTS):
                    x, y, z = np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)
                    classification = np.asarray(chunk.classification, dtype=np.uint8)
                    ground = np.isin(classification, ground_classes)
                    terrain.add(x[ground], y[ground], z[ground])
                    selected = np.isin(classification, wanted)
                    if keep is not None:
                        selected &= keep.contains(x, y)
                    xyz_parts.append(np.column_stack([x[selected], y[selected], z[selected]]))
                    class_parts.append(classification[selected])
                    if "gps_time" in chunk.point_format.dimension_names:
                        gps = np.asarray(chunk.gps_time, dtype=np.float64)
                        time_parts.append(gps[selected])
                        if len(gps):
                            first_time, last_time = min(first_time, gps.min()), max(last_time, gps.max())
                    else:
                        has_time = False
                    if on_progress is not None:
                        on_progress(len(x))
        except InputError:
            raise
        except Exception as error:
            raise InputError(
                f"{source.path}: the point data cannot be decoded ({type(error).__name__}: {error}); "
                "the file is probably truncated or corrupt: download or export it again"
            ) from None
        dates = None
        if np.isfinite(first_time) and (declared_adjusted or last_time > GPS_WEEK_SECONDS):
            dates = (gps_date(first_time), gps_date(last_time))
        completed.append(_with_dates(source, dates))
    xyz = np.concatenate(xyz_parts) if xyz_parts else np.empty((0, 3))
    classification = np.concatenate(class_parts) if class_parts else np.empty(0, np.uint8)
    gps_time = None
    if has_time and time_parts and all(s.acquisition_dates for s in completed):
        gps_time = np.concatenate(time_parts)
    cloud = PointCloud(xyz=xyz, classification=classification, crs=crs, gps_time=gps_time)
    return cloud, terrain.grid(), completed


def _with_dates(source: PointSource, dates: tuple[str, str] | None) -> PointSource:
    return PointSource(**{**source.__dict__, "acquisition_dates": dates})


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


class _TerrainAccumulator:
    """Mean ground height per coarse cell over the union of the sources' extents."""

    def __init__(self, sources: Sequence[PointSource]) -> None:
        bounds = np.array([s.bounds for s in sources])
        self.x0, self.y0 = float(bounds[:, 0].min()), float(bounds[:, 1].min())
        self.nx = max(1, int(np.ceil((bounds[:, 3].max() - self.x0) / TERRAIN_CELL_M)) + 1)
        self.ny = max(1, int(np.ceil((bounds[:, 4].max() - self.y0) / TERRAIN_CELL_M)) + 1)
        self.sums = np.zeros(self.nx * self.ny)
        self.counts = np.zeros(self.nx * self.ny, dtype=np.int64)

    def add(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        ix = np.clip(((x - self.x0) // TERRAIN_CELL_M).astype(np.int64), 0, self.nx - 1)
        iy = np.clip(((y - self.y0) // TERRAIN_CELL_M).astype(np.int64), 0, self.ny - 1)
        flat = ix * self.ny + iy
        self.sums += np.bincount(flat, weights=z, minlength=len(self.sums))
        self.counts += np.bincount(flat, minlength=len(self.counts))

    def grid(self) -> TerrainGrid:
        with np.errstate(invalid="ignore", divide="ignore"):
            heights = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)
        return TerrainGrid(self.x0, self.y0, TERRAIN_CELL_M, heights.reshape(self.nx, self.ny))
