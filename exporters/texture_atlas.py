"""Packing surface texture patches into one atlas image, shared by the textured exporters.

A shelf packer written here rather than taken from a library: patches come sorted by
height into rows, which packs aerial facade and roof patches (many of similar height) to
about 80-90 % fill, is deterministic by construction, and needs no dependency; the
maintained rectangle packers on PyPI add search heuristics that buy a few per cent of fill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

PADDING = 2
"""Pixels of each patch's edge colour repeated around it, so that bilinear filtering and the
first mipmap level never blend a neighbouring patch into a face (coarser mipmap levels, seen
from afar, may blend a little)."""
MIN_PATCH_SIDE = 2
FILL = 0.7
"""Share of an atlas that patches may fill at full resolution when grouping them into atlases:
the shelf packer leaves gaps, and a group that does not fit gets all its patches scaled down."""
JPEG_OPTIONS = (cv2.IMWRITE_JPEG_OPTIMIZE, 1)
"""Optimised Huffman tables: a few per cent smaller, and still the same bytes for the same image."""


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """An RGB uint8 image as JPEG bytes (deterministic for a given image and quality)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality, *JPEG_OPTIONS])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as JPEG")
    return data.tobytes()


@dataclass(frozen=True, eq=False)
class Atlas:
    """One packed RGB image and, per input patch, where its texture coordinates land.

    `uv_windows[i]` is (u0, v0, u1, v1) in the atlas's normalised coordinates, v up from the
    bottom-left (the convention of `SurfaceTexture.uv`), spanning the patch's pixel centres.
    """

    image: np.ndarray
    uv_windows: tuple[tuple[float, float, float, float], ...]

    def to_atlas(self, patch_index: int, uv: np.ndarray) -> np.ndarray:
        """A patch's texture coordinates (k, 2) in [0, 1] mapped into the atlas."""
        u0, v0, u1, v1 = self.uv_windows[patch_index]
        return np.column_stack([u0 + uv[:, 0] * (u1 - u0), v0 + uv[:, 1] * (v1 - v0)])


def pack_atlas(patches: Sequence[np.ndarray], max_side: int = 4096) -> Atlas:
    """Packs (h, w, 3) uint8 patches into one atlas no wider or taller than `max_side`.

    Patches are scaled down together, by the largest factor that lets them fit, when their
    area exceeds the atlas's; the atlas's sides are multiples of 4 (what block-compressed
    GPU formats and JPEG's chroma subsampling handle best).
    """
    if not patches:
        raise ValueError("no texture patch to pack")
    scale = 1.0
    while True:
        sizes = [_scaled_size(patch, scale) for patch in patches]
        layout = _shelf_layout(sizes, max_side)
        if layout is not None:
            break
        if all(size == (MIN_PATCH_SIDE, MIN_PATCH_SIDE) for size in sizes):
            raise ValueError(
                f"{len(patches)} texture patches do not fit a {max_side} x {max_side} atlas even at "
                f"{MIN_PATCH_SIDE} x {MIN_PATCH_SIDE} pixels each; allow a larger atlas"
            )
        scale *= 0.85
    positions, width, height = layout
    image = np.zeros((height, width, 3), dtype=np.uint8)
    windows = []
    for patch, (patch_w, patch_h), (x, y) in zip(patches, sizes, positions):
        resized = patch if (patch_w, patch_h) == (patch.shape[1], patch.shape[0]) else cv2.resize(
            patch, (patch_w, patch_h), interpolation=cv2.INTER_AREA
        )
        padded = cv2.copyMakeBorder(resized, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_REPLICATE)
        image[y : y + patch_h + 2 * PADDING, x : x + patch_w + 2 * PADDING] = padded
        left, top = x + PADDING, y + PADDING
        # Pixel centres of the patch's first and last columns and rows; v counts up from the bottom.
        windows.append(
            (
                (left + 0.5) / width,
                1.0 - (top + patch_h - 0.5) / height,
                (left + patch_w - 0.5) / width,
                1.0 - (top + 0.5) / height,
            )
        )
    return Atlas(image, tuple(windows))


def padded_area(patch: np.ndarray) -> int:
    """Atlas pixels a patch takes at full resolution, padding included."""
    height, width = patch.shape[:2]
    return (height + 2 * PADDING) * (width + 2 * PADDING)


def _scaled_size(patch: np.ndarray, scale: float) -> tuple[int, int]:
    height, width = patch.shape[:2]
    return max(MIN_PATCH_SIDE, int(round(width * scale))), max(MIN_PATCH_SIDE, int(round(height * scale)))


def _shelf_layout(sizes: list[tuple[int, int]], max_side: int) -> tuple[list[tuple[int, int]], int, int] | None:
    """Positions of padded rectangles in rows of a width near the square root of their area."""
    padded = [(w + 2 * PADDING, h + 2 * PADDING) for w, h in sizes]
    if max(w for w, _ in padded) > max_side or max(h for _, h in padded) > max_side:
        return None
    area = sum(w * h for w, h in padded)
    row_width = min(max_side, max(max(w for w, _ in padded), _multiple_of_4(math.sqrt(area) * 1.1)))
    order = sorted(range(len(padded)), key=lambda i: (-padded[i][1], -padded[i][0], i))
    positions: list[tuple[int, int]] = [(0, 0)] * len(padded)
    x = y = row_height = used_width = 0
    for index in order:
        w, h = padded[index]
        if x + w > row_width:
            x, y, row_height = 0, y + row_height, 0
        positions[index] = (x, y)
        x += w
        used_width = max(used_width, x)
        row_height = max(row_height, h)
    height = y + row_height
    if height > max_side:
        return None
    return positions, _multiple_of_4(used_width), _multiple_of_4(height)


def _multiple_of_4(value: float) -> int:
    return int(math.ceil(value / 4.0)) * 4
