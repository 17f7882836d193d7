"""Planar roof segments in a building's points.

Normals come from the principal axes of each point's k nearest neighbours (scipy's
KD-tree, all points at once). Regions grow from the flattest points over the
k-nearest-neighbour graph, a whole frontier per step (vectorised), against the region's
own plane. Each region gets a robust least-squares plane; coplanar regions merge; then
every point is given to the plane it fits best within the fit distance, so points near
ridges (whose neighbourhoods straddle two planes) are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from reconstruction.extrude import Plane
from twin.config import Lod2Config


@dataclass(frozen=True, eq=False)
class RoofPlane:
    plane: Plane
    normal: np.ndarray
    """Unit normal, pointing up."""
    point_count: int
    rmse: float

    @property
    def slope_deg(self) -> float:
        return float(np.degrees(np.arccos(np.clip(self.normal[2], -1.0, 1.0))))

    @property
    def is_horizontal(self) -> bool:
        return self.slope_deg < HORIZONTAL_DEG


HORIZONTAL_DEG = 5.0
"""Roof planes flatter than this are flat roofs."""


@dataclass(frozen=True, eq=False)
class PlaneDetection:
    planes: tuple[RoofPlane, ...]
    labels: np.ndarray
    """Per point, the index of its plane, or -1."""
    wall_points: int
    """Points on wall-like (near vertical) segments, left out of the roof."""


def local_normals(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit normals (up), surface variation (smallest eigenvalue over their sum: near 0 on
    a plane, large across a ridge or hip) and the neighbour indices of each point."""
    k = min(k, len(points))
    tree = cKDTree(points)
    _, neighbours = tree.query(points, k=k)
    neighbours = neighbours.reshape(len(points), k)
    local = points[neighbours] - points[neighbours].mean(axis=1, keepdims=True)
    covariance = np.einsum("nki,nkj->nij", local, local) / k
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    normals = eigenvectors[:, :, 0]
    normals[normals[:, 2] < 0] *= -1
    variation = np.maximum(eigenvalues[:, 0], 0.0) / np.maximum(eigenvalues.sum(axis=1), 1e-12)
    return normals, variation, neighbours


def detect_planes(points: np.ndarray, config: Lod2Config) -> PlaneDetection:
    """Roof planes of `points` (n, 3), largest first."""
    if len(points) < config.min_plane_points:
        return PlaneDetection((), np.full(len(points), -1), 0)
    normals, variation, neighbours = local_normals(points, config.normal_neighbours)
    labels = _grow_regions(points, normals, variation, neighbours, config)
    segments = _merge_coplanar(_fit_regions(points, labels, config), config)
    max_cos = np.cos(np.radians(config.max_roof_slope_deg))
    roofs = [s for s in segments if s.normal[2] >= max_cos]
    wall_points = int(sum(s.mask.sum() for s in segments if s.normal[2] < max_cos))
    planes, labels = _assign_points(points, normals, roofs, config)
    return PlaneDetection(tuple(planes), labels, wall_points)


@dataclass(frozen=True, eq=False)
class _Segment:
    normal: np.ndarray
    centre: np.ndarray
    mask: np.ndarray
    rmse: float


def _grow_regions(points, normals, variation, neighbours, config: Lod2Config) -> np.ndarray:
    """Regions grown from the flattest points: a neighbour joins when it lies near the
    region's plane and its normal agrees with the region's (not merely with its
    neighbour's, which would let normals turning gradually over a hip chain two planes).
    Each step adds a whole frontier at once; the plane is refitted as the region grows."""
    n = len(points)
    labels = np.full(n, -1)
    tried = np.zeros(n, dtype=bool)
    cos_limit = np.cos(np.radians(config.normal_angle_deg))
    next_label = 0
    for seed in np.argsort(variation, kind="stable"):
        if variation[seed] > config.max_surface_variation:
            break
        if labels[seed] != -1 or tried[seed]:
            continue
        tried[seed] = True
        normal, centre = normals[seed], points[seed]
        members = [np.array([seed])]
        labels[seed] = next_label
        size, fitted_size = 1, 1
        frontier = members[0]
        while len(frontier):
            candidates = np.unique(neighbours[frontier].reshape(-1))
            candidates = candidates[labels[candidates] == -1]
            near = np.abs((points[candidates] - centre) @ normal) <= config.region_distance_m
            aligned = np.abs(normals[candidates] @ normal) >= cos_limit
            frontier = candidates[near & aligned]
            labels[frontier] = next_label
            members.append(frontier)
            size += len(frontier)
            if size >= 1.5 * fitted_size and size >= 3:
                region = points[np.concatenate(members)]
                centre = region.mean(axis=0)
                _, _, vt = np.linalg.svd(region - centre, full_matrices=False)
                normal = vt[2] if vt[2][2] >= 0 else -vt[2]
                fitted_size = size
        if size < config.min_plane_points:
            labels[np.concatenate(members)] = -1
        else:
            next_label += 1
    return labels


def _fit(points: np.ndarray, members: np.ndarray) -> _Segment | None:
    """Least-squares plane through the members, with outlier rejection."""
    keep = members.copy()
    for _ in range(3):
        if keep.sum() < 3:
            return None
        centre = points[keep].mean(axis=0)
        _, _, vt = np.linalg.svd(points[keep] - centre, full_matrices=False)
        normal = vt[2] if vt[2][2] >= 0 else -vt[2]
        distance = (points - centre) @ normal
        spread = max(1.4826 * np.median(np.abs(distance[keep])), 0.02)
        keep = members & (np.abs(distance) <= 3 * spread)
    rmse = float(np.sqrt(np.mean(distance[keep] ** 2)))
    return _Segment(normal, centre, keep, rmse)


def _fit_regions(points: np.ndarray, labels: np.ndarray, config: Lod2Config) -> list[_Segment]:
    segments = []
    counts = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    for label in np.flatnonzero(counts >= config.min_plane_points):
        segment = _fit(points, labels == label)
        if segment is not None and segment.mask.sum() >= config.min_plane_points:
            segments.append(segment)
    return sorted(segments, key=lambda s: (-int(s.mask.sum()), float(s.centre[2])))


def _merge_coplanar(segments: list[_Segment], config: Lod2Config) -> list[_Segment]:
    """Merges segments whose planes agree in direction and offset (split by noise or gaps)."""
    cos_limit = np.cos(np.radians(config.merge_angle_deg))

    def coplanar(a: _Segment, b: _Segment) -> bool:
        return (
            abs(a.normal @ b.normal) >= cos_limit
            and abs((b.centre - a.centre) @ a.normal) <= config.merge_distance_m
            and abs((a.centre - b.centre) @ b.normal) <= config.merge_distance_m
        )

    merged = list(segments)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            j = next((j for j in range(i + 1, len(merged)) if coplanar(merged[i], merged[j])), None)
            if j is not None:
                union = merged[i].mask | merged[j].mask
                merged[i] = replace(merged[i], mask=union)
                merged.pop(j)
                changed = True
                break
    return merged


def _assign_points(points, normals, segments: list[_Segment], config: Lod2Config):
    """Gives each point to the plane nearest to it (within the fit distance; beyond the
    region distance only if its normal agrees), then refits every plane on its points."""
    labels = np.full(len(points), -1)
    if not segments:
        return [], labels
    distance = np.stack([np.abs((points - s.centre) @ s.normal) for s in segments], axis=1)
    cos_limit = np.cos(np.radians(config.assign_angle_deg))
    compatible = np.stack([np.abs(normals @ s.normal) >= cos_limit for s in segments], axis=1)
    distance[~compatible & (distance > config.region_distance_m)] = np.inf
    best = np.argmin(distance, axis=1)
    close = distance[np.arange(len(points)), best] <= config.fit_distance_m
    labels[close] = best[close]
    planes, final_labels = [], np.full(len(points), -1)
    for index in range(len(segments)):
        members = labels == index
        if members.sum() < config.min_plane_points:
            continue
        segment = _fit(points, members)
        if segment is None or segment.normal[2] < 1e-3:
            continue
        final_labels[segment.mask] = len(planes)
        normal = segment.normal
        if np.degrees(np.arccos(min(1.0, normal[2]))) < config.flat_snap_deg:
            normal = np.array([0.0, 0.0, 1.0])  # a flat roof, with its drainage slope ignored
        planes.append(RoofPlane(Plane.from_normal(normal, segment.centre), normal, int(segment.mask.sum()), segment.rmse))
    return planes, final_labels
