"""A building's ground height, from the ground points around it, with a fallback chain.

Primary: a terrain plane fitted robustly to the ground points in a ring around the
footprint, taken at its lowest outline vertex (on a slope, the building's base is where
the terrain is lowest along its walls); when the plane does not fit, a low percentile
of the ring's heights. Fallbacks, each recorded: the nearest ground points further out,
the tile's coarse terrain, then a ground altitude attribute of the footprint (as in
BD TOPO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numba
import numpy as np
import shapely

from twin.config import GroundConfig
from twin.model import TerrainGrid

GROUND_ALTITUDE_FIELDS = ("altitude_minimale_sol", "z_min_sol", "alti_sol", "ground_height", "h_ground")
MAX_TERRAIN_DISTANCE_M = 200.0


class Method:
    TERRAIN_PLANE = "terrain plane"
    RING_PERCENTILE = "ring percentile"
    NEAREST_GROUND = "nearest ground"
    TILE_TERRAIN = "tile terrain"
    FOOTPRINT_ATTRIBUTE = "footprint attribute"


PRIMARY_METHODS = (Method.TERRAIN_PLANE, Method.RING_PERCENTILE)


@dataclass(frozen=True)
class GroundEstimate:
    height: float
    method: str
    detail: str


def estimate_ground(
    footprint: shapely.Polygon,
    ring_points: np.ndarray,
    nearby_points: np.ndarray,
    terrain: TerrainGrid | None,
    attributes: Mapping[str, Any],
    config: GroundConfig,
) -> GroundEstimate | None:
    """The ground height, or None when no source gives one.

    `ring_points` are the ground points within the ring around the footprint,
    `nearby_points` those within the nearest-ground search radius.
    """
    if len(ring_points) >= config.min_points:
        plane = _robust_plane(ring_points)
        if plane is not None and plane[1] <= config.max_plane_residual_m:
            coefficients = plane[0]
            outline = np.asarray(footprint.exterior.coords)[:-1]
            at_outline = coefficients[0] * outline[:, 0] + coefficients[1] * outline[:, 1] + coefficients[2]
            low, high = ring_points[:, 2].min(), ring_points[:, 2].max()
            height = float(np.clip(at_outline.min(), low, high))
            return GroundEstimate(height, Method.TERRAIN_PLANE, f"{len(ring_points)} ground points around")
        height = float(np.percentile(ring_points[:, 2], config.low_percentile))
        return GroundEstimate(
            height, Method.RING_PERCENTILE, f"{len(ring_points)} ground points around, terrain not planar"
        )
    if len(nearby_points) > 0:
        distance = shapely.distance(footprint, shapely.points(nearby_points[:, :2]))
        nearest = np.argsort(distance, kind="stable")[: config.nearest_count]
        height = float(np.median(nearby_points[nearest, 2]))
        return GroundEstimate(
            height,
            Method.NEAREST_GROUND,
            f"only {len(ring_points)} ground points within {config.ring_width_m:g} m; "
            f"median of the {len(nearest)} nearest, up to {distance[nearest].max():.1f} m away",
        )
    if terrain is not None:
        centroid = footprint.centroid
        found = terrain.height_near(centroid.x, centroid.y)
        if found is not None and found[1] <= MAX_TERRAIN_DISTANCE_M:
            return GroundEstimate(
                found[0],
                Method.TILE_TERRAIN,
                f"no ground point within {config.nearest_radius_m:g} m; tile terrain {found[1]:.0f} m away",
            )
    attribute = _ground_altitude_attribute(attributes)
    if attribute is not None:
        name, value = attribute
        return GroundEstimate(value, Method.FOOTPRINT_ATTRIBUTE, f"no ground point near; footprint attribute {name}")
    return None


def _robust_plane(points: np.ndarray) -> tuple[np.ndarray, float] | None:
    """z = a x + b y + c fitted with two rounds of outlier rejection; returns the
    coefficients and the robust spread."""
    fitted, a, b, c, spread = _robust_plane_fit(np.ascontiguousarray(points, dtype=np.float64))
    return (np.array([a, b, c]), spread) if fitted else None


@numba.njit(cache=True)
def _robust_plane_fit(points):
    """`_robust_plane` compiled: (fitted, a, b, c, spread).

    Least squares by the normal equations of the offsets from the points' centre (a 3x3
    system, well conditioned once centred), each round in one pass over a ring's few
    thousand points: a least-squares solver on the whole design matrix, with its
    copies and medians in numpy, took a millisecond a building."""
    n = len(points)
    centre_x, centre_y, centre_z = points[:, 0].mean(), points[:, 1].mean(), points[:, 2].mean()
    keep = np.ones(n, np.bool_)
    residuals = np.empty(n)
    a = b = c = spread = 0.0
    for _ in range(3):
        kept = np.count_nonzero(keep)
        if kept < 3:
            return False, 0.0, 0.0, 0.0, 0.0
        normal = np.zeros((3, 3))
        right = np.zeros(3)
        for i in range(n):
            if keep[i]:
                x, y, z = points[i, 0] - centre_x, points[i, 1] - centre_y, points[i, 2] - centre_z
                normal[0, 0] += x * x
                normal[0, 1] += x * y
                normal[0, 2] += x
                normal[1, 1] += y * y
                normal[1, 2] += y
                right[0] += x * z
                right[1] += y * z
                right[2] += z
        normal[1, 0], normal[2, 0], normal[2, 1], normal[2, 2] = normal[0, 1], normal[0, 2], normal[1, 2], kept
        # Least squares again rather than a solve: points on a line leave the system singular.
        a, b, c = np.linalg.lstsq(normal, right)[0]
        for i in range(n):
            residuals[i] = points[i, 2] - centre_z - (a * (points[i, 0] - centre_x) + b * (points[i, 1] - centre_y) + c)
        kept_residuals = residuals[keep]
        spread = 1.4826 * np.median(np.abs(kept_residuals - np.median(kept_residuals)))
        keep = np.abs(residuals) <= max(3 * spread, 0.05)
    return True, a, b, centre_z + c - a * centre_x - b * centre_y, spread


def _ground_altitude_attribute(attributes: Mapping[str, Any]) -> tuple[str, float] | None:
    lower = {name.lower(): name for name in attributes}
    for candidate in GROUND_ALTITUDE_FIELDS:
        name = lower.get(candidate)
        if name is None:
            continue
        value = attributes[name]
        if isinstance(value, (int, float)) and np.isfinite(value) and value > -1000:
            return name, float(value)
    return None
