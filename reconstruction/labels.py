"""ASPRS classes for unclassified points (photogrammetric ones): ground, building, vegetation, other.

Ground is found as the lowest surface: the lowest point of each grid cell, with the
footprints (where the lowest point is often a roof) left out and filled from around,
then a grey-scale opening that removes whatever is narrower than `object_size`
(trees, cars, buildings missing from the footprints). Points near that surface are
ground; points inside a footprint and clearly above it are building; the rest is other.
With the points' colours, green points above the ground are vegetation (medium or high by
their height), wherever they are: trees overhanging a roof would otherwise count as
building and raise its height (a vegetated roof is labelled vegetation too). Greenness is
the excess green index 2g - r - b on chromatic coordinates, the usual vegetation index of
RGB aerial imagery (no infrared band), taken only on pixels bright enough for their
chromaticity to mean something (in shadows it is noise).
A plain morphological filter rather than a cloth simulation: the footprints already
remove the large objects, which is what makes such filters need tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage

GROUND = 2
BUILDING = 6
OTHER = 1
MEDIUM_VEGETATION = 4
HIGH_VEGETATION = 5


@dataclass(frozen=True)
class LabelSettings:
    cell_size: float = 1.0
    object_size: float = 15.0
    """Objects outside footprints narrower than this (m) are not ground."""
    ground_tolerance: float = 0.5
    """Points within this height of the ground surface are ground."""
    building_min_height: float = 2.0
    """Points inside a footprint this much above the ground are building."""
    footprint_margin: float = 1.0
    """Footprints grow by this much when left out of the ground surface (walls, offsets)."""
    min_excess_green: float = 0.2
    """Points greener than this (2g - r - b on chromatic coordinates) are vegetation..."""
    min_vegetation_brightness: int = 90
    """... when their red + green + blue (0-765) reaches this."""
    high_vegetation_min_height: float = 2.0
    """Vegetation this much above the ground is high (class 5), lower is medium (class 4)."""


def ground_surface(xyz: np.ndarray, footprints: list[shapely.Polygon], settings: LabelSettings = LabelSettings()) -> np.ndarray:
    """The terrain height (n,) under each point."""
    if len(xyz) == 0:
        return np.zeros(0)
    origin = xyz[:, :2].min(axis=0)
    cells = np.floor((xyz[:, :2] - origin) / settings.cell_size).astype(np.int64)
    shape = tuple(cells.max(axis=0) + 1)
    area = shapely.box(*xyz[:, :2].min(axis=0), *xyz[:, :2].max(axis=0)).buffer(settings.footprint_margin)
    near = [footprints[i] for i in shapely.STRtree(footprints).query(area)] if footprints else []
    outside = ~inside_footprints(xyz, [f.buffer(settings.footprint_margin) for f in near])
    lowest = np.full(shape, np.inf)
    np.minimum.at(lowest, (cells[outside, 0], cells[outside, 1]), xyz[outside, 2])
    empty = ~np.isfinite(lowest)
    if empty.all():  # every point is inside a footprint: the lowest point is the best guess
        return np.full(len(xyz), xyz[:, 2].min())
    # Empty cells (footprints, gaps in the matching) take the value of the nearest filled cell.
    nearest = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
    filled = lowest[tuple(nearest)]
    # A median over 3 x 3 cells first: a single mismatch far below the ground would
    # otherwise dig a pit of the opening's whole width.
    smooth = ndimage.median_filter(filled, size=3, mode="nearest")
    window = max(3, int(round(settings.object_size / settings.cell_size)) | 1)
    opened = ndimage.grey_opening(smooth, size=(window, window), mode="nearest")
    # Bilinear between cell centres.
    position = (xyz[:, :2] - origin) / settings.cell_size - 0.5
    return ndimage.map_coordinates(opened, [position[:, 0], position[:, 1]], order=1, mode="nearest")


def label_points(xyz: np.ndarray, footprints: list[shapely.Polygon], settings: LabelSettings = LabelSettings(),
                 rgb: np.ndarray | None = None) -> np.ndarray:
    """ASPRS classes (n,) uint8 of points (n, 3) with their colours (n, 3) when known:
    2 ground, 6 building, 4 and 5 vegetation (with colours only), 1 other."""
    terrain = ground_surface(xyz, footprints, settings)
    above = xyz[:, 2] - terrain
    classes = np.full(len(xyz), OTHER, dtype=np.uint8)
    classes[np.abs(above) <= settings.ground_tolerance] = GROUND
    classes[inside_footprints(xyz, footprints) & (above >= settings.building_min_height)] = BUILDING
    if rgb is not None:
        bright = np.asarray(rgb, dtype=np.int64).sum(axis=1) >= settings.min_vegetation_brightness
        green = bright & (excess_green(rgb) > settings.min_excess_green) & (above > settings.ground_tolerance)
        classes[green] = np.where(above[green] >= settings.high_vegetation_min_height, HIGH_VEGETATION, MEDIUM_VEGETATION)
    return classes


def excess_green(rgb: np.ndarray) -> np.ndarray:
    """2g - r - b (n,) on chromatic coordinates (each channel over their sum), in -1..2."""
    rgb = np.asarray(rgb, dtype=float)
    total = np.maximum(rgb.sum(axis=1), 1e-9)
    r, g, b = (rgb[:, k] / total for k in range(3))
    return 2.0 * g - r - b


def inside_footprints(xyz: np.ndarray, footprints: list[shapely.Polygon]) -> np.ndarray:
    """Which points (n, 2+) fall inside any of the polygons."""
    if len(xyz) == 0 or not footprints:
        return np.zeros(len(xyz), dtype=bool)
    # One prepared union of the footprints over the points: GEOS indexes its edges, where a
    # test per polygon would grow with footprints x points (a commune's file over a block).
    area = shapely.box(*xyz[:, :2].min(axis=0), *xyz[:, :2].max(axis=0))
    over = shapely.STRtree(footprints).query(area)
    if len(over) == 0:
        return np.zeros(len(xyz), dtype=bool)
    region = shapely.union_all([footprints[i] for i in over])
    shapely.prepare(region)
    return shapely.contains_xy(region, xyz[:, 0], xyz[:, 1])
