"""The dominant direction of a footprint, to align grids and lines with its walls."""

from __future__ import annotations

import numpy as np
import shapely


def dominant_angle(polygon: shapely.Polygon, bin_deg: float = 1.0) -> float:
    """Angle in radians, within [0, pi/2), of the directions most of the outline follows.

    Edge directions are folded modulo 90 degrees (walls are mostly perpendicular),
    weighted by length, and the peak of their circular histogram wins.
    """
    rings = [polygon.exterior, *polygon.interiors]
    coords = [np.asarray(r.coords) for r in rings]
    edges = np.concatenate([c[1:] - c[:-1] for c in coords])
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    if lengths.sum() == 0:
        return 0.0
    angles = np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)
    bins = int(round(90 / bin_deg))
    histogram = np.bincount(
        np.minimum((angles / (np.pi / 2) * bins).astype(int), bins - 1), weights=lengths, minlength=bins
    )
    smoothed = histogram + 0.5 * (np.roll(histogram, 1) + np.roll(histogram, -1))
    peak = int(np.argmax(smoothed))
    near = np.abs(((angles / (np.pi / 2) * bins) - peak + bins / 2) % bins - bins / 2) <= 1.5
    if not near.any():
        return (peak + 0.5) * (np.pi / 2) / bins
    # Length-weighted circular mean of the edges in the peak, for sub-bin precision.
    folded = angles[near] * 4
    weights = lengths[near]
    mean = np.arctan2((weights * np.sin(folded)).sum(), (weights * np.cos(folded)).sum()) / 4
    return float(np.mod(mean, np.pi / 2))


def rotation(angle: float) -> np.ndarray:
    """2x2 matrix turning map coordinates into the frame aligned with `angle`."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, s], [-s, c]])


def angle_difference(a: float, b: float) -> float:
    """The angle between two undirected directions given in radians (within [0, pi/2])."""
    difference = abs(a - b) % np.pi
    return min(difference, np.pi - difference)
