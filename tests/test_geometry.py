"""Extrusion of roof partitions into solids, and the validity checks that judge them."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely import affinity

from reconstruction.extrude import ExtrusionError, Plane, RoofFace, extrude_faces, extrude_flat
from reconstruction.geometry import (
    component_labels,
    cross_rows,
    solid_volume,
    surface_area,
    surface_normal,
    surface_vector_area,
    surface_vector_areas,
    unique_rows,
)
from reconstruction.triangulate import triangulate_solid, triangulate_surface
from reconstruction.validate import overused_edges, validate_parts, validate_solid
from tests.helpers import assert_closed_outward
from twin.model import Solid, Surface, SurfaceKind

FAR = (652000.0, 6861000.0)  # Lambert-93 magnitudes, where float precision matters


def at_lambert93(polygon: shapely.Polygon) -> shapely.Polygon:
    return affinity.translate(polygon, *FAR)


def test_prism_is_valid_with_exact_volume_and_semantics():
    solid = extrude_flat(at_lambert93(shapely.box(0, 0, 10, 8)), 50.0, 58.5)
    assert validate_solid(solid) == []
    assert_closed_outward(solid, "prism")
    assert solid_volume(solid) == pytest.approx(80 * 8.5)
    kinds = [s.kind for s in solid.surfaces]
    assert kinds.count(SurfaceKind.GROUND) == 1 and kinds.count(SurfaceKind.ROOF) == 1
    assert kinds.count(SurfaceKind.WALL) == 4


def test_courtyard_keeps_its_hole_in_ground_and_roof():
    polygon = at_lambert93(shapely.box(0, 0, 30, 30).difference(shapely.box(10, 10, 20, 20)))
    solid = extrude_flat(polygon, 0.0, 10.0)
    assert validate_solid(solid) == []
    assert_closed_outward(solid, "courtyard")
    assert solid_volume(solid) == pytest.approx(800 * 10)
    ground = next(s for s in solid.surfaces if s.kind == SurfaceKind.GROUND)
    assert len(ground.rings) == 2 and surface_area(ground) == pytest.approx(800)


@pytest.mark.parametrize(
    "faces, volume",
    [
        # tower on a podium: step walls inside the outline
        (
            [
                RoofFace(shapely.box(0, 0, 30, 20).difference(shapely.box(10, 5, 20, 15)), Plane.horizontal(8)),
                RoofFace(shapely.box(10, 5, 20, 15), Plane.horizontal(30)),
            ],
            500 * 8 + 100 * 30,
        ),
        # gable: two slopes meeting at a ridge
        (
            [RoofFace(shapely.box(0, 0, 10, 4), Plane(0, 0, 5, 0, 0.5)), RoofFace(shapely.box(0, 4, 10, 8), Plane(0, 8, 5, 0, -0.5))],
            80 * 5 + 0.5 * 80 * 2,
        ),
        # a shed meeting a flat roof whose heights cross halfway along the shared edge
        ([RoofFace(shapely.box(0, 0, 10, 4), Plane(0, 0, 5, 0.3, 0)), RoofFace(shapely.box(0, 4, 10, 8), Plane.horizontal(6.5))], 520),
        # T-junction: one face next to two, three heights
        (
            [
                RoofFace(shapely.box(0, 0, 10, 10), Plane.horizontal(5)),
                RoofFace(shapely.box(10, 0, 20, 5), Plane.horizontal(7)),
                RoofFace(shapely.box(10, 5, 20, 10), Plane.horizontal(9)),
            ],
            500 + 350 + 450,
        ),
    ],
)
def test_partitions_extrude_to_valid_solids(faces, volume):
    solid = extrude_faces(faces, 0.0)
    assert validate_solid(solid) == []
    assert_closed_outward(solid)
    assert solid_volume(solid) == pytest.approx(volume)


def test_roof_below_ground_is_refused():
    with pytest.raises(ExtrusionError, match="not above the ground"):
        extrude_flat(shapely.box(0, 0, 5, 5), 10.0, 9.0)


def test_overlapping_faces_are_refused():
    faces = [RoofFace(shapely.box(0, 0, 10, 10), Plane.horizontal(5)), RoofFace(shapely.box(0, 0, 10, 10), Plane.horizontal(6))]
    with pytest.raises(ExtrusionError, match="overlap"):
        extrude_faces(faces, 0.0)


@st.composite
def brick_partitions(draw):
    """A rectangle cut into rows, each row into faces with random flat or sloped roofs.

    Rows are cut at distinct x, so no inner vertex joins four faces: there, diagonally
    alternating heights would pinch the solid along an edge (a real non-manifold
    configuration, see the test below), not a fault of the extrusion.
    """
    rows = sorted(set(draw(st.lists(st.integers(1, 19), max_size=3)))) + [20]
    angle = draw(st.floats(0, 90))
    used_x: set[int] = set()
    faces = []
    y0 = 0
    for y1 in rows:
        cuts = sorted(set(draw(st.lists(st.integers(1, 29), max_size=3))) - used_x)
        used_x |= set(cuts)
        x0 = 0
        for x1 in cuts + [30]:
            z = draw(st.floats(3, 20))
            slope_x = draw(st.sampled_from([0.0, 0.0, 0.04, -0.06]))
            slope_y = draw(st.sampled_from([0.0, 0.05, -0.02]))
            polygon = at_lambert93(affinity.rotate(shapely.box(x0, y0, x1, y1), angle, origin=(0, 0)))
            centre = polygon.centroid
            faces.append(RoofFace(polygon, Plane(centre.x, centre.y, z, slope_x, slope_y)))
            x0 = x1
        y0 = y1
    return faces


@settings(max_examples=100, deadline=None)
@given(brick_partitions())
def test_any_partition_gives_a_closed_outward_solid_of_the_footprint_area(faces):
    solid = extrude_faces(faces, 0.0)
    assert validate_solid(solid) == []
    assert_closed_outward(solid)
    ground = [s for s in solid.surfaces if s.kind == SurfaceKind.GROUND]
    footprint_area = shapely.union_all([f.polygon for f in faces]).area
    assert sum(surface_area(s) for s in ground) == pytest.approx(footprint_area, rel=0.005)


def _tilted_surface(rings: list[list[tuple[float, float]]], reverse: bool) -> Surface:
    """Plan rings set on a tilted plane at Lambert-93 magnitudes, turned either way."""
    placed = []
    for ring in rings:
        xy = np.array(ring, dtype=float)[:: -1 if reverse else 1]
        placed.append(np.column_stack([xy + FAR, 40.0 + 0.3 * xy[:, 0] - 0.2 * xy[:, 1]]))
    return Surface(tuple(placed), SurfaceKind.ROOF)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(
    "rings",
    [
        [[(0, 0), (4, 0), (4, 3), (0, 3)]],  # convex: fanned
        [[(0, 0), (5, 0), (6, 2), (3, 5), (-1, 2)]],  # convex: fanned
        [[(0, 0), (2, 0), (4, 0), (4, 3), (0, 3)]],  # a vertex on a side: fanned from a far corner
        [[(0, 0), (4, 0), (4, 3), (3, 3), (1, 3), (0, 3)]],  # a wall with step corners on its top
        [[(0, 0), (2, 0), (4, 0), (4, 3), (2, 3), (0, 3)]],  # every corner beside a side's vertex
        [[(0, 0), (4, 0), (4, 1), (1, 1), (1, 4), (0, 4)]],  # concave L
        [[(0, 0), (6, 0), (6, 6), (0, 6)], [(2, 2), (2, 4), (4, 4), (4, 2)]],  # with a hole
    ],
)
def test_triangles_cover_each_surface_once_turning_its_way(rings, reverse):
    surface = _tilted_surface(rings, reverse)
    vertices, triangles = triangulate_surface(surface)
    a, b, c = (vertices[triangles[:, k]] - vertices[0] for k in range(3))
    areas = 0.5 * cross_rows(b - a, c - a) @ surface_normal(surface)
    assert np.all(areas > 1e-3), areas
    assert areas.sum() == pytest.approx(surface_area(surface), rel=1e-9)


def test_mesh_of_a_solid_mixing_fanned_and_delaunay_surfaces_is_closed():
    courtyard = shapely.Polygon([(0, 0), (9, 0), (9, 9), (0, 9)], [[(3, 3), (3, 6), (6, 6), (6, 3)]])
    l_shape = shapely.Polygon([(0, 0), (8, 0), (8, 3), (3, 3), (3, 8), (0, 8)])
    for footprint in (courtyard, l_shape):
        solid = extrude_flat(at_lambert93(footprint), 30.0, 38.0)
        assert_closed_outward(solid)
        vertices, triangles = triangulate_solid(solid)
        a, b, c = (vertices[triangles[:, k]] - vertices[0] for k in range(3))
        volume = np.einsum("ij,ij->i", a, cross_rows(b, c)).sum() / 6
        assert volume == pytest.approx(footprint.area * 8.0, rel=1e-9)


def _box_solid() -> Solid:
    return extrude_flat(shapely.box(0, 0, 4, 3), 0.0, 2.0)


def _replace(solid: Solid, index: int, surface: Surface | None) -> Solid:
    surfaces = list(solid.surfaces)
    if surface is None:
        surfaces.pop(index)
    else:
        surfaces[index] = surface
    return Solid(tuple(surfaces))


def test_validation_reports_val3dity_codes():
    solid = _box_solid()
    roof_index = next(i for i, s in enumerate(solid.surfaces) if s.kind == SurfaceKind.ROOF)
    roof = solid.surfaces[roof_index]

    assert validate_solid(_replace(solid, roof_index, None)) == [302]
    flipped = Surface((roof.rings[0][::-1],), roof.kind)
    assert validate_solid(_replace(solid, roof_index, flipped)) == [307]
    inverted = Solid(tuple(Surface((s.rings[0][::-1],), s.kind) for s in solid.surfaces))
    assert validate_solid(inverted) == [307]
    warped = roof.rings[0].copy()
    warped[0, 2] += 0.5
    assert 203 in validate_solid(_replace(solid, roof_index, Surface((warped,), roof.kind)))
    repeated = np.vstack([roof.rings[0][:1], roof.rings[0]])
    assert 102 in validate_solid(_replace(solid, roof_index, Surface((repeated,), roof.kind)))
    assert validate_solid(Solid(solid.surfaces[:3])) == [301]


def test_validation_reports_ring_hole_and_shell_codes():
    solid = extrude_flat(shapely.box(0, 0, 10, 10), 0.0, 4.0)
    roof_index = next(i for i, s in enumerate(solid.surfaces) if s.kind == SurfaceKind.ROOF)
    roof = solid.surfaces[roof_index]
    exterior = roof.rings[0]

    def with_roof_rings(*rings: np.ndarray) -> Solid:
        return _replace(solid, roof_index, Surface(rings, roof.kind))

    def square(x: float, y: float) -> np.ndarray:
        return np.array([[x, y, 4.0], [x + 2, y, 4.0], [x + 2, y + 2, 4.0], [x, y + 2, 4.0]])

    assert validate_solid(with_roof_rings(exterior[:2])) == [101]
    assert validate_solid(with_roof_rings(exterior[[1, 0, 2, 3]])) == [104]
    assert validate_solid(with_roof_rings(exterior, square(4, 4))) == [208]
    assert validate_solid(with_roof_rings(exterior, square(20, 20)[::-1])) == [206]
    assert validate_solid(with_roof_rings(exterior, square(9, 4)[::-1])) == [201]
    assert validate_solid(with_roof_rings(exterior, square(4, 4)[::-1])) == [302]  # a sound hole, but no walls in it
    apart = extrude_flat(shapely.box(20, 0, 30, 10), 0.0, 4.0)
    assert validate_solid(Solid(solid.surfaces + apart.surfaces)) == [305]


def test_four_faces_pinching_at_a_vertex_are_reported_as_non_manifold():
    faces = [
        RoofFace(shapely.box(0, 0, 1, 1), Plane.horizontal(9)),
        RoofFace(shapely.box(1, 1, 2, 2), Plane.horizontal(9)),
        RoofFace(shapely.box(1, 0, 2, 1), Plane.horizontal(4)),
        RoofFace(shapely.box(0, 1, 1, 2), Plane.horizontal(4)),
    ]
    solid = extrude_faces(faces, 0.0)
    assert validate_solid(solid) == [303]
    edges = overused_edges(solid)
    assert edges and all(edge.shape == (2, 3) and np.allclose(edge[:, :2], 1.0) for edge in edges)


def test_overlapping_parts_are_reported_as_601():
    a = extrude_flat(shapely.box(0, 0, 10, 10), 0.0, 5.0)
    b = extrude_flat(shapely.box(8, 0, 18, 10), 0.0, 8.0)
    c = extrude_flat(shapely.box(10, 0, 18, 10), 0.0, 8.0)
    assert validate_parts([a, b]) == [601]
    assert validate_parts([a, c]) == []


def test_prism_rmse_is_the_distance_to_the_extruded_solids():
    """The closed form agrees with open3d's distances to the triangulated solids, for
    points above, below, inside and beside two prisms, one with a courtyard."""
    from reconstruction.quality import prism_rmses, rmse

    origin = np.array([652_000.0, 6_862_000.0])
    courtyard = shapely.Polygon([(0, 0), (20, 0), (20, 12), (0, 12)], [[(6, 4), (10, 4), (10, 8), (6, 8)]])
    tower = shapely.box(20, 2, 26, 10)
    prisms = [(affinity.translate(courtyard, *origin), 40.0, 52.0), (affinity.translate(tower, *origin), 40.0, 61.0)]
    rng = np.random.default_rng(5)
    points = np.column_stack([rng.uniform(-5, 31, 4000) + origin[0], rng.uniform(-5, 17, 4000) + origin[1],
                              rng.uniform(30, 70, 4000)])
    solids = [extrude_flat(polygon, bottom, top) for polygon, bottom, top in prisms]
    for subset in (points, points[:1]):
        assert prism_rmses(subset, [prisms])[0] == pytest.approx(rmse(subset, solids), abs=1e-4)
    assert prism_rmses(points[:0], [prisms]) == [None]
    # Models sharing an outline (the same polygon object) measure its distances once.
    block = [(prisms[0][0], 40.0, 55.0)]
    assert prism_rmses(points, [block, prisms, []]) == prism_rmses(points, [block]) + prism_rmses(points, [prisms]) + [None]


def test_rmse_is_the_distance_to_the_triangulated_solids():
    """Against open3d's distances to the triangles (Embree, single precision), for points
    around a hipped block with a courtyard, a shed roof and a round tower whose roof and
    ground have more vertices than a face is measured whole with."""
    import open3d as o3d

    from reconstruction.quality import MAX_FACE_VERTICES, rmse

    x0, y0 = 652_000.0, 6_862_000.0
    courtyard = shapely.Polygon([(0, 0), (20, 0), (20, 12), (0, 12)], [[(6, 4), (10, 4), (10, 8), (6, 8)]])
    tower = shapely.Point(26, 6).buffer(4, quad_segs=16)
    assert len(tower.exterior.coords) - 1 > MAX_FACE_VERTICES
    faces = [
        RoofFace(affinity.translate(courtyard.intersection(shapely.box(0, 0, 20, 6)), x0, y0), Plane(x0, y0, 50.0, 0.0, 0.5)),
        RoofFace(affinity.translate(courtyard.intersection(shapely.box(0, 6, 20, 12)), x0, y0), Plane(x0, y0 + 12, 50.0, 0.0, -0.5)),
        RoofFace(affinity.translate(tower, x0, y0), Plane(x0 + 26, y0 + 6, 58.0, 0.2, 0.1)),
    ]
    solids = [extrude_faces(faces[:2], 40.0), extrude_faces(faces[2:], 40.0)]
    rng = np.random.default_rng(11)
    points = np.column_stack([rng.uniform(-4, 34, 3000) + x0, rng.uniform(-4, 14, 3000) + y0, rng.uniform(35, 65, 3000)])

    origin = points.mean(axis=0)
    scene = o3d.t.geometry.RaycastingScene()
    for solid in solids:
        vertices, triangles = triangulate_solid(solid)
        mesh = o3d.t.geometry.TriangleMesh()
        mesh.vertex.positions = o3d.core.Tensor((vertices - origin).astype(np.float32))
        mesh.triangle.indices = o3d.core.Tensor(triangles.astype(np.int32))
        scene.add_triangles(mesh)
    distances = scene.compute_distance(o3d.core.Tensor((points - origin).astype(np.float32))).numpy().astype(np.float64)
    for subset in (slice(None), slice(0, 1), slice(1000, 1100)):
        expected = float(np.sqrt(np.mean(distances[subset] ** 2)))
        assert rmse(points[subset], solids) == pytest.approx(expected, abs=1e-5)
    assert rmse(points[:0], solids) is None


def test_vector_areas_of_all_surfaces_at_once_are_each_surfaces_to_the_last_bit():
    """Batched over a solid with a courtyard and sloped faces at projected coordinates."""
    courtyard = shapely.Polygon([(0, 0), (20, 0), (20, 12), (0, 12)], [[(6, 4), (10, 4), (10, 8), (6, 8)]])
    faces = [
        RoofFace(affinity.translate(courtyard, 652_000.0, 6_862_000.0), Plane(652_000.0, 6_862_000.0, 51.3, 0.31, -0.07)),
        RoofFace(shapely.box(652_020.0, 6_862_000.0, 652_026.0, 6_862_012.0), Plane.horizontal(48.2)),
    ]
    solid = extrude_faces(faces, 40.0)
    expected = np.array([surface_vector_area(s, s.rings[0][0]) for s in solid.surfaces])
    assert np.array_equal(surface_vector_areas(solid.surfaces), expected)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_unique_rows_is_numpys_unique_along_rows(seed):
    rng = np.random.default_rng(seed)
    rows = rng.integers(-3, 3, (int(rng.integers(1, 60)), int(rng.integers(1, 5)))) * 10**12
    expected = np.unique(rows, axis=0, return_index=True, return_inverse=True, return_counts=True)
    for got, wanted in zip(unique_rows(rows), expected):
        assert np.array_equal(got, wanted.reshape(got.shape))


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_component_labels_are_scipys(seed):
    """Numbered alike, on graphs with isolated nodes, loops and repeated edges."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(seed)
    node_count = int(rng.integers(0, 80))
    edge_count = int(rng.integers(0, 2 * node_count + 1)) if node_count else 0
    ends, other_ends = rng.integers(0, max(node_count, 1), (2, edge_count))
    graph = coo_matrix((np.ones(edge_count), (ends, other_ends)), shape=(node_count, node_count))
    assert np.array_equal(component_labels(node_count, ends, other_ends), connected_components(graph, directed=False)[1])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_the_ground_fit_is_least_squares_with_outliers_rejected(seed):
    """Against numpy's least squares on the design matrix, rounds of rejection included:
    sloped rings at projected coordinates with cars and walls among the points, few
    points, and points on a line (a singular system). The noise is not rounded: ties at
    the rejection threshold would go either way with the rounding of either solver."""
    from reconstruction.ground import _robust_plane

    rng = np.random.default_rng(seed)
    count = int(rng.choice([4, 5, 40, 3000]))
    xy = rng.uniform(0, 40, (count, 2)) + [652_000.0, 6_862_000.0]
    if seed % 5 == 0:
        xy[:, 0] = 652_010.0
    z = 40 + 0.03 * (xy[:, 0] - 652_000) - 0.02 * (xy[:, 1] - 6_862_000) + rng.normal(0, 0.05, count)
    z[rng.random(count) < 0.1] += rng.uniform(1, 3)
    points = np.column_stack([xy, z])

    centre = points[:, :2].mean(axis=0)
    design = np.column_stack([points[:, :2] - centre, np.ones(count)])
    keep = np.ones(count, dtype=bool)
    for _ in range(3):
        if keep.sum() < 3:
            assert _robust_plane(points) is None
            return
        solution = np.linalg.lstsq(design[keep], points[keep, 2], rcond=None)[0]
        residuals = points[:, 2] - design @ solution
        spread = 1.4826 * np.median(np.abs(residuals[keep] - np.median(residuals[keep])))
        keep = np.abs(residuals) <= max(3 * spread, 0.05)
    a, b, c = solution
    coefficients, found_spread = _robust_plane(points)
    assert np.allclose(coefficients, [a, b, c - a * centre[0] - b * centre[1]], rtol=0, atol=[1e-9, 1e-9, 1e-3])
    assert found_spread == pytest.approx(spread, abs=1e-9)
    at_centre = coefficients[0] * centre[0] + coefficients[1] * centre[1] + coefficients[2]
    assert at_centre == pytest.approx(c, abs=1e-8)
    assert _robust_plane(points[:2]) is None


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_percentiles_are_numpys_to_the_last_bit(seed):
    """Odd and even counts, one value, ties, and percentiles at the ends, on the quarters
    and anywhere between."""
    from reconstruction.heightfield import percentile

    rng = np.random.default_rng(seed)
    values = rng.normal(50, 5, int(rng.integers(1, 60)))
    for rounded in (np.round(values, int(rng.integers(0, 4))), values):
        for q in (0, 25, 50, 70, 100, *rng.uniform(0, 100, 20)):
            assert percentile(rounded, q) == np.percentile(rounded, q)
    assert np.isnan(percentile(values[:0], 50))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_medians_by_cell_are_those_of_the_points_sorted_by_cell_and_height(seed):
    """Against numpy: points sorted by (cell, height), each cell's run read off; cells
    with one point, with an even count, with repeated heights, and numbers left empty."""
    from reconstruction.heightfield import medians_by_cell

    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 300))
    cells = rng.integers(0, rng.integers(1, 60), count) * int(rng.integers(1, 4))
    z = np.round(rng.uniform(40, 60, count), int(rng.integers(0, 3)))
    order = np.lexsort((z, cells))
    numbers, start, size = np.unique(cells[order], return_index=True, return_counts=True)
    ordered = z[order]
    found = medians_by_cell(cells, z)
    assert np.array_equal(found[0], numbers)
    assert np.array_equal(found[1], 0.5 * (ordered[start + (size - 1) // 2] + ordered[start + size // 2]))
    assert np.array_equal(found[2], ordered[start + size - 1] - ordered[start])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_cell_indices_are_numpys_floor_division_clipped(seed):
    """Points anywhere on a turned grid, beyond it, on cell corners and a rounding off
    them, at projected coordinates: the cells numpy's floor division and clip give."""
    from reconstruction.heightfield import Heightfield, rotation

    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 40, 2))
    cell = float(rng.choice([0.5, 0.37, 1.0, 0.1]))
    field = Heightfield(rng.uniform(0, np.pi), rng.uniform(-1e5, 1e6), rng.uniform(-1e5, 7e6), cell,
                        np.zeros(shape), np.zeros(shape), np.ones(shape, bool), np.ones(shape, bool))
    corners = np.stack(np.meshgrid(np.arange(-2, shape[0] + 3), np.arange(-2, shape[1] + 3)), -1).reshape(-1, 2)
    uv = np.vstack([corners * cell, rng.uniform(-3, np.array(shape) + 3, (300, 2)) * cell]) + [field.u0, field.v0]
    uv = np.vstack([uv, np.nextafter(uv, np.inf), np.nextafter(uv, -np.inf)])
    xy = uv @ rotation(field.angle)  # from the grid's frame to the map
    turned = xy @ rotation(field.angle).T
    expected_i = np.clip(((turned[:, 0] - field.u0) // cell).astype(np.int64), 0, shape[0] - 1)
    expected_j = np.clip(((turned[:, 1] - field.v0) // cell).astype(np.int64), 0, shape[1] - 1)
    i, j = field.cell_indices(xy)
    assert np.array_equal(i, expected_i) and np.array_equal(j, expected_j)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_each_covered_cell_takes_the_plane_most_of_its_points_belong_to(seed):
    """Few planes, so that votes tie (the lowest label wins); unlabelled points do not
    vote; cells without a vote or not covered stay at -1."""
    from reconstruction.heightfield import Heightfield, rotation
    from reconstruction.roof_lines import plane_label_grid

    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 15, 2))
    covered = rng.random(shape) < 0.8
    field = Heightfield(rng.uniform(0, np.pi), rng.uniform(-1e5, 1e6), rng.uniform(-1e5, 7e6), 0.5,
                        np.zeros(shape), np.zeros(shape), covered, covered)
    count = int(rng.integers(1, 4 * covered.size))
    cells = rng.integers(0, shape, (count, 2))
    uv = (cells + rng.uniform(0.1, 0.9, (count, 2))) * field.cell + [field.u0, field.v0]
    points = np.column_stack([uv @ rotation(field.angle), rng.uniform(40, 50, count)])
    labels = rng.integers(-1, int(rng.integers(1, 4)), count)
    expected = np.full(shape, -1)
    for a, b in zip(*np.nonzero(covered)):
        votes = np.bincount(labels[(cells[:, 0] == a) & (cells[:, 1] == b) & (labels >= 0)], minlength=1)
        if votes.any():
            expected[a, b] = np.argmax(votes)
    assert np.array_equal(plane_label_grid(field, points, labels), expected)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_a_region_survives_erosion_as_in_scipy(seed):
    """Against `ndimage.binary_erosion` with iterations: blobs, strips one to a few cells
    wide, regions touching the grid's border, and single cells."""
    from scipy import ndimage

    from reconstruction.lod1 import _survives_erosion

    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 30, 2))
    mask = rng.random(shape) < rng.uniform(0.2, 1.0)
    if rng.random() < 0.6:
        mask = ndimage.binary_closing(mask, iterations=int(rng.integers(1, 4)), border_value=1)
    for iterations in range(1, 6):
        assert _survives_erosion(mask, iterations) == ndimage.binary_erosion(mask, iterations=iterations).any()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_points_within_polygons_are_geos_within(seed):
    """Against shapely's STRtree query with `within`, and with `intersects` where the
    rings are included, on the faces of an arrangement at
    projected coordinates (a courtyard, slanted and grid lines): samples on a grid that
    the lines pass through, at random, and on the faces' vertices and edges."""
    from reconstruction.geometry import points_within

    rng = np.random.default_rng(seed)
    outer = shapely.Polygon([(0, 0), (20, 0), (20, 12), (0, 12)], [[(6, 4), (10, 4), (10, 8), (6, 8)]])
    lines = [shapely.LineString([(rng.uniform(-5, 25), -5), (rng.uniform(-5, 25), 17)]) for _ in range(3)]
    lines += [shapely.LineString([(-5, y), (25, y)]) for y in rng.integers(0, 24, 2) / 2]
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.union_all([outer.boundary, *lines]))))
    faces = shapely.transform(faces[shapely.contains(outer, shapely.point_on_surface(faces))], lambda c: c + [652_000.0, 6_862_000.0])
    grid = np.stack(np.meshgrid(np.arange(0, 20.01, 0.5), np.arange(0, 12.01, 0.5)), -1).reshape(-1, 2) + [652_000.0, 6_862_000.0]
    vertices = shapely.get_coordinates(faces)
    on_edges = shapely.get_coordinates(shapely.line_interpolate_point(shapely.get_exterior_ring(faces), 0.3, normalized=True))
    xy = np.vstack([grid, rng.uniform(-1, 21, (200, 2)) + [652_000.0, 6_862_000.0], vertices, on_edges])
    for predicate, rings_included in (("within", False), ("intersects", True)):
        expected_point, expected_polygon = shapely.STRtree(faces).query(shapely.points(xy), predicate=predicate)
        order = np.lexsort((expected_polygon, expected_point))
        found_point, found_polygon = points_within(xy, faces, rings_included)
        assert np.array_equal(found_point, expected_point[order])
        assert np.array_equal(found_polygon, expected_polygon[order])


def test_points_a_rounding_off_an_edge_are_located_by_geos():
    """Too near an edge for the floating-point orientation test to tell its side: GEOS
    settles them (in double-double), on either side of the edge and on it."""
    from reconstruction.geometry import _points_within, points_within

    triangles = shapely.polygons([[(0, 0), (3, 0), (3, 1)], [(0, 0), (3, 1), (0, 1)]])
    xy = np.array([[2.0, 0.3], [1.5, 0.5], [1.5, 0.5000000000000001], [1.5, 0.49999999999999994]])
    expected_point, expected_polygon = shapely.STRtree(triangles).query(shapely.points(xy), predicate="within")
    order = np.lexsort((expected_polygon, expected_point))
    found_point, found_polygon = points_within(xy, triangles)
    assert np.array_equal(found_point, expected_point[order]) and np.array_equal(found_polygon, expected_polygon[order])
    assert set(found_point.tolist()) == {0, 2, 3}
    expected_point, expected_polygon = shapely.STRtree(triangles).query(shapely.points(xy), predicate="intersects")
    order = np.lexsort((expected_polygon, expected_point))
    found_point, found_polygon = points_within(xy, triangles, rings_included=True)
    assert np.array_equal(found_point, expected_point[order]) and np.array_equal(found_polygon, expected_polygon[order])
    coordinates = np.array([[0, 0], [3, 0], [3, 1], [0, 0], [0, 0], [3, 1], [0, 1], [0, 0]], dtype=float)
    unsettled = _points_within(xy, coordinates, np.array([0, 4, 8]), np.array([0, 1, 2]), shapely.bounds(triangles), False)[2]
    assert unsettled[2:].all() and not unsettled[0]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_cell_regions_are_geos_unions_of_the_cells_normalized(seed):
    """Against GEOS's coverage union of the cells' boxes on a turned grid, normalized: the
    same parts, holes and vertices to the last bit, on random masks full of cells and
    holes touching at a corner only."""
    from reconstruction.heightfield import Heightfield

    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(1, 12, 2))
    mask = rng.random(shape) < rng.uniform(0.2, 0.9)
    field = Heightfield(rng.uniform(0, np.pi), rng.uniform(-1e5, 1e6), rng.uniform(-1e5, 7e6),
                        float(rng.choice([0.5, 0.37, 1.0])), np.zeros(shape), np.zeros(shape), mask, mask)
    i, j = np.nonzero(mask)
    boxes = shapely.box(field.u0 + i * field.cell, field.v0 + j * field.cell,
                        field.u0 + (i + 1) * field.cell, field.v0 + (j + 1) * field.cell)
    expected = shapely.normalize(shapely.transform(shapely.coverage_union_all(boxes), field._grid_to_map))
    found = field.cell_region(mask)
    assert found.geom_type == expected.geom_type
    assert shapely.equals_exact(found, expected, tolerance=0.0)
    assert np.array_equal(shapely.get_coordinates(found), shapely.get_coordinates(expected))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_rasterised_cells_are_those_whose_box_meets_the_footprints_interior(seed, on_the_grid):
    """Over a footprint with a courtyard: with its edges on grid lines (cells beside an
    edge touch it without meeting the interior), or slanted on a turned grid."""
    from reconstruction.heightfield import rasterize, rotation

    rng = np.random.default_rng(seed)
    if on_the_grid:
        corners = rng.integers(0, 30, (3, 2)).astype(float)
        outline = shapely.union_all([shapely.box(*c, *(c + rng.integers(4, 12, 2))) for c in corners])
        angle = 0.0
    else:
        outline = shapely.MultiPoint(rng.uniform(0, 30, (8, 2))).convex_hull.buffer(2.0, quad_segs=2)
        angle = float(rng.uniform(0, 90))
    courtyard = outline.centroid.buffer(1.0, cap_style="square")
    footprint = affinity.translate(outline.difference(courtyard), 652_000.0, 6_862_000.0)
    field = rasterize(np.empty((0, 3)), footprint, 0.5, angle)
    local = shapely.transform(footprint, lambda xy: xy @ rotation(angle).T)
    iu, iv = np.meshgrid(*(np.arange(n) for n in field.covered.shape), indexing="ij")
    boxes = shapely.box(field.u0 + iu * 0.5, field.v0 + iv * 0.5, field.u0 + (iu + 1) * 0.5, field.v0 + (iv + 1) * 0.5)
    assert np.array_equal(field.covered, shapely.intersects(local, boxes) & ~shapely.touches(local, boxes))


def test_group_sums_add_each_groups_rows_first_to_last():
    from reconstruction.geometry import group_sums

    rng = np.random.default_rng(5)
    values = rng.normal(size=(500, 3)) * 10.0 ** rng.integers(-6, 7, (500, 1))  # order matters at these scales
    group = rng.integers(0, 40, 500)
    expected = np.zeros((42, 3))  # the last two groups empty
    for row, k in zip(values, group):
        expected[k] += row
    assert np.array_equal(group_sums(values, group, 42), expected)
