"""Planar roof segments in a building's points.

Normals come from the principal axes of each point's k nearest neighbours (the smallest
axis in closed form, vectorised over the points). Regions grow from the flattest points
over the k-nearest-neighbour graph against the region's own plane. Each region gets a
robust least-squares plane; coplanar regions merge; then every point is given to the plane
it fits best within the fit distance, so points near ridges (whose neighbourhoods straddle
two planes) are not lost.

The neighbour search and the region growing are loops over single points, compiled with
numba: numpy can only run them a whole frontier or a whole array at a time, with the
bookkeeping dominating, and they were half the time of a LoD2.2 reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numba
import numpy as np

from reconstruction.crop import build_grid_index, reach_beyond_square
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
    points = np.ascontiguousarray(points, dtype=np.float64)
    neighbours = nearest_neighbours(points, min(k, len(points)))
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


def nearest_neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each point's k nearest points in 3D, itself included, nearest
    first and equal distances by index; 1 <= k <= n.

    Written by hand because roof points are 2.5D: bucketed in square cells in xy (a
    `GridIndex`), each search scans square rings of cells around the point's own until the
    k-th distance found is within the rings searched. Compiled, this is twice as fast as
    scipy's KD-tree, with the same distances exactly."""
    x_span, y_span = np.ptp(points[:, 0]), np.ptp(points[:, 1])
    # Cells of about k / 4 points at the mean density: measured fastest on roofs.
    cell = max(0.5 * np.sqrt(x_span * y_span * k / len(points)), 1e-3)
    while (x_span / cell + 1) * (y_span / cell + 1) > 4 * len(points) + 16:
        cell *= 2  # points on a line or a thin strip: the area says nothing of their spacing
    index = build_grid_index(points[:, :2], cell)
    return _nearest_in_grid(points, k, index.x0, index.y0, index.cell, index.ny, index.order, index.cell_starts)


@numba.njit(cache=True)
def _nearest_in_grid(points, k, x0, y0, cell, rows, order, cell_starts) -> np.ndarray:
    """`nearest_neighbours` over the points' `GridIndex` (its fields)."""
    n = len(points)
    # The cells as the index computed them; cell numbers past its last hold no point.
    column = np.floor((points[:, 0] - x0) / cell).astype(np.int64)
    row = np.floor((points[:, 1] - y0) / cell).astype(np.int64)
    columns, numbered = column.max() + 1, len(cell_starts) - 1
    sorted_points = points[order]  # cell by cell, for memory locality

    neighbours = np.empty((n, k), np.int64)
    best_distance = np.empty(k)
    best_index = np.empty(k, np.int64)
    for i in range(n):
        x, y, z = points[i, 0], points[i, 1], points[i, 2]
        found = 0
        ring = 0
        while True:
            for a in range(max(column[i] - ring, 0), min(column[i] + ring, columns - 1) + 1):
                on_edge = abs(a - column[i]) == ring
                b = row[i] - ring
                while b <= row[i] + ring:
                    if 0 <= b < rows and a * rows + b < numbered:
                        c = a * rows + b
                        for s in range(cell_starts[c], cell_starts[c + 1]):
                            dx, dy, dz = sorted_points[s, 0] - x, sorted_points[s, 1] - y, sorted_points[s, 2] - z
                            distance = dx * dx + dy * dy + dz * dz
                            j = order[s]
                            if found < k:
                                slot = found
                                found += 1
                            elif distance < best_distance[k - 1] or (
                                distance == best_distance[k - 1] and j < best_index[k - 1]
                            ):
                                slot = k - 1
                            else:
                                continue
                            while slot > 0 and (
                                best_distance[slot - 1] > distance
                                or (best_distance[slot - 1] == distance and best_index[slot - 1] > j)
                            ):
                                best_distance[slot] = best_distance[slot - 1]
                                best_index[slot] = best_index[slot - 1]
                                slot -= 1
                            best_distance[slot] = distance
                            best_index[slot] = j
                    # Inside the ring only its two end cells are new.
                    b += 1 if on_edge or ring == 0 else 2 * ring
            # Less a micrometre for the rounding of the square's sides (far less at
            # projected coordinates).
            reach = reach_beyond_square(x, y, x0, y0, cell, column[i], row[i], ring, columns, rows)
            if found == k and (reach == np.inf or (reach - 1e-6) ** 2 >= best_distance[k - 1]):
                break
            ring += 1
        neighbours[i] = best_index
    return neighbours


@numba.njit(cache=True)
def _neighbourhood_covariance(points: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Covariance of each point's neighbours, (6, n): xx, yy, zz, xy, xz, yz."""
    n, k = neighbours.shape
    covariance = np.empty((6, n))
    offsets = np.empty((k, 3))
    for i in range(n):
        # Offsets from the point itself: small numbers, precise at projected coordinates.
        for t in range(k):
            for axis in range(3):
                offsets[t, axis] = points[neighbours[i, t], axis] - points[i, axis]
        mean_x, mean_y, mean_z = offsets[:, 0].sum() / k, offsets[:, 1].sum() / k, offsets[:, 2].sum() / k
        xx = yy = zz = xy = xz = yz = 0.0
        for t in range(k):
            x, y, z = offsets[t, 0] - mean_x, offsets[t, 1] - mean_y, offsets[t, 2] - mean_z
            xx += x * x
            yy += y * y
            zz += z * z
            xy += x * y
            xz += x * z
            yz += y * z
        covariance[0, i], covariance[1, i], covariance[2, i] = xx / k, yy / k, zz / k
        covariance[3, i], covariance[4, i], covariance[5, i] = xy / k, xz / k, yz / k
    return covariance


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
    as accurate where the smallest eigenvalue stands apart, as it does on any surface.

    The arithmetic is compiled, a pass over the matrices before the trigonometry and one
    after (numpy's temporaries took most of a millisecond a roof); the power, arc cosine
    and cosines stay numpy's, whose vectorised versions round differently from the C
    library's that compiled code calls, and the normals follow every bit."""
    mean, scale, determinant = _characteristic(covariance)
    half_det = determinant / (2 * np.where(scale > 0, scale, 1.0) ** 3)
    angle = np.arccos(np.clip(half_det, -1.0, 1.0)) / 3
    return _eigenpairs(covariance, mean, scale, np.cos(angle), np.cos(angle + 2 * np.pi / 3))


@numba.njit(cache=True)
def _characteristic(covariance):
    """Per matrix, the mean of its diagonal, the scale of its deviatoric part and that
    part's determinant: the terms of the trigonometric roots."""
    n = covariance.shape[1]
    mean, scale, determinant = np.empty(n), np.empty(n), np.empty(n)
    for i in range(n):
        xx, yy, zz, xy, xz, yz = covariance[:, i]
        mean[i] = (xx + yy + zz) / 3
        dx, dy, dz = xx - mean[i], yy - mean[i], zz - mean[i]
        scale[i] = np.sqrt((dx * dx + dy * dy + dz * dz + 2 * (xy * xy + xz * xz + yz * yz)) / 6)
        determinant[i] = dx * (dy * dz - yz * yz) - xy * (xy * dz - yz * xz) + xz * (xy * yz - dy * xz)
    return mean, scale, determinant


@numba.njit(cache=True)
def _eigenpairs(covariance, mean, scale, cos_largest, cos_smallest):
    """`_smallest_eigenpairs` from the cosines of the roots' angles."""
    n = covariance.shape[1]
    smallest, normals, clear = np.empty(n), np.empty((n, 3)), np.empty(n, np.bool_)
    adjugate, lengths = np.empty((3, 3)), np.empty(3)
    for i in range(n):
        xx, yy, zz, xy, xz, yz = covariance[:, i]
        largest = mean[i] + 2 * scale[i] * cos_largest[i]
        smallest[i] = mean[i] + 2 * scale[i] * cos_smallest[i]
        middle = 3 * mean[i] - largest - smallest[i]
        clear[i] = middle - smallest[i] > MIN_EIGENVALUE_GAP * largest
        sx, sy, sz = xx - smallest[i], yy - smallest[i], zz - smallest[i]
        a, b, c = sy * sz - yz * yz, sx * sz - xz * xz, sx * sy - xy * xy
        d, e, f = xz * yz - xy * sz, xy * yz - xz * sy, xy * xz - yz * sx
        adjugate[0, 0], adjugate[0, 1], adjugate[0, 2] = a, d, e
        adjugate[1, 0], adjugate[1, 1], adjugate[1, 2] = d, b, f
        adjugate[2, 0], adjugate[2, 1], adjugate[2, 2] = e, f, c
        longest = 0
        for r in range(3):
            lengths[r] = adjugate[r, 0] * adjugate[r, 0] + adjugate[r, 1] * adjugate[r, 1] + adjugate[r, 2] * adjugate[r, 2]
            if lengths[r] > lengths[longest]:
                longest = r
        length = np.sqrt(lengths[longest] if clear[i] else 1.0)
        for axis in range(3):
            normals[i, axis] = adjugate[longest, axis] / length
    return smallest, normals, clear


def detect_planes(points: np.ndarray, config: Lod2Config) -> PlaneDetection:
    """Roof planes of `points` (n, 3), largest first."""
    if len(points) < config.min_plane_points:
        return PlaneDetection((), np.full(len(points), -1), 0)
    points = np.ascontiguousarray(points, dtype=np.float64)  # one compiled version of each loop
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
    seeds = np.flatnonzero(variation <= config.max_surface_variation)
    seeds = seeds[np.argsort(variation[seeds], kind="stable")]
    cos_limit = float(np.cos(np.radians(config.normal_angle_deg)))
    return _grow(points, normals, neighbours, seeds, config.region_distance_m, cos_limit, config.min_plane_points)


@numba.njit(cache=True)
def _grow(points, normals, neighbours, seeds, region_distance, cos_limit, min_points) -> np.ndarray:
    labels = np.full(len(points), -1, np.int64)
    spent = np.zeros(len(points), np.bool_)
    # The region's members in the order they joined: each frontier is a slice of it.
    members = np.empty(len(points), np.int64)
    tested_in_step = np.full(len(points), -1, np.int64)
    step = 0
    next_label = 0
    for seed in seeds:
        if labels[seed] != -1 or spent[seed]:
            continue
        labels[seed] = next_label
        members[0] = seed
        origin = points[seed]
        centre, normal = origin.copy(), normals[seed].copy()
        # Sums of the members' offsets from the seed and of their products, so that a refit
        # costs the same whatever the region's size.
        sums, products = np.zeros(3), np.zeros((3, 3))
        frontier_start, size, fitted_size = 0, 1, 1
        while frontier_start < size:
            step += 1
            grown = size
            for f in range(frontier_start, size):
                for j in neighbours[members[f]]:
                    if labels[j] != -1 or tested_in_step[j] == step:
                        continue
                    tested_in_step[j] = step
                    distance, agreement = 0.0, 0.0
                    for axis in range(3):
                        distance += (points[j, axis] - centre[axis]) * normal[axis]
                        agreement += normals[j, axis] * normal[axis]
                    if abs(distance) <= region_distance and abs(agreement) >= cos_limit:
                        members[grown] = j
                        grown += 1
            for f in range(size, grown):
                labels[members[f]] = next_label
                for a in range(3):
                    offset = points[members[f], a] - origin[a]
                    sums[a] += offset
                    for b in range(3):
                        products[a, b] += offset * (points[members[f], b] - origin[b])
            frontier_start, size = size, grown
            if size >= 1.5 * fitted_size and size >= 3:
                mean = sums / size
                centre = origin + mean
                normal = _least_squares_normal(products - size * np.outer(mean, mean), points, members[:size], centre)
                fitted_size = size
        if size < min_points:
            # Its points seed no region again: from inside the same patch, bounded by the
            # same edges, they would grow it again, which made nearly all the growing steps
            # on city roofs (chimneys, equipment, vegetation). They may still join a region.
            labels[members[:size]] = -1
            spent[members[:size]] = True
        else:
            next_label += 1
    return labels


@numba.njit(cache=True)
def _least_squares_normal(scatter, points, members, centre) -> np.ndarray:
    """Unit normal (up) of the plane through the members, from their scatter matrix about
    `centre`."""
    # The eigenvector of least eigenvalue: much cheaper than an SVD of the points, and as
    # accurate unless they lie on a line, where the scatter matrix (which squares the
    # ratios of the spreads) loses the normal to rounding and the SVD keeps it.
    eigenvalues, eigenvectors = np.linalg.eigh(scatter)
    if eigenvalues[1] - eigenvalues[0] > MIN_EIGENVALUE_GAP * eigenvalues[2]:
        normal = eigenvectors[:, 0].copy()
    else:
        normal = np.linalg.svd(points[members] - centre, full_matrices=False)[2][2].copy()
    return normal if normal[2] >= 0 else -normal


def _fit(points: np.ndarray, indices: np.ndarray) -> _Segment | None:
    """Least-squares plane through the points at `indices`, with outlier rejection."""
    fitted, centre, normal, keep, rmse = _robust_plane(points, indices)
    if not fitted:
        return None
    mask = np.zeros(len(points), dtype=bool)
    mask[indices[keep]] = True
    return _Segment(normal, centre, mask, rmse)


@numba.njit(cache=True)
def _robust_plane(points, indices):
    """Whether a plane could be fitted, its centre and unit normal (up), which of the
    points (by `indices`) it keeps, and their RMSE: least squares, refitted without the
    points beyond three robust standard deviations until they stay the same (three
    rounds at most)."""
    keep = np.ones(len(indices), np.bool_)
    distance = np.zeros(len(indices))
    centre, normal = np.zeros(3), np.zeros(3)
    for _ in range(3):
        if np.count_nonzero(keep) < 3:
            return False, centre, normal, keep, 0.0
        centre, normal = _plane(points, indices[keep])
        for i, point in enumerate(indices):
            distance[i] = (
                (points[point, 0] - centre[0]) * normal[0]
                + (points[point, 1] - centre[1]) * normal[1]
                + (points[point, 2] - centre[2]) * normal[2]
            )
        spread = max(1.4826 * np.median(np.abs(distance[keep])), 0.02)
        kept = keep
        keep = np.abs(distance) <= 3 * spread
        if (keep == kept).all():
            break  # another round would fit the same points again
    return True, centre, normal, keep, np.sqrt(np.mean(distance[keep] ** 2))


@numba.njit(cache=True)
def _plane(points, members):
    """Centre and unit normal (up) of the least-squares plane through the members."""
    # Offsets from the first member: small numbers, precise sums at projected coordinates.
    anchor = points[members[0]]
    mean = np.zeros(3)
    for point in members:
        for a in range(3):
            mean[a] += points[point, a] - anchor[a]
    mean /= len(members)
    scatter = np.zeros((3, 3))
    offset = np.empty(3)
    for point in members:
        for a in range(3):
            offset[a] = points[point, a] - anchor[a] - mean[a]
        for a in range(3):
            for b in range(3):
                scatter[a, b] += offset[a] * offset[b]
    centre = anchor + mean
    return centre, _least_squares_normal(scatter, points, members, centre)


def _fit_regions(points: np.ndarray, labels: np.ndarray, config: Lod2Config) -> list[_Segment]:
    segments = []
    for members in _members_by_label(labels):
        if len(members) < config.min_plane_points:
            continue
        segment = _fit(points, members)
        if segment is not None and segment.mask.sum() >= config.min_plane_points:
            segments.append(segment)
    return sorted(segments, key=lambda s: (-int(s.mask.sum()), float(s.centre[2])))


def _members_by_label(labels: np.ndarray) -> list[np.ndarray]:
    """Indices of the points of each label from 0 to the largest, in increasing order."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels, np.arange(labels.max() + 2), sorter=order)
    return [order[start:end] for start, end in zip(bounds[:-1], bounds[1:])]


def _merge_coplanar(segments: list[_Segment], config: Lod2Config) -> list[_Segment]:
    """Merges segments whose planes agree in direction and offset (split by noise or gaps):
    in order, each segment takes in every later one coplanar with it, and keeps its plane."""
    if not segments:
        return []
    normals = np.array([s.normal for s in segments])
    centres = np.array([s.centre for s in segments])
    # offsets[i, j]: distance from segment i's plane to segment j's centre.
    offsets = np.abs(np.einsum("ijk,ik->ij", centres[None] - centres[:, None], normals))
    near = offsets <= config.merge_distance_m
    coplanar = (np.abs(normals.dot(normals.T)) >= np.cos(np.radians(config.merge_angle_deg))) & near & near.T
    merged, taken = [], np.zeros(len(segments), dtype=bool)
    for i, segment in enumerate(segments):
        if taken[i]:
            continue
        partners = i + 1 + np.flatnonzero(coplanar[i, i + 1 :] & ~taken[i + 1 :])
        if len(partners):
            taken[partners] = True
            segment = replace(segment, mask=np.logical_or.reduce([segment.mask] + [segments[j].mask for j in partners]))
        merged.append(segment)
    return merged


def _assign_points(points, normals, segments: list[_Segment], config: Lod2Config):
    """Gives each point to the plane nearest to it (within the fit distance; beyond the
    region distance only if its normal agrees), then refits every plane on its points."""
    labels = np.full(len(points), -1)
    if not segments:
        return [], labels
    cos_limit = float(np.cos(np.radians(config.assign_angle_deg)))
    best, distance = _nearest_planes(
        points, normals, np.array([s.normal for s in segments]), np.array([s.centre for s in segments]),
        cos_limit, config.region_distance_m,
    )
    close = distance <= config.fit_distance_m
    labels[close] = best[close]
    planes, final_labels = [], np.full(len(points), -1)
    for members in _members_by_label(labels):
        if len(members) < config.min_plane_points:
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


@numba.njit(cache=True)
def _nearest_planes(points, normals, plane_normals, plane_centres, cos_limit, region_distance):
    """Per point, the nearest plane (the first of equals) and its distance; a plane whose
    normal disagrees with the point's (by `cos_limit`) counts only within `region_distance`,
    and with no plane counting, the distance is infinite."""
    nearest = np.zeros(len(points), np.int64)
    distance = np.full(len(points), np.inf)
    for i in range(len(points)):
        for p in range(len(plane_normals)):
            gap, agreement = 0.0, 0.0
            for axis in range(3):
                gap += (points[i, axis] - plane_centres[p, axis]) * plane_normals[p, axis]
                agreement += normals[i, axis] * plane_normals[p, axis]
            gap = abs(gap)
            if abs(agreement) < cos_limit and gap > region_distance:
                continue
            if gap < distance[i]:
                nearest[i], distance[i] = p, gap
    return nearest, distance
