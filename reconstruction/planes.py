"""Planar roof segments in a building's points.

Normals come from the principal axes of each point's k nearest neighbours (scipy's
KD-tree, all points at once; the smallest axis in closed form, vectorised over the
points). Regions grow from the flattest points over the k-nearest-neighbour graph, a whole
frontier per step (vectorised), against the region's own plane. Each region gets a robust
least-squares plane; coplanar regions merge; then every point is given to the plane it
fits best within the fit distance, so points near ridges (whose neighbourhoods straddle
two planes) are not lost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import lapack
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
    # Sliding-midpoint splits (balanced_tree=False) build and search a sixth faster than
    # median splits on roof points; they may pick another neighbour only among neighbours
    # tied in distance.
    _, neighbours = cKDTree(points, balanced_tree=False).query(points, k=k)
    neighbours = neighbours.reshape(len(points), k)
    covariance = _neighbourhood_covariance(points, neighbours)
    smallest, normals, clear = _smallest_eigenpairs(covariance)
    eigenvalue_sum = covariance[:3].sum(axis=0)
    if not clear.all():
        # Where the two smallest eigenvalues (nearly) coincide, on a line of points or on
        # duplicates, the closed form cannot single out a normal: LAPACK picks one.
        matrices = covariance[:, ~clear][[[0, 3, 4], [3, 1, 5], [4, 5, 2]]].transpose(2, 0, 1)
        eigenvalues, eigenvectors = np.linalg.eigh(matrices)
        smallest[~clear] = eigenvalues[:, 0]
        eigenvalue_sum[~clear] = eigenvalues.sum(axis=1)
        normals[~clear] = eigenvectors[:, :, 0]
    normals[normals[:, 2] < 0] *= -1
    variation = np.maximum(smallest, 0.0) / np.maximum(eigenvalue_sum, 1e-12)
    return normals, variation, neighbours


def _neighbourhood_covariance(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Covariance of each point's neighbours, (6, n): xx, yy, zz, xy, xz, yz."""
    k = neighbours.shape[1]
    # Gathered one coordinate at a time, (3, n, k): sums over contiguous rows are several
    # times faster than an einsum over (n, k, 3).
    local = np.take(points.T.copy(), neighbours, axis=1)
    local -= local.sum(axis=2, keepdims=True) / k
    x, y, z = local
    covariance = np.empty((6, len(points)))
    for row, (a, b) in enumerate(((x, x), (y, y), (z, z), (x, y), (x, z), (y, z))):
        np.einsum("nk,nk->n", a, b, out=covariance[row])
    return covariance / k


MIN_EIGENVALUE_GAP = 1e-3
"""Two smallest eigenvalues closer than this (relative to the largest) leave a normal to
rounding in the fast solutions (the closed form, the scatter matrix), which then give way
to LAPACK on the matrix or the SVD of the points."""


def _smallest_eigenpairs(covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest eigenvalue, a unit eigenvector of it, and whether that eigenvector is
    accurate (`MIN_EIGENVALUE_GAP`), for each symmetric 3x3 matrix given as (6, n) like
    `_neighbourhood_covariance`.

    In closed form (the characteristic polynomial's trigonometric roots, then the longest
    row of the adjugate of C - λI, each row being the eigenvector times some factor):
    several times faster than a batched `eigh`, which makes a LAPACK call per matrix, and
    as accurate where the smallest eigenvalue stands apart, as it does on any surface."""
    xx, yy, zz, xy, xz, yz = covariance
    mean = (xx + yy + zz) / 3
    dx, dy, dz = xx - mean, yy - mean, zz - mean
    scale = np.sqrt((dx * dx + dy * dy + dz * dz + 2 * (xy * xy + xz * xz + yz * yz)) / 6)
    determinant = dx * (dy * dz - yz * yz) - xy * (xy * dz - yz * xz) + xz * (xy * yz - dy * xz)
    half_det = determinant / (2 * np.where(scale > 0, scale, 1.0) ** 3)
    angle = np.arccos(np.clip(half_det, -1.0, 1.0)) / 3
    largest = mean + 2 * scale * np.cos(angle)
    smallest = mean + 2 * scale * np.cos(angle + 2 * np.pi / 3)
    middle = 3 * mean - largest - smallest
    clear = middle - smallest > MIN_EIGENVALUE_GAP * largest

    sx, sy, sz = xx - smallest, yy - smallest, zz - smallest
    a, b, c = sy * sz - yz * yz, sx * sz - xz * xz, sx * sy - xy * xy
    d, e, f = xz * yz - xy * sz, xy * yz - xz * sy, xy * xz - yz * sx
    adjugate = np.array([[a, d, e], [d, b, f], [e, f, c]])
    lengths = np.einsum("rin,rin->rn", adjugate, adjugate)
    longest = lengths.argmax(axis=0)[None]
    chosen = np.take_along_axis(adjugate, longest[None], axis=0)[0]
    length = np.sqrt(np.where(clear, np.take_along_axis(lengths, longest, axis=0)[0], 1.0))
    return smallest, np.ascontiguousarray((chosen / length).T), clear


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
    labels = np.full(len(points), -1)
    spent = np.zeros(len(points), dtype=bool)
    cos_limit = np.cos(np.radians(config.normal_angle_deg))
    seeds = np.flatnonzero(variation <= config.max_surface_variation)
    seeds = seeds[np.argsort(variation[seeds], kind="stable")]
    next_label = 0
    while len(seeds):
        seed, seeds = seeds[0], seeds[1:]
        normal, centre = normals[seed], points[seed]
        members = [np.array([seed])]
        labels[seed] = next_label
        size, fitted_size = 1, 1
        frontier = members[0]
        while len(frontier):
            candidates = neighbours[frontier].ravel()
            candidates.sort()
            fresh = labels[candidates] == -1
            fresh[1:] &= candidates[1:] != candidates[:-1]
            candidates = candidates[fresh]
            # ndarray.dot rather than @: far less call overhead on arrays this small.
            near = np.abs((points[candidates] - centre).dot(normal)) <= config.region_distance_m
            aligned = np.abs(normals[candidates].dot(normal)) >= cos_limit
            frontier = candidates[near & aligned]
            labels[frontier] = next_label
            members.append(frontier)
            size += len(frontier)
            if size >= 1.5 * fitted_size and size >= 3:
                centre, normal = _plane(points[np.concatenate(members)])
                fitted_size = size
        if size < config.min_plane_points:
            # Its points seed no region again: from inside the same patch, bounded by the
            # same edges, they would grow it again, which made nearly all the growing steps
            # on city roofs (chimneys, equipment, vegetation). They may still join a region.
            failed = np.concatenate(members)
            labels[failed] = -1
            spent[failed] = True
        else:
            next_label += 1
        seeds = seeds[(labels[seeds] == -1) & ~spent[seeds]]
    return labels


def _fit(points: np.ndarray, members: np.ndarray) -> _Segment | None:
    """Least-squares plane through the members, with outlier rejection."""
    indices = np.flatnonzero(members)
    member_points = points[indices]
    keep = np.ones(len(indices), dtype=bool)
    for _ in range(3):
        if np.count_nonzero(keep) < 3:
            return None
        centre, normal = _plane(member_points[keep])
        distance = (member_points - centre).dot(normal)
        spread = max(1.4826 * _median(np.abs(distance[keep])), 0.02)
        kept = keep
        keep = np.abs(distance) <= 3 * spread
        if (keep == kept).all():
            break  # another round would fit the same points again
    rmse = float(np.sqrt(np.mean(distance[keep] ** 2)))
    mask = np.zeros(len(points), dtype=bool)
    mask[indices[keep]] = True
    return _Segment(normal, centre, mask, rmse)


def _median(values: np.ndarray) -> float:
    """`np.median` of a 1-d array without NaN, at a fraction of its overhead."""
    half = len(values) // 2
    if len(values) % 2:
        return float(np.partition(values, half)[half])
    below, above = np.partition(values, (half - 1, half))[half - 1 : half + 1]
    return float((below + above) / 2)


def _plane(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and unit normal (up) of the least-squares plane through the points (m, 3)."""
    # The normal is the scatter matrix's eigenvector of least eigenvalue: much cheaper than
    # an SVD of the points, and as accurate unless they lie on a line. Regions are refitted
    # dozens of times per building, so the sums go through BLAS (numpy's column sums of an
    # (m, 3) array are slow) and the 3x3 solve to LAPACK without numpy's costlier wrapper.
    anchor = region[0]
    offsets = region - anchor  # small numbers: precise sums at projected coordinates
    mean_offset = np.ones(len(region)).dot(offsets) / len(region)
    offsets -= mean_offset
    eigenvalues, eigenvectors, info = lapack.dsyevd(offsets.T.dot(offsets), lower=1)
    if info:
        raise np.linalg.LinAlgError("eigenvalues did not converge")
    if eigenvalues[1] - eigenvalues[0] > MIN_EIGENVALUE_GAP * eigenvalues[2]:
        centre, normal = anchor + mean_offset, eigenvectors[:, 0]
    else:
        # Nearly on a line, the scatter matrix (which squares the ratios of the spreads)
        # loses the normal to rounding; the SVD of the points keeps it.
        centre = region.mean(axis=0)
        normal = np.linalg.svd(region - centre, full_matrices=False)[2][2]
    return centre, normal if normal[2] >= 0 else -normal


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
