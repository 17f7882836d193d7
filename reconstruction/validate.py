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

A solid's rings are checked all at once, on one array of their vertices: a solid has a
few dozen rings of a few vertices, on which per-ring numpy and shapely calls would cost
far more than their arithmetic. The vector areas are still added vertex after vertex as
for one surface on its own, so that they, the normals and the volume's sign agree to the
last bit with `reconstruction.geometry`'s: the codes of a degenerate polygon, whose normal
is rounding noise, depend on every bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely

from reconstruction.geometry import component_labels, cross_rows, group_sums, row_dots, solid_origin, unique_rows
from reconstruction.triangulate import triangle_widths, triangulate_surface
from twin.model import Solid, Surface, SurfaceKind

SNAP_TOLERANCE_M = 0.001
PLANARITY_DISTANCE_M = 0.01
PLANARITY_NORMALS_DEG = 20.0
SLIVER_WIDTH_M = 0.01
OVERLAP_TOLERANCE_M2 = 0.01
_X_AXIS, _Y_AXIS = np.eye(3)[:2]


def validate_solid(solid: Solid) -> list[int]:
    """The sorted val3dity error codes of a solid; an empty list means valid."""
    origin = solid_origin(solid)
    rings = _Rings.of(solid.surfaces)
    vertex_ids = _snapped_ids(rings.vertices - origin)[0]
    errors, well_formed = _point_errors(rings, vertex_ids)
    if not well_formed.all():
        kept = [surface for surface, keep in zip(solid.surfaces, well_formed) if keep]
        return sorted(errors | (_polygon_errors(_Rings.of(kept), origin)[0] if kept else set()))
    errors, surface_areas = _polygon_errors(rings, origin)
    if errors:
        return sorted(errors)
    errors = _shell_errors(rings, vertex_ids)
    if not errors and _volume(rings, origin, surface_areas) <= 0:
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


def overused_edges(solid: Solid) -> list[np.ndarray]:
    """Edges shared by more than two surfaces (the 303 cases), as (2, 3) coordinate arrays,
    in the order the surfaces first reach them."""
    rings = _Rings.of(solid.surfaces)
    vertex_ids, grid_points = _snapped_ids(rings.vertices)
    lows, highs = _undirected_edges(vertex_ids, rings.following)
    _, first_use, uses = np.unique(lows * len(grid_points) + highs, return_index=True, return_counts=True)
    # Ids number the grid points in lexicographic order, so each edge's ends come sorted.
    return [grid_points[[lows[k], highs[k]]] * SNAP_TOLERANCE_M for k in np.sort(first_use[uses > 2])]


def _ground_plan(solid: Solid) -> shapely.Geometry:
    return shapely.union_all(
        [
            shapely.Polygon(s.rings[0][:, :2], [r[:, :2] for r in s.rings[1:]])
            for s in solid.surfaces
            if s.kind == SurfaceKind.GROUND
        ]
    )


@dataclass(frozen=True)
class _Rings:
    """The rings of some surfaces, their vertices concatenated surface after surface."""

    surfaces: list[Surface]
    vertices: np.ndarray
    vertex_ring: np.ndarray
    following: np.ndarray
    """The index of the next vertex along the same ring."""
    ring_starts: np.ndarray
    ring_surface: np.ndarray
    ring_index_in_surface: np.ndarray
    surface_first_ring: np.ndarray

    @classmethod
    def of(cls, surfaces: list[Surface] | tuple[Surface, ...]) -> _Rings:
        rings = [ring for surface in surfaces for ring in surface.rings]
        ring_counts = np.array([len(surface.rings) for surface in surfaces], dtype=np.int64)
        lengths = np.array([len(ring) for ring in rings], dtype=np.int64)
        ring_ends = np.cumsum(lengths)
        ring_starts = ring_ends - lengths
        vertex_ring = np.repeat(np.arange(len(rings)), lengths)
        following = np.arange(1, len(vertex_ring) + 1)
        non_empty = lengths > 0
        following[ring_ends[non_empty] - 1] = ring_starts[non_empty]
        ring_surface = np.repeat(np.arange(len(surfaces)), ring_counts)
        surface_first_ring = np.cumsum(ring_counts) - ring_counts
        return cls(
            surfaces=list(surfaces),
            vertices=np.concatenate(rings) if rings else np.zeros((0, 3)),
            vertex_ring=vertex_ring,
            following=following,
            ring_starts=ring_starts,
            ring_surface=ring_surface,
            ring_index_in_surface=np.arange(len(rings)) - surface_first_ring[ring_surface],
            surface_first_ring=surface_first_ring,
        )

    def vertex_surface(self) -> np.ndarray:
        return self.ring_surface[self.vertex_ring]

    def per_surface(self, flagged_rings: np.ndarray) -> np.ndarray:
        """Whether each surface has a flagged ring (`flagged_rings`: a mask or indices)."""
        return np.bincount(self.ring_surface[flagged_rings], minlength=len(self.surfaces)) > 0


def _snapped_ids(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(an id per point, equal for points on the same 1 mm grid point; those grid
    points (integer millimetres) in lexicographic order, indexed by id)."""
    grid_points, _, ids, _ = unique_rows(np.rint(points / SNAP_TOLERANCE_M).astype(np.int64))
    return ids, grid_points


def _undirected_edges(vertex_ids: np.ndarray, following: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heads, tails = vertex_ids, vertex_ids[following]
    return np.minimum(heads, tails), np.maximum(heads, tails)


def _point_errors(rings: _Rings, vertex_ids: np.ndarray) -> tuple[set[int], np.ndarray]:
    """The codes 101 and 102, and which surfaces have neither (only those go on to the
    polygon checks)."""
    repeated = rings.per_surface(rings.vertex_ring[vertex_ids == vertex_ids[rings.following]])
    pair_codes = np.unique(rings.vertex_ring * (len(vertex_ids) + 1) + vertex_ids)
    distinct = np.bincount(pair_codes // (len(vertex_ids) + 1), minlength=len(rings.ring_starts))
    too_few = rings.per_surface(distinct < 3)
    errors = {code for code, flags in ((101, too_few), (102, repeated)) if flags.any()}
    return errors, ~(too_few | repeated)


def _polygon_errors(rings: _Rings, origin: np.ndarray) -> tuple[set[int], np.ndarray]:
    """The codes 104, 201, 203, 204, 206 and 208 of surfaces whose rings all have three
    distinct points, and the surfaces' vector areas (holes run the other way, so they
    subtract).

    Sums are taken per ring and per surface over the concatenated vertices, products per
    vertex with its surface's vectors: no layout padded to the longest ring, which on a
    campus roof with a thousand-vertex outline took hundreds of megabytes and most of a
    second.
    """
    points = rings.vertices - origin
    newell_terms = cross_rows(points, points[rings.following])
    surface_count = len(rings.surfaces)
    ring_areas = 0.5 * group_sums(newell_terms, rings.vertex_ring, len(rings.ring_starts))
    if len(ring_areas) == surface_count:
        surface_areas = ring_areas
    else:
        surface_areas = group_sums(ring_areas, rings.ring_surface, surface_count)
    norms = np.sqrt(row_dots(surface_areas, surface_areas))
    degenerate = norms == 0
    if degenerate.any():
        rest = [surface for surface, flat in zip(rings.surfaces, degenerate) if not flat]
        return {104} | (_polygon_errors(_Rings.of(rest), origin)[0] if rest else set()), surface_areas
    normals = surface_areas / norms[:, None]

    vertex_surface = rings.vertex_surface()
    surface_starts = rings.ring_starts[rings.surface_first_ring]
    centres = group_sums(points, vertex_surface, surface_count) / np.bincount(vertex_surface)[:, None]
    vertex_normals = normals[vertex_surface]
    distances = np.maximum.reduceat(np.abs(row_dots(points - centres[vertex_surface], vertex_normals)), surface_starts)
    off_plane = distances > PLANARITY_DISTANCE_M
    # Within 1 mm of its plane, no triangle wider than a sliver can tilt by 20 degrees.
    warped = np.zeros(surface_count, dtype=bool)
    for k in np.flatnonzero(~off_plane & (distances > SNAP_TOLERANCE_M)):
        warped[k] = _normals_deviate(rings.surfaces[k], normals[k])

    flat_points = _in_plane(points, vertex_normals)
    rings_2d = shapely.linearrings(flat_points, indices=rings.vertex_ring)
    self_intersecting = rings.per_surface(~shapely.is_simple(rings_2d))
    errors = {code for code, flags in ((104, self_intersecting), (203, off_plane), (204, warped)) if flags.any()}
    with_holes = np.bincount(rings.ring_surface, minlength=surface_count) > 1
    checked = with_holes & ~(self_intersecting | off_plane | warped)
    if checked.any():
        errors |= _hole_errors(rings, flat_points, rings_2d, checked)
    return errors, surface_areas


def _in_plane(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Coordinates of points (n, 3) in a right-handed 2D frame of the plane of each one's
    normal (n, 3)."""
    axes = np.where((np.abs(normals[:, 0]) < 0.9)[:, None], _X_AXIS, _Y_AXIS)
    u = cross_rows(normals, axes)
    u /= np.sqrt(row_dots(u, u))[:, None]
    v = cross_rows(normals, u)
    return np.column_stack([row_dots(points, u), row_dots(points, v)])


def _hole_errors(rings: _Rings, flat_points: np.ndarray, rings_2d: np.ndarray, checked: np.ndarray) -> set[int]:
    """The codes 201, 206 and 208 of the holes of the `checked` surfaces."""
    checked_rings = np.flatnonzero(checked[rings.ring_surface])
    orientations = _orientations(rings, flat_points, checked_rings)
    holes = checked_rings[rings.ring_index_in_surface[checked_rings] > 0]
    exteriors = rings.surface_first_ring[rings.ring_surface[holes]]
    alike = orientations[holes] == orientations[exteriors]
    exterior_shapes, hole_shapes = np.split(shapely.polygons(rings_2d[np.concatenate([exteriors, holes])]), 2)
    outside = ~shapely.contains(exterior_shapes, hole_shapes)
    crossing = outside & shapely.intersects(exterior_shapes, hole_shapes)
    errors = {code for code, flags in ((208, alike), (206, outside & ~crossing), (201, crossing)) if flags.any()}
    flagged = rings.per_surface(holes[alike | outside])
    whole = checked_rings[~flagged[rings.ring_surface[checked_rings]]]
    if len(whole):
        polygon_of_ring = np.unique(rings.ring_surface[whole], return_inverse=True)[1]
        if not shapely.is_valid(shapely.polygons(rings_2d[whole], indices=polygon_of_ring)).all():
            errors.add(201)
    return errors


def _orientations(rings: _Rings, flat_points: np.ndarray, ring_indices: np.ndarray) -> np.ndarray:
    """The signs of the given rings' areas in their surfaces' frames (0 for other rings).

    Each area is two dot products of strided columns, as for one ring on its own (a
    contiguous dot of 16 values or more would add them in another order).
    """
    following_points = flat_points[rings.following]
    ring_ends = np.append(rings.ring_starts[1:], len(flat_points))
    orientations = np.zeros(len(rings.ring_starts))
    for k in ring_indices:
        ring = slice(rings.ring_starts[k], ring_ends[k])
        x, y = flat_points[ring, 0], flat_points[ring, 1]
        orientations[k] = np.sign(np.dot(x, following_points[ring, 1]) - np.dot(following_points[ring, 0], y))
    return orientations


def _normals_deviate(surface: Surface, normal: np.ndarray) -> bool:
    """val3dity's second planarity test: triangles whose normals leave the polygon's.

    Sliver triangles (narrower than 1 cm) are skipped: with vertices on a millimetre
    grid their normals are noise, not a sign of a warped polygon.
    """
    vertices, triangles = triangulate_surface(surface)
    sound = triangles[triangle_widths(vertices, triangles) > SLIVER_WIDTH_M]
    a, b, c = (vertices[sound[:, k]] for k in range(3))
    normals = cross_rows(b - a, c - a)
    cosines = (normals @ normal) / np.linalg.norm(normals, axis=1)
    return bool(np.any(cosines < np.cos(np.radians(PLANARITY_NORMALS_DEG))))


def _shell_errors(rings: _Rings, vertex_ids: np.ndarray) -> set[int]:
    """The codes 301, 302, 303, 305 and 307 (two surfaces running along an edge the
    same way) of a shell whose surfaces are all valid polygons."""
    surface_count = len(rings.surfaces)
    if surface_count < 4:
        return {301}
    lows, highs = _undirected_edges(vertex_ids, rings.following)
    edge_codes = lows * len(vertex_ids) + highs
    order = np.argsort(edge_codes, kind="stable")
    sorted_codes = edge_codes[order]
    if not _in_pairs(sorted_codes):
        uses = np.unique(sorted_codes, return_counts=True)[1]
        return {code for code, flags in ((302, uses == 1), (303, uses > 2)) if flags.any()}
    # Every edge has exactly two uses, next to each other in the sorted order; they run
    # the same way where they start at the same vertex.
    use_heads = vertex_ids[order].reshape(-1, 2)
    if np.any(use_heads[:, 0] == use_heads[:, 1]):
        return {307}
    edge_surfaces = rings.vertex_surface()[order].reshape(-1, 2)
    connected = not component_labels(surface_count, edge_surfaces[:, 0], edge_surfaces[:, 1]).any()
    return set() if connected else {305}


def _in_pairs(sorted_codes: np.ndarray) -> bool:
    """Whether every value of a sorted array occurs exactly twice."""
    if len(sorted_codes) % 2:
        return False
    pairs = sorted_codes.reshape(-1, 2)
    return bool(np.all(pairs[:, 0] == pairs[:, 1]) and np.all(pairs[1:, 0] != pairs[:-1, 1]))


def _volume(rings: _Rings, origin: np.ndarray, surface_areas: np.ndarray) -> float:
    """Signed volume by the divergence theorem (as geometry.solid_volume), from the surface
    areas already found, added surface after surface as the per-surface code added them."""
    corners = rings.vertices[rings.ring_starts[rings.surface_first_ring]] - origin
    return float(np.cumsum(row_dots(corners, surface_areas))[-1]) / 3.0
