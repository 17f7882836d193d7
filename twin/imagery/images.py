"""Reading the images of oriented cameras as 8-bit RGB arrays."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from twin.errors import InputError
from twin.imagery.camera import FrameCamera


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an (h, w, 3) uint8 RGB array.

    Grey images are repeated over the three channels and an alpha channel is dropped.
    Deeper integer images are scaled by the bit depth their largest value needs (a 12-bit
    frame in a 16-bit file by 255/4095, as a fixed 255/65535 would leave it dark), so that
    the frames of one sensor keep one scale; floating-point images in 0..1 by 255, others by
    their largest value.
    """
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
            top = float(2 ** max(8, int(top).bit_length()) - 1)
        elif top <= 1.0:
            top = 1.0
        scale = 255.0 / top if top > 0 else 0.0
        data = np.clip(np.nan_to_num(values * scale), 0, 255).round().astype(np.uint8)
    if channels == 1:
        return np.repeat(data, 3, axis=2)
    return np.ascontiguousarray(data[:, :, 2::-1])  # OpenCV's BGR(A) to RGB


def check_image_size(camera: FrameCamera, image: np.ndarray, path: str | os.PathLike) -> None:
    """InputError unless the image has the size the camera's interior orientation was made for."""
    height, width = image.shape[:2]
    expected = (camera.intrinsics.width, camera.intrinsics.height)
    if (width, height) != expected:
        raise InputError(
            f"{path}: the image is {width} x {height} pixels but camera {camera.name!r} is calibrated for "
            f"{expected[0]} x {expected[1]}; give the images the orientation was computed with (or scale the interior orientation)"
        )
