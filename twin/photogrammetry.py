"""`twin match`: a labelled point cloud from overlapping oriented images.

Reads the cameras and their images, matches the chosen pairs densely
(reconstruction.stereo), keeps the points another pair confirms, labels them ground,
building or other with the footprints (reconstruction.labels) and writes a LAS 1.4
point format 7 file with colours, in the cameras' CRS, that `twin build` reads.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import laspy
import numpy as np
import pyproj

from exporters.atomic import atomic_output
from reconstruction.labels import LabelSettings, label_points
from reconstruction.stereo import (
    MatchSettings, consistent_across_pairs, match_pair, rectify_pair, select_pairs, thin,
)
from twin.errors import InputError
from twin.imagery.camera import FrameCamera
from twin.inputs.footprints import read_footprints

DEFAULT_SPACING = 0.25
"""Output point spacing (m): about the ground sampling distance of aerial surveys."""


@dataclass(frozen=True)
class MatchSummary:
    path: Path
    points: int
    pairs: tuple[tuple[str, str], ...]
    points_per_pair: tuple[int, ...]
    class_counts: dict[int, int]
    seconds: float


def match_images(
    cameras: Sequence[FrameCamera],
    images: Sequence[np.ndarray],
    height_range: tuple[float, float],
    pairs: Sequence[tuple[int, int]] | None = None,
    scale: float = 1.0,
    tolerance: float | None = None,
    settings: MatchSettings = MatchSettings(),
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], list[int]]:
    """Confirmed points (n, 3) and colours (n, 3) of the images, the pairs matched and
    the points each pair gave. `pairs` are camera indices; by default `select_pairs` chooses.

    `tolerance` (m) is how close another pair's point must be to confirm one: by default
    three ground sampling distances at the images' mean distance to the scene.
    """
    if len(cameras) < 2:
        raise InputError(f"dense matching needs at least two images, got {len(cameras)}")
    if pairs is None:
        pairs = [(c.first, c.second) for c in select_pairs(list(cameras), height_range)]
    if not pairs:
        raise InputError(
            "no two images overlap enough to be matched (30 % of their ground footprints, base-to-height 0.1-1, "
            "views within 30 degrees); check the cameras and --height-range"
        )
    if tolerance is None:
        tolerance = 3.0 * _ground_sampling_distance(cameras, height_range) / scale
    clouds, colours = [], []
    for first, second in pairs:
        rectified = rectify_pair(cameras[first], cameras[second], scale)
        points = match_pair(rectified, images[first], images[second], height_range, settings)
        clouds.append(points.xyz)
        colours.append(points.rgb)
    kept = consistent_across_pairs(clouds, [(cameras[a], cameras[b]) for a, b in pairs], tolerance)
    xyz = np.vstack([c[k] for c, k in zip(clouds, kept)])
    rgb = np.vstack([c[k] for c, k in zip(colours, kept)])
    return xyz, rgb, list(pairs), [len(c) for c in clouds]


def _ground_sampling_distance(cameras: Sequence[FrameCamera], height_range: tuple[float, float]) -> float:
    mid = float(np.mean(height_range))
    return float(np.mean([abs(c.center[2] - mid) / np.mean([c.intrinsics.fx, c.intrinsics.fy]) for c in cameras]))


def run_match(
    cameras_path: str | Path,
    footprints: str | Path,
    out: str | Path,
    images_dir: str | Path | None = None,
    pairs: str = "auto",
    height_range: tuple[float, float] | None = None,
    scale: float = 1.0,
    spacing: float = DEFAULT_SPACING,
    id_field: str | None = None,
    layer: str | None = None,
) -> MatchSummary:
    """Matches the images of `cameras_path` and writes the labelled points to `out` (LAZ or LAS)."""
    from twin.imagery.images import read_image
    from twin.imagery.readers import load_cameras

    started = time.perf_counter()
    cameras_path, out = Path(cameras_path), Path(out)
    cameras = list(load_cameras(cameras_path))
    crs = _common_crs(cameras, cameras_path)
    footprint_set = read_footprints(footprints, id_field=id_field, layer=layer)
    polygons = [f.polygon for f in footprint_set.footprints]
    if height_range is None:
        raise InputError(
            "the scene's height range is needed to bound the matching: give --height-range with the lowest terrain "
            "and the highest roof in the CRS's heights (e.g. --height-range 40 90)"
        )
    low, high = sorted(float(h) for h in height_range)
    if not high > low:
        raise InputError(f"--height-range {low} {high}: the highest height must exceed the lowest")
    chosen = _parse_pairs(pairs, cameras, cameras_path)
    needed = sorted({i for pair in chosen for i in pair}) if chosen is not None else range(len(cameras))
    images = {index: read_image(_image_path(cameras[index], images_dir, cameras_path)) for index in needed}
    for index, image in images.items():
        expected = (cameras[index].intrinsics.height, cameras[index].intrinsics.width)
        if image.shape[:2] != expected:
            raise InputError(
                f"{_image_path(cameras[index], images_dir, cameras_path)}: the image is {image.shape[1]} x {image.shape[0]} "
                f"pixels but camera {cameras[index].name!r} of {cameras_path} says {expected[1]} x {expected[0]}"
            )
    image_list = [images.get(index) for index in range(len(cameras))]
    xyz, rgb, matched, per_pair = match_images(cameras, image_list, (low, high), chosen, scale)
    xyz, rgb = thin(xyz, rgb, spacing)
    if len(xyz) == 0:
        raise InputError(f"{cameras_path}: the images gave no points; check the orientations and --height-range")
    classes = label_points(xyz, polygons, LabelSettings())
    write_points_laz(out, xyz, rgb, classes, crs)
    names = tuple((cameras[a].name, cameras[b].name) for a, b in matched)
    counts = {int(c): int(n) for c, n in zip(*np.unique(classes, return_counts=True))}
    return MatchSummary(out, len(xyz), names, tuple(per_pair), counts, time.perf_counter() - started)


def _common_crs(cameras: Sequence[FrameCamera], path: Path) -> pyproj.CRS:
    crs = {c.crs.to_wkt() if c.crs is not None else None for c in cameras}
    if None in crs or len(crs) != 1:
        raise InputError(f"{path}: the cameras must share one CRS to give a point cloud in it")
    return cameras[0].crs


def _image_path(camera: FrameCamera, images_dir: str | Path | None, cameras_path: Path) -> Path:
    if camera.image is None:
        raise InputError(f"{cameras_path}: camera {camera.name!r} names no image; add its \"image\"")
    if images_dir is None:
        return Path(camera.image)
    return Path(images_dir) / Path(camera.image).name


def _parse_pairs(text: str, cameras: Sequence[FrameCamera], path: Path) -> list[tuple[int, int]] | None:
    """None for "auto", else the pairs of "NAME1:NAME2,NAME3:NAME4" as camera indices."""
    if text.strip().lower() == "auto":
        return None
    index = {c.name: i for i, c in enumerate(cameras)}
    pairs = []
    for item in text.split(","):
        names = [n.strip() for n in item.split(":")]
        if len(names) != 2 or names[0] == names[1]:
            raise InputError(f"--pairs {text!r}: give 'auto' or pairs of two different camera names, e.g. A:B,B:C")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise InputError(f"--pairs: no camera {unknown[0]!r} in {path}")
        pairs.append((index[names[0]], index[names[1]]))
    return pairs


def write_points_laz(path: Path, xyz: np.ndarray, rgb: np.ndarray, classes: np.ndarray, crs: pyproj.CRS) -> Path:
    """LAS 1.4 point format 7 (RGB) with the CRS in the header; compressed when `path` ends in .laz."""
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.offsets = np.floor(xyz.min(axis=0))
    header.scales = np.array([0.001, 0.001, 0.001])
    header.add_crs(crs)
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
