"""Reading the images of oriented cameras as 8-bit RGB arrays."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from twin.errors import InputError
from twin.imagery.camera import FrameCamera


# Aerial TIFFs carry GeoTIFF tags OpenCV does not know; it would warn about each on every read.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# Bit depths of camera sensors and their files: a 16-bit file often holds 10, 12 or 14 bits.
_STANDARD_DEPTHS = (8, 10, 12, 14, 16)


def read_image(path: str | os.PathLike, bits: int | None = None) -> np.ndarray:
    """An image file as an (h, w, 3) uint8 RGB array.

    Grey images are repeated over the three channels and an alpha channel is dropped.
    Integer images deeper than 8 bits are scaled by 255 / (2**bits - 1), values above that
    clipped. `bits` is the sensor's depth when given; otherwise it is guessed for each image
    as the smallest of 8, 10, 12, 14 and 16 bits that holds the image's largest value
    (beyond 16 bits, the width of its integer type). So a 12-bit frame in a 16-bit file gets
    255/4095 rather than a dark 255/65535, but a dark frame whose values all stay below
    1024 is read as 10-bit, four times brighter than its 12-bit neighbours: give `bits` to
    read every frame of a sensor on one scale. Floating-point images in 0..1 are scaled by
    255, others by their largest value.
    """
    if bits is not None and not 8 <= bits <= 32:
        raise ValueError(f"bits must be a sensor depth of 8 to 32 bits, got {bits}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found; check the image folder given with the camera file")
    # np.fromfile + imdecode rather than imread: imread fails silently on non-ASCII paths on Windows.
    # libtiff warns about every GeoTIFF and EXIF tag it does not know: keep it quiet while decoding.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        data = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if data is None:
        raise InputError(f"{path}: cannot read it as an image (OpenCV reads TIFF, JPEG, PNG, JPEG 2000, WebP...)")
    if data.ndim == 2:
        data = data[:, :, None]
    channels = data.shape[2]
    if channels not in (1, 3, 4):
        raise InputError(f"{path}: has {channels} bands; give an RGB, RGBA or grey image")
    if data.dtype != np.uint8:
        values = data.astype(np.float64)
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 0.0
        if np.issubdtype(data.dtype, np.integer):
            top = float(2 ** (bits or _integer_depth(int(top), data.dtype)) - 1)
        elif top <= 1.0:
            top = 1.0
        scale = 255.0 / top if top > 0 else 0.0
        data = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
    if channels == 1:
        return np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data[:, :, 2::-1])  # OpenCV's BGR(A) to RGB


def _integer_depth(largest: int, dtype: np.dtype) -> int:
    """The smallest standard bit depth holding `largest`, else the width of the integer type."""
    needed = largest.bit_length()
    return next((depth for depth in _STANDARD_DEPTHS if needed <= depth), np.dtype(dtype).itemsize * 8)


def check_image_size(camera: FrameCamera, image: np.ndarray, path: str | os.PathLike) -> None:
    """InputError unless the image has the size the camera's interior orientation was made for."""
    height, width = image.shape[:2]
    expected = (camera.intrinsics.width, camera.intrinsics.height)
    if (width, height) != expected:
        raise InputError(
            f"{path}: the image is {width} x {height} pixels but camera {camera.name!r} is calibrated for "
            f"{expected[0]} x {expected[1]}; give the images the orientation was computed with (or scale the interior orientation)"
        )


class ImagesOnDemand(Mapping[str, np.ndarray]):
    """Camera name -> RGB image, read from its file when asked for and kept for the next
    `keep` asks: a block of hundreds of large frames would not fit in memory at once.

    Every camera's file is checked when this is made (it is named, exists and is in a
    format OpenCV reads), so that a run stops before its long part rather than in it; an
    image's size is checked against its camera when it is read. With `images_dir`, the
    files are looked for there, by name, instead of where `source` (the camera file) says.
    """

    def __init__(
        self,
        cameras: Sequence[FrameCamera],
        source: str | os.PathLike,
        images_dir: str | os.PathLike | None = None,
        keep: int = 4,
    ) -> None:
        self._cameras = {c.name: c for c in cameras}
        self._paths = {c.name: _checked_image_path(c, source, images_dir) for c in cameras}
        self._read = functools.lru_cache(maxsize=keep)(self._load)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._read(name)

    def __iter__(self):
        return iter(self._cameras)

    def __len__(self) -> int:
        return len(self._cameras)

    def _load(self, name: str) -> np.ndarray:
        camera, path = self._cameras[name], self._paths[name]
        image = read_image(path)
        check_image_size(camera, image, path)
        return image


def _checked_image_path(camera: FrameCamera, source: str | os.PathLike, images_dir: str | os.PathLike | None) -> Path:
    if camera.image is None:
        raise InputError(f'{source}: camera {camera.name!r} names no image; give its "image" file')
    path = Path(camera.image) if images_dir is None else Path(images_dir) / Path(camera.image).name
    if not path.is_file():
        folder = f"the image paths in {source}" if images_dir is None else f"the images folder {images_dir}"
        raise InputError(f"{path}: image not found for camera {camera.name!r}; check {folder}")
    if not cv2.haveImageReader(str(path)):
        raise InputError(
            f"{path}: the image of camera {camera.name!r} is not in a format OpenCV reads (JPEG, TIFF, PNG...); convert it"
        )
    return path
