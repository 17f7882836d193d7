"""Dense photogrammetric points from overlapping oriented frame images.

A pair of images is rectified to a common orientation whose x axis runs along the
baseline, matched densely by OpenCV's semi-global matching (both ways, for a
left-right consistency check), and every consistent disparity is triangulated back to
world coordinates. With more than two images, a point is kept only where another pair
saw the same surface (`confirmed_by_other_pairs`).

Pure functions on numpy arrays and `FrameCamera`s; images are (h, w, 3) RGB or (h, w)
grey uint8 arrays.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from twin.imagery.camera import FrameCamera

_BORDER_SAMPLES = 32
"""Points per image side used to find where an image lands in the rectified frame."""
_MAX_RECTIFIED_GROWTH = 2.0
"""A rectified image may be at most this many times the original's larger side."""
_MAX_REMAP_SIDE = 32767
"""cv2.remap takes images of fewer pixels than this a side."""
MAX_DISPARITIES = 2047
"""OpenCV's semi-global matcher stores 16 x the disparity in 16-bit integers: larger ones wrap."""


@dataclass(frozen=True)
class RectifiedPair:
    """Two cameras turned to a common attitude with the baseline along the image rows.

    Both rectified images share `rotation` (world to rectified camera axes) and the
    camera matrix `matrix`, so a point's disparity (left column - right column) is
    `focal * baseline / depth`, depth measured along the common optical axis.
    """

    left: FrameCamera
    right: FrameCamera
    rotation: np.ndarray
    matrix: np.ndarray
    size: tuple[int, int]
    """(width, height) of both rectified images."""
    baseline: float
    scale: float = 1.0
    """The resize factor of the rectified images relative to the originals."""

    @property
    def focal(self) -> float:
        return float(self.matrix[0, 0])

    def remap(self, left_image: np.ndarray, right_image: np.ndarray, right_shift: int = 0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The rectified left and right images and the masks of their pixels that come from the
        images; the right one moved `right_shift` columns to the right, so that a disparity d
        reads d - right_shift between them. Maps are built here, one image at a time, rather
        than kept: each is two floats per pixel of the rectified canvas."""
        rectified, valid = [], []
        for camera, image, shift in ((self.left, left_image, 0), (self.right, right_image, right_shift)):
            matrix = self.matrix.copy()
            matrix[0, 2] += shift
            map_x, map_y = cv2.initUndistortRectifyMap(camera.intrinsics.matrix, camera.intrinsics.distortion,
                                                       self.rotation @ camera.rotation.T, matrix, self.size, cv2.CV_32FC1)
            if self.scale < 1.0:
                # Blurred first so that the bilinear resampling does not alias: the sigma that
                # takes an image of unit blur to the blur of the coarser grid.
                image = cv2.GaussianBlur(image, (0, 0), 0.5 * math.sqrt(1.0 / self.scale**2 - 1.0))
            rectified.append(cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
            height, width = image.shape[:2]
            valid.append((map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1))
        return rectified[0], rectified[1], valid[0], valid[1]

    def rays(self, columns: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """World directions (n, 3) through rectified pixels, scaled to unit depth along the common axis."""
        local = np.column_stack([(columns - self.matrix[0, 2]) / self.focal, (rows - self.matrix[1, 2]) / self.focal,
                                 np.ones(len(columns))])
        return local @ self.rotation

    def triangulate(self, columns: np.ndarray, rows: np.ndarray, disparities: np.ndarray) -> np.ndarray:
        """World points (n, 3) of left rectified pixels with their disparities (> 0)."""
        depth = self.focal * self.baseline / disparities
        return self.left.center + self.rays(columns, rows) * depth[:, None]


def rectify_pair(first: FrameCamera, second: FrameCamera, scale: float = 1.0) -> RectifiedPair:
    """Rectifies two cameras (either order, any baseline direction), `scale` resizing the images.

    Written by hand rather than with cv2.stereoRectify: OpenCV rectifies vertically (rows
    of disparity along the image columns) when the baseline runs along the images' y
    axis, as it does between images of one flight line when the camera's long side is
    across track, and its semi-global matcher only searches along rows. Here the common
    x axis is always the baseline (Fusiello's construction), so any pair matches along
    rows; OpenCV still builds the undistort-and-rectify maps with each camera's distortion.
    Raises ValueError when the pair cannot be rectified (`rectification_problem`) or its
    rectified images would be too large for OpenCV to resample at this scale.
    """
    rotation, baseline, corners, focal = _rectified_frame(first, second)
    problem = _growth_problem(first, second, corners, focal)
    if problem:
        raise ValueError(problem)
    focal *= scale
    lower = np.floor(corners.min(axis=0) * focal)
    upper = np.ceil(corners.max(axis=0) * focal)
    size = (int(upper[0] - lower[0]) + 1, int(upper[1] - lower[1]) + 1)
    if max(size) >= _MAX_REMAP_SIDE:
        raise ValueError(
            f"cameras {first.name!r} and {second.name!r} would need a rectified image of {size[0]} x {size[1]} pixels, "
            f"more than OpenCV resamples ({_MAX_REMAP_SIDE - 1}); match them at a lower scale"
        )
    matrix = np.array([[focal, 0.0, -lower[0]], [0.0, focal, -lower[1]], [0.0, 0.0, 1.0]])
    return RectifiedPair(first, second, rotation, matrix, size, baseline, scale)


def rectification_problem(first: FrameCamera, second: FrameCamera) -> str | None:
    """Why two cameras cannot be rectified together at any scale (they share their centre,
    look along their baseline or too obliquely to it), or None when they can."""
    try:
        _, _, corners, focal = _rectified_frame(first, second)
    except ValueError as error:
        return str(error)
    return _growth_problem(first, second, corners, focal)


def _rectified_frame(first: FrameCamera, second: FrameCamera) -> tuple[np.ndarray, float, np.ndarray, float]:
    """The common rotation (world to rectified axes), the baseline length, the normalised
    rectified coordinates (n, 2) of both images' borders and the common focal at full scale."""
    baseline_vector = second.center - first.center
    baseline = float(np.linalg.norm(baseline_vector))
    if baseline <= 0:
        raise ValueError(f"cameras {first.name!r} and {second.name!r} share their centre: no stereo base")
    x_axis = baseline_vector / baseline
    forward = first.viewing_direction + second.viewing_direction
    y_axis = np.cross(forward, x_axis)
    if np.linalg.norm(y_axis) < 1e-9:
        raise ValueError(f"cameras {first.name!r} and {second.name!r} look along their baseline: they cannot be rectified")
    y_axis /= np.linalg.norm(y_axis)
    rotation = np.vstack([x_axis, y_axis, np.cross(x_axis, y_axis)])
    focal = float(np.mean([first.intrinsics.fx, first.intrinsics.fy, second.intrinsics.fx, second.intrinsics.fy]))
    corners = np.vstack([_rectified_border(camera, rotation) for camera in (first, second)])
    return rotation, baseline, corners, focal


def _growth_problem(first: FrameCamera, second: FrameCamera, corners: np.ndarray, focal: float) -> str | None:
    largest = _MAX_RECTIFIED_GROWTH * max(first.intrinsics.width, first.intrinsics.height,
                                          second.intrinsics.width, second.intrinsics.height)
    if np.any((corners.max(axis=0) - corners.min(axis=0)) * focal > largest):
        return (f"cameras {first.name!r} and {second.name!r}: their rectified images would be over "
                f"{_MAX_RECTIFIED_GROWTH:g} times the size of the originals: views too oblique to the baseline")
    return None


def _rectified_border(camera: FrameCamera, rotation: np.ndarray) -> np.ndarray:
    """Normalised rectified coordinates (n, 2) of the camera's image border."""
    width, height = camera.intrinsics.width, camera.intrinsics.height
    u = np.linspace(-0.5, width - 0.5, _BORDER_SAMPLES)
    v = np.linspace(-0.5, height - 0.5, _BORDER_SAMPLES)
    border = np.vstack([np.column_stack([u, np.full_like(u, -0.5)]), np.column_stack([u, np.full_like(u, height - 0.5)]),
                        np.column_stack([np.full_like(v, -0.5), v]), np.column_stack([np.full_like(v, width - 0.5), v])])
    local = camera.rays(border) @ rotation.T
    if np.any(local[:, 2] <= 1e-6):
        raise ValueError(f"camera {camera.name!r} sees beyond 90 degrees of the pair's common axis: cannot rectify")
    return local[:, :2] / local[:, 2:3]


@dataclass(frozen=True)
class DisparityRange:
    minimum: int
    count: int
    """A multiple of 16, as the semi-global matcher needs."""


def disparity_range(pair: RectifiedPair, height_range: tuple[float, float], margin_px: int = 2,
                    samples: int = 48) -> DisparityRange | None:
    """The disparities of scene points between heights `height_range` (world z) seen by both
    images, or None when the images share no view of that height range.

    Left rectified pixels on a grid are cast onto the lowest and highest planes; where
    both cameras see the intersection, its depth gives the disparity.
    """
    width, height = pair.size
    columns, rows = (a.ravel() for a in np.meshgrid(np.linspace(0, width - 1, samples), np.linspace(0, height - 1, samples)))
    directions = pair.rays(columns, rows)
    disparities = []
    for plane_z in height_range:
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = (plane_z - pair.left.center[2]) / directions[:, 2]
        ahead = np.isfinite(depth) & (depth > 0)
        points = pair.left.center + directions[ahead] * depth[ahead, None]
        seen = np.ones(len(points), dtype=bool)
        for camera in (pair.left, pair.right):
            pixels, camera_depth = camera.project(points)
            seen &= camera.inside(pixels) & (camera_depth > 0)
        disparities.append(pair.focal * pair.baseline / depth[ahead][seen])
    disparities = np.concatenate(disparities)
    if len(disparities) == 0:
        return None
    minimum = max(int(math.floor(disparities.min())) - margin_px, 0)
    span = int(math.ceil(disparities.max())) + margin_px - minimum
    return DisparityRange(minimum, max(16, 16 * math.ceil(span / 16)))


@dataclass(frozen=True)
class MatchSettings:
    """Semi-global matching parameters (OpenCV's names); penalties scale with the block area."""

    block_size: int = 5
    uniqueness_ratio: int = 10
    speckle_window: int = 100
    speckle_range_px: int = 2
    left_right_tolerance_px: float = 1.0
    smoothness_small: int = 8
    """P1 per pixel of the block (grey images): the cost of a disparity change of one pixel."""
    smoothness_large: int = 32
    """P2 per pixel of the block: the cost of a larger jump (an edge)."""


@dataclass(frozen=True)
class PairPoints:
    """The points a pair of images gives: world coordinates and colours from the left image."""

    xyz: np.ndarray
    rgb: np.ndarray


def match_pair(pair: RectifiedPair, left_image: np.ndarray, right_image: np.ndarray, height_range: tuple[float, float],
               settings: MatchSettings = MatchSettings()) -> PairPoints:
    """Dense points of a rectified pair between the scene's lowest and highest heights.

    `left_image` and `right_image` are the original (distorted) images of
    `pair.left` and `pair.right`, at their cameras' full resolution.
    """
    names = (pair.left.name, pair.right.name)
    empty = PairPoints(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8))
    low, high = sorted(height_range)
    search = disparity_range(pair, (low, high))
    if search is None:
        return empty
    if search.count > MAX_DISPARITIES:
        raise ValueError(
            f"cameras {names[0]!r} and {names[1]!r}: {search.count} disparities to search, more than the matcher "
            f"handles ({MAX_DISPARITIES}); narrow the height range or match at a lower scale"
        )
    # The matcher searches from 0 in a right image moved by the smallest disparity: large
    # disparities (long baselines in pixels, as large-format cameras have) would wrap otherwise.
    shift = search.minimum
    left, right, left_valid, right_valid = pair.remap(_rgb(left_image), _rgb(right_image), right_shift=shift)
    left_grey, right_grey = (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (left, right))
    matcher = _matcher(DisparityRange(0, search.count), settings)
    left_disparity = matcher.compute(left_grey, right_grey).astype(np.float32) / 16.0
    # The right image's disparities: the same matcher on both images mirrored, which turns
    # the right image into a left one with the same (positive) disparities.
    right_disparity = np.fliplr(matcher.compute(np.fliplr(right_grey).copy(), np.fliplr(left_grey).copy())).astype(np.float32) / 16.0

    rows, columns = np.nonzero(left_valid & (left_disparity >= 0))
    measured = left_disparity[rows, columns]
    right_columns = np.rint(columns - measured).astype(np.int64)
    inside = (right_columns >= 0) & (right_columns < pair.size[0])
    rows, columns, measured, right_columns = rows[inside], columns[inside], measured[inside], right_columns[inside]
    back = right_disparity[rows, right_columns]
    disparity = measured + shift
    consistent = (right_valid[rows, right_columns] & (back >= 0)
                  & (np.abs(back - measured) <= settings.left_right_tolerance_px) & (disparity > 0))
    rows, columns, disparity = rows[consistent], columns[consistent], disparity[consistent]
    xyz = pair.triangulate(columns.astype(float), rows.astype(float), disparity.astype(float))
    # The search range is padded and rounded up to 16 disparities: points well outside the
    # height range come from that padding and are mismatches.
    margin = 0.1 * (high - low) + 1.0
    keep = (xyz[:, 2] >= low - margin) & (xyz[:, 2] <= high + margin)
    return PairPoints(xyz[keep], left[rows[keep], columns[keep]])


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be 8-bit, got {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    raise ValueError(f"images must be grey or RGB, got an array of shape {image.shape}")


def _matcher(search: DisparityRange, settings: MatchSettings):
    area = settings.block_size * settings.block_size
    return cv2.StereoSGBM_create(
        minDisparity=search.minimum, numDisparities=search.count, blockSize=settings.block_size,
        P1=settings.smoothness_small * area, P2=settings.smoothness_large * area, disp12MaxDiff=-1,
        uniquenessRatio=settings.uniqueness_ratio, speckleWindowSize=settings.speckle_window,
        speckleRange=settings.speckle_range_px, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    )


def confirmed_by_other_pairs(clouds: list[np.ndarray], tolerance: float) -> list[np.ndarray]:
    """For each pair's points (n_i, 3), which ones another pair also found within about `tolerance`.

    Points fall in cubes of side `tolerance`; a point is confirmed when a cube among its
    own and its 26 neighbours holds a point of another pair, so confirmed points lie
    within `tolerance` to `2 sqrt(3) tolerance` of another pair's. Cubes rather than
    nearest-neighbour queries: one sorted search per neighbour for all pairs at once,
    however many pairs there are.
    """
    if len(clouds) < 2:
        return [np.zeros(len(c), dtype=bool) for c in clouds]
    points = np.vstack(clouds)
    owner = np.repeat(np.arange(len(clouds)), [len(c) for c in clouds])
    if len(points) == 0:
        return [np.zeros(0, dtype=bool) for _ in clouds]
    keys, extent = _cube_keys(points, tolerance)
    if float(np.prod(extent.astype(float))) * len(clouds) >= 2.0**62:
        raise ValueError(f"the points span too large a volume for a tolerance of {tolerance} m")
    # Per occupied cube: how many pairs saw it and the smallest of them.
    cube_pairs = np.unique(keys * len(clouds) + owner)
    cube_keys, first_index, pair_counts = np.unique(cube_pairs // len(clouds), return_index=True, return_counts=True)
    first_pair = cube_pairs[first_index] % len(clouds)
    confirmed = np.zeros(len(points), dtype=bool)
    for dx, dy, dz in itertools.product((-1, 0, 1), repeat=3):
        neighbour = keys + (dx * extent[1] + dy) * extent[2] + dz
        index = np.minimum(np.searchsorted(cube_keys, neighbour), len(cube_keys) - 1)
        found = cube_keys[index] == neighbour
        confirmed |= found & ((pair_counts[index] >= 2) | (first_pair[index] != owner))
    return np.split(confirmed, np.cumsum([len(c) for c in clouds])[:-1])


def _cube_keys(points: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """One int64 key (n,) per cube of side `size` holding each point, and the extent of the
    cube indices; the cube one step along x, y or z has key + extent[1] * extent[2], + extent[2], + 1."""
    cells = np.floor(points / size).astype(np.int64)
    cells -= cells.min(axis=0) - 1  # every neighbour index stays >= 0
    extent = cells.max(axis=0) + 2
    if float(np.prod(extent.astype(float))) >= 2.0**62:
        raise ValueError(f"the points span too large a volume for cubes of {size} m")
    return (cells[:, 0] * extent[1] + cells[:, 1]) * extent[2] + cells[:, 2], extent


def consistent_across_pairs(clouds: list[np.ndarray], pair_cameras: list[tuple[FrameCamera, FrameCamera]],
                            tolerance: float, margin_px: float = 8.0) -> list[np.ndarray]:
    """For each pair's points (n_i, 3), which ones to keep: those another pair confirms
    (`confirmed_by_other_pairs`), and those no other pair could check because no other
    pair has both its images over them (parts of a survey seen by two images only).
    Occlusions are not modelled: a point another pair would see but for a wall is dropped."""
    confirmed = confirmed_by_other_pairs(clouds, tolerance)
    boxes = [(c[:, :2].min(axis=0), c[:, :2].max(axis=0)) if len(c) else None for c in clouds]
    kept = []
    for index, (cloud, agreed) in enumerate(zip(clouds, confirmed)):
        doubtful = cloud[~agreed]
        seen: dict[int, np.ndarray] = {}  # per camera (by identity), so each projects the points once
        checkable = np.zeros(len(doubtful), dtype=bool)
        for other, cameras in enumerate(pair_cameras):
            # Only pairs whose points reach this pair's area: in a large block, the others are
            # elsewhere, and testing them all would grow with the square of the pairs.
            if other != index and _boxes_meet(boxes[index], boxes[other], tolerance):
                for camera in cameras:
                    if id(camera) not in seen:
                        seen[id(camera)] = _seen_by(doubtful, camera, margin_px)
                checkable |= seen[id(cameras[0])] & seen[id(cameras[1])]
        keep = agreed.copy()
        keep[np.flatnonzero(~agreed)[~checkable]] = True
        kept.append(keep)
    return kept


def _boxes_meet(a, b, margin: float) -> bool:
    return a is not None and b is not None and bool(np.all(a[0] - margin <= b[1]) and np.all(b[0] - margin <= a[1]))


def _seen_by(points: np.ndarray, camera: FrameCamera, margin_px: float) -> np.ndarray:
    pixels, depth = camera.project(points)
    return camera.inside(pixels, margin_px) & (depth > 0)


def thin(xyz: np.ndarray, rgb: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """One point per cube of side `spacing`: the mean of its points and of their colours,
    in the order of the cubes (so the result does not depend on the input order)."""
    if len(xyz) == 0:
        return xyz, rgb
    keys, _ = _cube_keys(xyz, spacing)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    means = np.column_stack([np.bincount(inverse, weights=xyz[:, k]) for k in range(3)]) / counts[:, None]
    colours = np.column_stack([np.bincount(inverse, weights=rgb[:, k]) for k in range(3)]) / counts[:, None]
    return means, np.rint(colours).astype(np.uint8)


@dataclass(frozen=True)
class PairChoice:
    first: int
    second: int
    overlap: float
    """Share of the smaller ground footprint the two images share."""


MIN_OVERLAP = 0.3
"""`select_pairs`' defaults: share of the smaller ground footprint two images must share..."""
BASE_TO_HEIGHT = (0.1, 1.0)
"""... the range of their base-to-height ratio..."""
MAX_VIEW_ANGLE_DEG = 30.0
"""... the largest angle between their optical axes..."""
PARTNERS = 2
"""... and the pairs each camera gets at least."""


def select_pairs(cameras: list[FrameCamera], height_range: tuple[float, float], min_overlap: float = MIN_OVERLAP,
                 base_to_height: tuple[float, float] = BASE_TO_HEIGHT, max_angle_deg: float = MAX_VIEW_ANGLE_DEG,
                 partners: int = PARTNERS) -> list[PairChoice]:
    """Pairs of cameras worth matching: ground footprints (on the mid height plane) that
    overlap by at least `min_overlap`, a base-to-height ratio in `base_to_height` (too
    small: poor depth; too large: too different views to match), optical axes within
    `max_angle_deg` and views that can be rectified together (`rectification_problem`).
    Each camera gets at least its `partners` best pairs by shared area, when it has that many."""
    mid = float(np.mean(height_range))
    footprints = [_ground_footprint(camera, mid) for camera in cameras]
    candidates = []
    for i, j in itertools.combinations(range(len(cameras)), 2):
        a, b = footprints[i], footprints[j]
        if a is None or b is None:
            continue
        shared = a.intersection(b)
        if shared.is_empty:
            continue
        overlap = shared.area / min(a.area, b.area)
        centre = np.array([shared.centroid.x, shared.centroid.y, mid])
        distance = 0.5 * (np.linalg.norm(cameras[i].center - centre) + np.linalg.norm(cameras[j].center - centre))
        ratio = float(np.linalg.norm(cameras[i].center - cameras[j].center) / distance)
        cosine = float(np.clip(cameras[i].viewing_direction @ cameras[j].viewing_direction, -1.0, 1.0))
        if (overlap >= min_overlap and base_to_height[0] <= ratio <= base_to_height[1]
                and math.degrees(math.acos(cosine)) <= max_angle_deg
                and rectification_problem(cameras[i], cameras[j]) is None):
            candidates.append(PairChoice(i, j, float(overlap)))
    candidates.sort(key=lambda c: (-c.overlap * min(footprints[c.first].area, footprints[c.second].area), c.first, c.second))
    chosen, taken = [], {}
    for candidate in candidates:
        if taken.get(candidate.first, 0) < partners or taken.get(candidate.second, 0) < partners:
            chosen.append(candidate)
            for index in (candidate.first, candidate.second):
                taken[index] = taken.get(index, 0) + 1
    return sorted(chosen, key=lambda c: (c.first, c.second))


def _ground_footprint(camera: FrameCamera, plane_z: float) -> shapely.Polygon | None:
    """Where the image's border rays meet the horizontal plane at `plane_z`; None when some miss it."""
    width, height = camera.intrinsics.width, camera.intrinsics.height
    u = np.linspace(-0.5, width - 0.5, 8)
    v = np.linspace(-0.5, height - 0.5, 8)
    border = np.vstack([np.column_stack([u, np.full_like(u, -0.5)]), np.column_stack([np.full_like(v, width - 0.5), v]),
                        np.column_stack([u[::-1], np.full_like(u, height - 0.5)]), np.column_stack([np.full_like(v, -0.5), v[::-1]])])
    rays = camera.rays(border)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = (plane_z - camera.center[2]) / rays[:, 2]
    if not np.all(np.isfinite(distance) & (distance > 0)):
        return None
    ground = camera.center[:2] + rays[:, :2] * distance[:, None]
    polygon = shapely.Polygon(ground).buffer(0)
    return polygon if polygon.area > 0 else None
