"""Geometric validation of solids with val3dity's error codes.

Checked: 101 too few points, 102 consecutive points the same, 104 ring self-intersection,
201 rings intersecting, 203 non-planar (distance to plane), 204 non-planar (normal
deviation), 206 inner ring outside, 208 inner ring oriented like the exterior, 301 too
few polygons, 302 shell not closed, 303 non-manifold edge, 305 several connected
components, 307 wrong orientation (inconsistent or inward), and 601 building parts
overlapping. Not checked: 306 shell self-intersection in general position, which a
2.5D extrusion cannot produce without also producing one of the codes above.

Vertices are compared on val3dity's default 1 mm snapping grid; planarity uses its
default tolerances (1 cm to the plane, 20 degrees between triangle normals).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import shapely

from reconstruction.geometry import cross, cross_rows, solid_origin, solid_volume, surface_vector_area
from reconstruction.triangulate import triangulate_surface
from twin.model import Solid, Surface, SurfaceKind

SNAP_TOLERANCE_M = 0.001
PLANARITY_DISTANCE_M = 0.01
PLANARITY_NORMALS_DEG = 20.0
SLIVER_WIDTH_M = 0.01
OVERLAP_TOLERANCE_M2 = 0.01


def validate_solid(solid: Solid) -> list[int]:
    """The sorted val3dity error codes of a solid; an empty list means valid."""
    errors: set[int] = set()
    origin = solid_origin(solid)
    keyed_surfaces = []
    for surface in solid.surfaces:
        surface_errors, keyed_rings = _validate_surface(surface, origin)
        errors |= surface_errors
        keyed_surfaces.append(keyed_rings)
    if errors:
        return sorted(errors)
    errors |= _validate_shell(keyed_surfaces)
    if not errors and solid_volume(solid) <= 0:
        errors.add(307)
    return sorted(errors)


def validate_parts(parts: list[Solid]) -> list[int]:
    """Each part's own codes, plus 601 where two parts of one building share volume.

    Parts are 2.5D (vertical walls standing on a ground surface), so two parts share
    volume exactly when their ground surfaces overlap in plan.
    """
    errors = {code for solid in parts for code in validate_solid(solid)}
    if len(parts) > 1 and not errors:
        plans = [_ground_plan(solid) for solid in parts]
        tree = shapely.STRtree(plans)
        for i, j in zip(*tree.query(plans, predicate="intersects")):
            if i < j and plans[i].intersection(plans[j]).area > OVERLAP_TOLERANCE_M2:
                errors.add(601)
    return sorted(errors)


def _ground_plan(solid: Solid) -> shapely.Geometry:
    return shapely.union_all(
        [
            shapely.Polygon(s.rings[0][:, :2], [r[:, :2] for r in s.rings[1:]])
            for s in solid.surfaces
            if s.kind == SurfaceKind.GROUND
        ]
    )


def _key(points: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(k) for k in np.rint(points / SNAP_TOLERANCE_M).astype(np.int64).tolist()]


def _validate_surface(surface: Surface, origin: np.ndarray) -> tuple[set[int], list[list[tuple]]]:
    errors: set[int] = set()
    keyed_rings = []
    for ring in surface.rings:
        keys = _key(ring - origin)
        if any(a == b for a, b in zip(keys, keys[1:] + keys[:1])):
            errors.add(102)
        if len(set(keys)) < 3:
            errors.add(101)
        keyed_rings.append(keys)
    if errors:
        return errors, keyed_rings

    area = surface_vector_area(surface, origin)
    norm = np.linalg.norm(area)
    if norm == 0:
        return {104}, keyed_rings
    normal = area / norm
    points = np.concatenate(surface.rings) - origin
    centre = points.mean(axis=0)
    distance = np.abs((points - centre) @ normal).max()
    if distance > PLANARITY_DISTANCE_M:
        errors.add(203)
    elif distance > SNAP_TOLERANCE_M and _normals_deviate(surface, normal):
        # Within 1 mm of its plane, no triangle wider than a sliver can tilt by 20 degrees.
        errors.add(204)

    u = cross(normal, np.array([1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0]))
    u /= np.linalg.norm(u)
    v = cross(normal, u)
    rings_2d = [np.column_stack([(r - origin) @ u, (r - origin) @ v]) for r in surface.rings]
    for ring in rings_2d:
        if not shapely.LinearRing(ring).is_simple:
            errors.add(104)
    if errors or len(rings_2d) == 1:
        return errors, keyed_rings
    exterior = shapely.Polygon(rings_2d[0])
    exterior_sign = np.sign(_signed_area(rings_2d[0]))
    for hole in rings_2d[1:]:
        if np.sign(_signed_area(hole)) == exterior_sign:
            errors.add(208)
        hole_shape = shapely.Polygon(hole)
        if not exterior.contains(hole_shape):
            errors.add(206 if not exterior.intersects(hole_shape) else 201)
    if not errors and not shapely.Polygon(rings_2d[0], rings_2d[1:]).is_valid:
        errors.add(201)
    return errors, keyed_rings


def _normals_deviate(surface: Surface, normal: np.ndarray) -> bool:
    """val3dity's second planarity test: triangles whose normals leave the polygon's.

    Sliver triangles (narrower than 1 cm) are skipped: with vertices on a millimetre
    grid their normals are noise, not a sign of a warped polygon.
    """
    vertices, triangles = triangulate_surface(surface)
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normals = cross_rows(b - a, c - a)
    doubled_area = np.linalg.norm(normals, axis=1)
    longest = np.max([np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1), np.linalg.norm(a - c, axis=1)], axis=0)
    sound = doubled_area > SLIVER_WIDTH_M * np.maximum(longest, 1e-9)
    cosines = (normals[sound] @ normal) / doubled_area[sound]
    return bool(np.any(cosines < np.cos(np.radians(PLANARITY_NORMALS_DEG))))


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def overused_edges(solid: Solid) -> list[np.ndarray]:
    """Edges shared by more than two surfaces (the 303 cases), as (2, 3) coordinate arrays."""
    uses: Counter = Counter()
    for surface in solid.surfaces:
        for ring in surface.rings:
            keys = _key(ring)
            for a, b in zip(keys, keys[1:] + keys[:1]):
                uses[frozenset((a, b))] += 1
    return [np.array(sorted(edge), dtype=float) * SNAP_TOLERANCE_M for edge, count in uses.items() if count > 2]


def _validate_shell(keyed_surfaces: list[list[list[tuple]]]) -> set[int]:
    if len(keyed_surfaces) < 4:
        return {301}
    directed = Counter()
    surfaces_of_edge: dict[frozenset, list[int]] = {}
    for index, rings in enumerate(keyed_surfaces):
        for keys in rings:
            for a, b in zip(keys, keys[1:] + keys[:1]):
                directed[(a, b)] += 1
                surfaces_of_edge.setdefault(frozenset((a, b)), []).append(index)
    errors: set[int] = set()
    for edge, users in surfaces_of_edge.items():
        if len(users) == 1:
            errors.add(302)
        elif len(users) > 2:
            errors.add(303)
    if errors:
        return errors
    if any(count > 1 for count in directed.values()):
        return {307}
    if _component_count(len(keyed_surfaces), surfaces_of_edge.values()) > 1:
        errors.add(305)
    return errors


def _component_count(n: int, shared: object) -> int:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for users in shared:
        first = find(users[0])
        for other in users[1:]:
            parent[find(other)] = first
    return len({find(i) for i in range(n)})
