"""`twin match`: a labelled point cloud from overlapping oriented images.

Reads the cameras and their images, matches the chosen pairs densely
(reconstruction.stereo), keeps the points another pair confirms, labels them ground,
building, vegetation or other with the footprints and their colours (reconstruction.labels) and writes a LAS 1.4
point format 7 file with colours, in the cameras' CRS, that `twin build` reads.

Images are read when a pair needs them (a few kept for the next pairs) and each pair's
points are thinned before the cross-pair check, but the whole block is matched in one
run and its points held in memory until written: a block far larger than a district
should be cut into overlapping parts, matched one by one (no tiling here).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import laspy
import numpy as np
import pyproj
import shapely

from exporters.atomic import atomic_output
from reconstruction.labels import LabelSettings, label_points
from reconstruction.stereo import (
    BASE_TO_HEIGHT, MAX_VIEW_ANGLE_DEG, MIN_OVERLAP, MatchSettings, consistent_across_pairs, match_pair, rectify_pair,
    select_pairs, thin,
)
from twin.errors import InputError
from twin.geodesy import horizontal_part
from twin.imagery.camera import FrameCamera
from twin.imagery.images import ImagesOnDemand
from twin.imagery.readers import load_cameras
from twin.inputs.footprints import read_footprints

FIXED_CREATION_DATE = datetime.date(2000, 1, 1)
DEFAULT_SPACING = 0.25
"""Output point spacing (m): about the ground sampling distance of aerial surveys."""


@dataclass(frozen=True)
class MatchSummary:
    path: Path
    points: int
    pairs: tuple[tuple[str, str], ...]
    """The pairs matched (those skipped are in `skipped`)."""
    points_per_pair: tuple[int, ...]
    class_counts: dict[int, int]
    seconds: float
    skipped: tuple[str, ...] = ()
    """Pairs that could not be matched, each with the reason."""


@dataclass(frozen=True)
class MatchedImages:
    """What `match_images` gives: points (n, 3) and colours (n, 3) past the cross-pair check,
    the pairs matched with the points each gave (before thinning and that check), and the
    pairs skipped with why."""

    xyz: np.ndarray
    rgb: np.ndarray
    pairs: list[tuple[int, int]]
    points_per_pair: list[int]
    skipped: list[str]


def match_images(
    cameras: Sequence[FrameCamera],
    images: Mapping[str, np.ndarray],
    height_range: tuple[float, float],
    pairs: Sequence[tuple[int, int]],
    scale: float = 1.0,
    tolerance: float | None = None,
    settings: MatchSettings = MatchSettings(),
    spacing: float = DEFAULT_SPACING,
) -> MatchedImages:
    """The points of the image `pairs` (camera indices) that pass the cross-pair check.

    `images[name]` is the image of the camera of that name, looked up when a pair needs
    it. A pair that cannot be matched (views too oblique to be rectified together, say) is
    skipped with its reason.
    `tolerance` (m) is how close another pair's point must be to confirm one: by default
    three ground sampling distances of the matched images at the scene's mid height.
    Each pair's points are thinned to one per cube of half the smaller of `spacing` (the
    output's) and `tolerance` before that check, which bounds the memory they take
    whatever the images' resolution without blurring either.
    """
    if tolerance is None:
        tolerance = 3.0 * _ground_sampling_distance([cameras[i] for pair in pairs for i in pair], height_range) / scale
    cube = 0.5 * min(spacing, tolerance)
    clouds, colours, matched, counts, skipped = [], [], [], [], []
    for first, second in pairs:
        try:
            rectified = rectify_pair(cameras[first], cameras[second], scale)
            points = match_pair(rectified, images[cameras[first].name], images[cameras[second].name], height_range, settings)
        except ValueError as error:
            skipped.append(f"{cameras[first].name}:{cameras[second].name}: {error}")
            continue
        xyz, rgb = thin(points.xyz, points.rgb, cube)
        clouds.append(xyz)
        colours.append(rgb)
        matched.append((first, second))
        counts.append(len(points.xyz))
    kept = consistent_across_pairs(clouds, [(cameras[a], cameras[b]) for a, b in matched], tolerance)
    xyz = np.vstack([np.zeros((0, 3))] + [c[k] for c, k in zip(clouds, kept)])
    rgb = np.vstack([np.zeros((0, 3), np.uint8)] + [c[k] for c, k in zip(colours, kept)])
    return MatchedImages(xyz, rgb, matched, counts, skipped)


def _ground_sampling_distance(cameras: Sequence[FrameCamera], height_range: tuple[float, float]) -> float:
    mid = float(np.mean(height_range))
    return float(np.mean([abs(c.center[2] - mid) / np.mean([c.intrinsics.fx, c.intrinsics.fy]) for c in cameras]))


def auto_pairs(cameras: Sequence[FrameCamera], height_range: tuple[float, float]) -> list[tuple[int, int]]:
    pairs = [(c.first, c.second) for c in select_pairs(list(cameras), height_range)]
    if not pairs:
        raise InputError(
            f"no two images overlap enough to be matched ({MIN_OVERLAP:.0%} of their ground footprints, "
            f"base-to-height {BASE_TO_HEIGHT[0]:g}-{BASE_TO_HEIGHT[1]:g}, views within {MAX_VIEW_ANGLE_DEG:g} degrees "
            "and not too oblique to their baseline); check the cameras and --height-range"
        )
    return pairs


def labelled_points(
    cameras: Sequence[FrameCamera],
    images: Mapping[str, np.ndarray],
    footprints: Sequence[shapely.Polygon],
    height_range: tuple[float, float],
    pairs: Sequence[tuple[int, int]],
    scale: float = 1.0,
    spacing: float = DEFAULT_SPACING,
) -> tuple[MatchedImages, np.ndarray]:
    """The matched `pairs` thinned to one averaged point per cube of side `spacing`, and
    the points' ASPRS classes (n,)."""
    matched = match_images(cameras, images, height_range, pairs, scale, spacing=spacing)
    xyz, rgb = thin(matched.xyz, matched.rgb, spacing)
    thinned = MatchedImages(xyz, rgb, matched.pairs, matched.points_per_pair, matched.skipped)
    return thinned, label_points(xyz, list(footprints), LabelSettings(), rgb)


def run_match(
    cameras_path: str | Path,
    footprints: str | Path,
    out: str | Path,
    height_range: tuple[float, float],
    images_dir: str | Path | None = None,
    pairs: str = "auto",
    scale: float = 1.0,
    spacing: float = DEFAULT_SPACING,
    id_field: str | None = None,
    layer: str | None = None,
    interior: str | Path | None = None,
    crs: str | None = None,
) -> MatchSummary:
    """Matches the images of `cameras_path` and writes the labelled points to `out` (LAZ or LAS).

    `cameras_path` is any orientation file `load_cameras` reads; `interior` and `crs` are
    what some of them need (interior parameters, the world CRS of a table).
    """
    started = time.perf_counter()
    cameras_path, out = Path(cameras_path), Path(out)
    cameras = load_cameras(cameras_path, interior=interior, crs=crs, image_dir=images_dir)
    crs = _common_crs(cameras, cameras_path)
    footprint_set = read_footprints(footprints, id_field=id_field, layer=layer)
    if footprint_set.crs is not None and not horizontal_part(footprint_set.crs).to_2d().equals(horizontal_part(crs).to_2d()):
        raise InputError(
            f"{footprints} is in {footprint_set.crs.name} but the cameras of {cameras_path} are in {crs.name}; "
            "reproject the footprints to the cameras' CRS (e.g. with ogr2ogr -t_srs)"
        )
    polygons = [f.polygon for f in footprint_set.footprints]
    low, high = sorted(float(h) for h in height_range)
    if not high > low:
        raise InputError(f"--height-range {low} {high}: the highest height must exceed the lowest")
    given = _parse_pairs(pairs, cameras, cameras_path)
    chosen = given or auto_pairs(cameras, (low, high))
    paired = [cameras[i] for i in sorted({i for pair in chosen for i in pair})]
    images = ImagesOnDemand(paired, cameras_path, images_dir)
    matched, classes = labelled_points(cameras, images, polygons, (low, high), chosen, scale, spacing)
    if given and matched.skipped:
        raise InputError(f"--pairs: {matched.skipped[0]} (or drop that pair from --pairs)")
    if not matched.pairs:
        raise InputError(f"{cameras_path}: no image pair could be matched: {'; '.join(matched.skipped)}")
    if len(matched.xyz) == 0:
        reasons = f" ({'; '.join(matched.skipped)})" if matched.skipped else ""
        raise InputError(f"{cameras_path}: the images gave no points{reasons}; check the orientations and --height-range")
    write_points_laz(out, matched.xyz, matched.rgb, classes, crs)
    names = tuple((cameras[a].name, cameras[b].name) for a, b in matched.pairs)
    counts = {int(c): int(n) for c, n in zip(*np.unique(classes, return_counts=True))}
    return MatchSummary(out, len(matched.xyz), names, tuple(matched.points_per_pair), counts,
                        time.perf_counter() - started, tuple(matched.skipped))


def _common_crs(cameras: Sequence[FrameCamera], path: Path) -> pyproj.CRS:
    crs = {c.crs.to_wkt() if c.crs is not None else None for c in cameras}
    if None in crs or len(crs) != 1:
        raise InputError(f"{path}: the cameras must share one CRS to give a point cloud in it")
    return cameras[0].crs


def _parse_pairs(text: str, cameras: Sequence[FrameCamera], path: Path) -> list[tuple[int, int]] | None:
    """None for "auto", else the pairs of "NAME1:NAME2,NAME3:NAME4" as camera indices."""
    if text.strip().lower() == "auto":
        return None
    index = {c.name: i for i, c in enumerate(cameras)}
    pairs, seen = [], set()
    for item in text.split(","):
        names = [n.strip() for n in item.split(":")]
        if len(names) != 2 or names[0] == names[1]:
            raise InputError(f"--pairs {text!r}: give 'auto' or pairs of two different camera names, e.g. A:B,B:C")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise InputError(f"--pairs: no camera {unknown[0]!r} in {path}")
        if frozenset(names) in seen:
            # A pair matched twice would confirm its own mismatches in the cross-pair check.
            raise InputError(f"--pairs {text!r}: {names[0]}:{names[1]} is given twice (in either order); give each pair once")
        seen.add(frozenset(names))
        pairs.append((index[names[0]], index[names[1]]))
    return pairs


def write_points_laz(path: Path, xyz: np.ndarray, rgb: np.ndarray, classes: np.ndarray, crs: pyproj.CRS) -> Path:
    """LAS 1.4 point format 7 (RGB) with the CRS in the header; compressed when `path` ends in .laz."""
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.offsets = np.floor(xyz.min(axis=0))
    header.scales = np.array([0.001, 0.001, 0.001])
    header.add_crs(crs)
    # laspy writes today's date when none is set, and LAS has no "unknown" date: a fixed
    # one keeps the file byte-identical for the same inputs.
    header.creation_date = FIXED_CREATION_DATE
    header.generating_software = "twin match"
    header.system_identifier = "twin dense image matching"
    points = laspy.ScaleAwarePointRecord.zeros(len(xyz), header=header)
    points.x, points.y, points.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points.classification = classes
    # LAS colours are 16-bit: 8-bit values times 257 map 255 to 65535.
    points.red, points.green, points.blue = (rgb[:, k].astype(np.uint16) * 257 for k in range(3))
    with atomic_output(path, "wb") as stream:
        with laspy.LasWriter(stream, header, do_compress=path.suffix.lower() == ".laz", closefd=False) as writer:
            writer.write_points(points)
    return path
