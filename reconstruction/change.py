"""Whether a roof changed between two scans, from a compact signature of each.

A roof signature is the median height of the building points in each 1 m cell of a
fixed grid (cells on whole metres of the CRS), so signatures of two scans compare cell
by cell without keeping the points. A roof changed when its height differs by more
than a threshold over a share of the cells both scans saw; a roof that appears or
disappears (points in one scan only) changed too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reconstruction.heightfield import medians_by_cell

SIGNATURE_CELL_M = 1.0


@dataclass(frozen=True, eq=False)
class RoofSignature:
    cells: np.ndarray
    """(k, 2) int64 cell indices (x and y divided by the cell size, floored), sorted."""
    heights: np.ndarray
    """(k,) median height of the building points of each cell."""

    def __len__(self) -> int:
        return len(self.cells)


@dataclass(frozen=True)
class RoofChange:
    changed: bool
    share: float
    """Share of the cells seen by both scans whose height moved by more than the threshold."""
    height_m: float
    """Median height difference (after - before) over those cells; 0 when none."""
    compared_cells: int


def roof_signature(roof_points: np.ndarray) -> RoofSignature:
    """The signature of the building points inside one footprint, (n, 3)."""
    if len(roof_points) == 0:
        return RoofSignature(np.empty((0, 2), np.int64), np.empty(0))
    cells = np.floor(roof_points[:, :2] / SIGNATURE_CELL_M).astype(np.int64)
    low = cells.min(axis=0)
    rows = cells[:, 1].max() - low[1] + 1
    # Numbered column by column, so that ascending numbers are the cells sorted by x then y.
    numbers, medians, _ = medians_by_cell((cells[:, 0] - low[0]) * rows + (cells[:, 1] - low[1]), roof_points[:, 2])
    return RoofSignature(np.column_stack([low[0] + numbers // rows, low[1] + numbers % rows]), medians)


def compare_roofs(before: RoofSignature, after: RoofSignature, threshold_m: float, min_share: float) -> RoofChange:
    if len(before) == 0 or len(after) == 0:
        appeared_or_gone = len(before) != len(after)
        return RoofChange(appeared_or_gone, 1.0 if appeared_or_gone else 0.0, 0.0, 0)
    before_keys = before.cells[:, 0] * (1 << 32) + before.cells[:, 1]
    after_keys = after.cells[:, 0] * (1 << 32) + after.cells[:, 1]
    _, in_before, in_after = np.intersect1d(before_keys, after_keys, assume_unique=True, return_indices=True)
    if len(in_before) == 0:  # both scans see the roof, never in the same place
        return RoofChange(True, 1.0, 0.0, 0)
    difference = after.heights[in_after] - before.heights[in_before]
    moved = np.abs(difference) > threshold_m
    share = float(moved.mean())
    height = float(np.median(difference[moved])) if moved.any() else 0.0
    return RoofChange(share >= min_share, share, height, len(in_before))
