"""Dense image matching (reconstruction.stereo), labelling of its points (reconstruction.labels)
and `twin match`: on small ray-cast scenes, then the acceptance on the sample's aerial images."""

from __future__ import annotations

import json
import time

import laspy
import numpy as np
import open3d as o3d
import pytest
import shapely
from click.testing import CliRunner

from reconstruction import stereo
from reconstruction.labels import BUILDING, GROUND, HIGH_VEGETATION, MEDIUM_VEGETATION, OTHER, label_points
from tests.conftest import SAMPLE
from tests.test_inputs import write_footprints
from twin.imagery.camera import FrameCamera, Intrinsics, look_at
from twin.photogrammetry import _ground_sampling_distance, match_images, write_points_laz

BOX = (-10.0, -5.0, 10.0, 10.0)
"""The test box's footprint (xmin, ymin, xmax, ymax); 10 m high on a ground plane at z = 0."""
BOX_HEIGHT = 10.0


def _box_scene() -> o3d.t.geometry.RaycastingScene:
    ground = o3d.geometry.TriangleMesh.create_box(300, 300, 1.0).translate((-150, -150, -1.0))
    xmin, ymin, xmax, ymax = BOX
    box = o3d.geometry.TriangleMesh.create_box(xmax - xmin, ymax - ymin, BOX_HEIGHT).translate((xmin, ymin, 0))
    scene = o3d.t.geometry.RaycastingScene()
    for mesh in (ground, box):
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    return scene


def _pattern(points: np.ndarray) -> np.ndarray:
    """Grey values in [0, 1] of a pattern fixed to the world: sines of wavelengths 0.8 to 3 m
    in many directions, smooth enough (above two pixels) not to alias when point sampled."""
    rng = np.random.default_rng(5)
    directions = rng.normal(size=(12, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(0.8, 3.0, 12)
    phases = rng.uniform(0, 2 * np.pi, 12)
    # In float32, computed in place: ten times faster than in float64 on the large images,
    # and the phases (a few thousand radians at most) stay within 1e-4 radians.
    waves = points.astype(np.float32) @ (2 * np.pi * directions.T / wavelengths).astype(np.float32)
    waves += phases.astype(np.float32)
    np.sin(waves, out=waves)
    return 0.5 + 0.5 * waves.mean(axis=1) * 2.5


def _render(scene, camera: FrameCamera) -> np.ndarray:
    width, height = camera.intrinsics.width, camera.intrinsics.height
    v, u = np.mgrid[0:height, 0:width]
    directions = camera.rays(np.column_stack([u.ravel(), v.ravel()]).astype(float))
    rays = np.column_stack([np.broadcast_to(camera.center, directions.shape), directions]).astype(np.float32)
    distance = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    grey = np.clip(_pattern(camera.center + directions * distance[:, None]) * 255, 0, 255).astype(np.uint8)
    return np.stack([grey, grey // 2 + 60, 255 - grey], axis=1).reshape(height, width, 3)


def _cameras(offsets, k1: float = 0.0) -> list[FrameCamera]:
    """Nadir cameras 150 m above the ground (0.19 m pixels) at the given horizontal offsets."""
    intrinsics = Intrinsics(480, 360, 800.0, 800.0, 241.0, 178.5, k1=k1, k2=0.01 * k1)
    cameras = []
    for index, (dx, dy) in enumerate(offsets):
        center = np.array([dx, dy, 150.0])
        cameras.append(FrameCamera(f"c{index}", intrinsics, center, look_at(center, center - [0, 0, 150.0])))
    return cameras


def _box_errors(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Height errors of the points well inside the box's roof and well outside it."""
    xmin, ymin, xmax, ymax = BOX
    x, y = points[:, 0], points[:, 1]
    on_roof = (x > xmin + 1) & (x < xmax - 1) & (y > ymin + 1) & (y < ymax - 1)
    on_ground = (x < xmin - 2) | (x > xmax + 2) | (y < ymin - 2) | (y > ymax + 2)
    return points[on_roof, 2] - BOX_HEIGHT, points[on_ground, 2]


@pytest.fixture(scope="module")
def box_scene():
    return _box_scene()


@pytest.mark.parametrize("offsets", [((0, -25), (0, 25)), ((0, 25), (0, -25)), ((-25, 0), (25, 0)), ((20, 15), (-20, -15))],
                         ids=["along-y", "along-y-reversed", "along-x", "diagonal-reversed"])
def test_a_pair_gives_the_surfaces_whatever_the_baseline_direction(box_scene, offsets):
    cameras = _cameras(offsets, k1=-0.04)
    images = [_render(box_scene, c) for c in cameras]
    pair = stereo.rectify_pair(*cameras)
    points = stereo.match_pair(pair, *images, height_range=(-1.0, 12.0))
    roof, ground = _box_errors(points.xyz)
    gsd = 150.0 / 800.0
    assert len(roof) > 0.6 * (18 * 13) / gsd**2  # most of the roof (18 x 13 m inside its edges) is matched
    # On planes facing the cameras the disparity is one value, and the matcher's sub-pixel
    # fit pulls it towards the nearest whole pixel ("pixel locking"), by up to half a pixel:
    # depth^2 / (focal x baseline) / 2 in metres, 0.25 m on the roof and 0.28 m on the ground.
    half_pixel = lambda depth: depth**2 / (800.0 * 50.0) / 2  # noqa: E731
    assert np.median(np.abs(roof)) <= half_pixel(140.0) and np.median(np.abs(ground)) <= half_pixel(150.0)
    assert np.percentile(np.abs(np.concatenate([roof, ground])), 95) < 3 * gsd
    assert points.rgb.shape == points.xyz.shape and points.rgb.dtype == np.uint8


def test_disparities_beyond_what_the_matcher_stores_are_matched_not_dropped(box_scene):
    """A long baseline in pixels (large-format cameras): disparities of about 2,200 px, beyond
    the 2,047 that OpenCV's matcher stores, still give the ground at its height."""
    cameras = _wide_cameras(15.0)
    images = [_render(box_scene, c) for c in cameras]
    pair = stereo.rectify_pair(*cameras)
    search = stereo.disparity_range(pair, (-0.5, 0.5))
    assert search.minimum > 2047
    points = stereo.match_pair(pair, *images, height_range=(-0.5, 0.5))
    overlap_pixels = (4000 - 3000 * 15 / 20) * 200
    assert len(points.xyz) > 0.8 * overlap_pixels
    assert np.percentile(np.abs(points.xyz[:, 2]), 99) < 0.05


def _wide_cameras(baseline: float) -> list[FrameCamera]:
    """Two nadir cameras of 4,000 x 200 pixels (3,000 px focal) 20 m above the ground, `baseline` apart along x."""
    intrinsics = Intrinsics(4000, 200, 3000.0, 3000.0, 1999.5, 99.5)
    cameras = []
    for index, dx in enumerate((-baseline / 2, baseline / 2)):
        center = np.array([dx, 40.0, 20.0])
        cameras.append(FrameCamera(f"w{index}", intrinsics, center, look_at(center, center - [0, 0, 20.0])))
    return cameras


def test_a_search_wider_than_the_matcher_stores_is_refused():
    pair = stereo.rectify_pair(*_wide_cameras(5.0))
    images = [np.zeros((200, 4000, 3), np.uint8)] * 2
    # Both images see heights up to 15 m (5 m below the cameras): disparities of 750 to 3,000 px.
    assert stereo.disparity_range(pair, (-0.5, 15.0)).count > 2047
    with pytest.raises(ValueError, match="narrow the height range or match at a lower scale"):
        stereo.match_pair(pair, *images, height_range=(-0.5, 15.0))


def _tilted_along_x(offsets, tilt_deg: float) -> list[FrameCamera]:
    """Cameras 150 m up looking `tilt_deg` from the nadir towards +x, the direction of their baseline."""
    intrinsics = Intrinsics(480, 360, 800.0, 800.0, 239.5, 179.5)
    reach = 150.0 * np.tan(np.radians(tilt_deg))
    cameras = []
    for index, dx in enumerate(offsets):
        center = np.array([dx, 0.0, 150.0])
        cameras.append(FrameCamera(f"t{index}", intrinsics, center, look_at(center, center + [reach, 0, -150.0])))
    return cameras


def test_views_too_oblique_to_their_baseline_are_not_paired():
    """Two frames tilted 55 degrees along their baseline overlap, with a fair base-to-height
    ratio and parallel views, but their rectified images would be 2.5 times the originals."""
    tilted = _tilted_along_x((0.0, 40.0), 55.0)
    problem = stereo.rectification_problem(*tilted)
    assert "views too oblique to the baseline" in problem
    with pytest.raises(ValueError, match="views too oblique to the baseline"):
        stereo.rectify_pair(*tilted)
    assert stereo.select_pairs(tilted, (0.0, 10.0)) == []
    assert stereo.rectification_problem(*_tilted_along_x((0.0, 40.0), 20.0)) is None
    assert len(stereo.select_pairs(_tilted_along_x((0.0, 40.0), 20.0), (0.0, 10.0))) == 1


def test_a_pair_that_cannot_be_matched_is_skipped_and_the_others_thinned(box_scene):
    cameras = _cameras(((0, -25), (0, 25), (0, 0))) + _tilted_along_x((0.0, 40.0), 55.0)
    images = {c.name: _render(box_scene, c) for c in cameras[:3]}
    matched = match_images(cameras, images, (-1.0, 12.0), [(0, 1), (3, 4), (0, 2)], tolerance=1.0, spacing=0.6)
    assert matched.pairs == [(0, 1), (0, 2)] and all(n > 10_000 for n in matched.points_per_pair)
    assert len(matched.skipped) == 1 and matched.skipped[0].startswith("t0:t1: ") and "too oblique" in matched.skipped[0]
    # Each pair's points (0.19 m pixels) were thinned to one per 0.3 m cube (half the
    # smaller of spacing and tolerance) before the cross-pair check: on flat ground, at
    # most one per 0.3 x 0.3 m of each of the two pairs.
    x, y = matched.xyz[:, 0], matched.xyz[:, 1]
    ground_patch = (x > 12) & (x < 20) & (y > -10) & (y < 10)
    assert ground_patch.sum() / (8 * 20) <= 2 / 0.3**2
    roof, ground = _box_errors(matched.xyz)
    assert np.median(np.abs(np.concatenate([roof, ground]))) < 0.3


def test_the_disparity_range_follows_the_height_range(box_scene):
    cameras = _cameras(((0, -25), (0, 25)))
    pair = stereo.rectify_pair(*cameras)
    search = stereo.disparity_range(pair, (-1.0, 12.0))
    # Disparity is focal x baseline / depth: depths 138 m (roof top) to 151 m (below the ground).
    assert search.minimum <= 800 * 50 / 151 and search.minimum + search.count >= 800 * 50 / 138
    assert search.count % 16 == 0 and search.count <= 32
    wider = stereo.disparity_range(pair, (-1.0, 30.0))
    assert wider.minimum + wider.count > search.minimum + search.count
    far_apart = stereo.rectify_pair(*_cameras(((0, -200), (0, 200))))
    assert stereo.disparity_range(far_apart, (-1.0, 12.0)) is None  # their views do not overlap


def test_a_point_is_kept_only_where_another_pair_confirms_it():
    surface = np.column_stack([np.repeat(np.arange(10.0), 10), np.tile(np.arange(10.0), 10), np.zeros(100)])
    outlier = np.array([[5.0, 5.0, 7.0]])
    first, second = np.vstack([surface, outlier]), surface + [0.05, 0.0, 0.1]
    kept = stereo.confirmed_by_other_pairs([first, second], tolerance=0.3)
    assert kept[0][:100].all() and not kept[0][100] and kept[1].all()
    assert not stereo.confirmed_by_other_pairs([surface], 0.3)[0].any()


def test_points_no_other_pair_sees_are_kept_and_the_others_checked():
    cameras = _cameras(((0, -10), (0, 10), (0, 10), (0, 40)))
    # Both images of the first pair see y from -23 to 23 m, those of the second from 6 to 43 m.
    only_first = np.array([[0.0, -20.0, 0.0]])
    both = np.array([[0.0, 10.0, 0.0], [0.0, 20.0, 0.0]])
    first = np.vstack([only_first, both])
    second = both[:1]
    kept = stereo.consistent_across_pairs([first, second], [(cameras[0], cameras[1]), (cameras[2], cameras[3])], 0.3)
    assert kept[0].tolist() == [True, True, False]
    assert kept[1].tolist() == [True]


def test_pairs_are_chosen_by_overlap_and_base_to_height():
    strip = _cameras(((0, 0), (40, 0), (80, 0), (400, 0), (0, 5)))
    chosen = {(p.first, p.second) for p in stereo.select_pairs(strip, (0.0, 10.0))}
    # 0-1 and 1-2 overlap by 56 % with a base of 0.27 height; 0-2 by 11 %; 3 overlaps no one;
    # 0-4 overlap almost wholly but their base (5 m for 150 m) gives poor depths.
    assert chosen == {(0, 1), (1, 2), (1, 4)}


def test_thinning_keeps_one_averaged_point_per_cube():
    xyz = np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [1.1, 0.1, 0.1]])
    rgb = np.array([[10, 20, 30], [30, 40, 50], [0, 0, 0]], dtype=np.uint8)
    thinned, colours = stereo.thin(xyz, rgb, 1.0)
    assert np.allclose(thinned, [[0.15, 0.15, 0.15], [1.1, 0.1, 0.1]])
    assert colours.tolist() == [[20, 30, 40], [0, 0, 0]]


def test_labels_ground_buildings_and_other():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (40000, 2))
    terrain = 50 + 0.04 * xy[:, 0] + 0.5 * np.sin(xy[:, 1] / 15)
    z = terrain + rng.normal(0, 0.05, len(xy))
    in_building = (xy[:, 0] > 30) & (xy[:, 0] < 60) & (xy[:, 1] > 30) & (xy[:, 1] < 50)
    in_tree = np.hypot(xy[:, 0] - 80, xy[:, 1] - 80) < 3
    in_shed = (xy[:, 0] > 10) & (xy[:, 0] < 16) & (xy[:, 1] > 70) & (xy[:, 1] < 76)  # no footprint
    z = np.where(in_building, 62.0, z)
    z = np.where(in_tree, terrain + 8, z)
    z = np.where(in_shed, terrain + 3, z)
    z[0] = terrain[0] - 6.0  # a mismatch far below the ground
    footprint = shapely.box(30.3, 29.8, 60.3, 49.8)  # offset, as digitised footprints are
    classes = label_points(np.column_stack([xy, z]), [footprint])
    plain = ~(in_building | in_tree | in_shed)
    plain[0] = False
    assert np.mean(classes[plain] == GROUND) > 0.99
    assert np.mean(classes[in_building & shapely.contains_xy(footprint, xy[:, 0], xy[:, 1])] == BUILDING) > 0.99
    assert np.all(classes[in_tree | in_shed] == OTHER) and classes[0] == OTHER


def test_green_points_above_the_ground_are_vegetation_even_over_a_roof():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 60, (20000, 2))
    z = np.full(len(xy), 50.0)
    footprint = shapely.box(20, 20, 40, 40)
    roof = shapely.contains_xy(footprint, xy[:, 0], xy[:, 1])
    crown = np.hypot(xy[:, 0] - 38, xy[:, 1] - 38) < 4  # a tree overhanging the roof's corner
    bush = np.hypot(xy[:, 0] - 8, xy[:, 1] - 8) < 2
    z = np.where(roof, 57.0, z)
    z = np.where(crown, 60.0, z)
    z = np.where(bush, 51.2, z)
    grass, foliage, tiles = [96, 124, 64], [52, 84, 40], [168, 82, 62]
    rgb = np.where((crown | bush)[:, None], foliage, np.where(roof[:, None], tiles, grass))
    classes = label_points(np.column_stack([xy, z]), [footprint], rgb=rgb)
    assert np.all(classes[crown] == HIGH_VEGETATION) and np.all(classes[bush] == MEDIUM_VEGETATION)
    assert np.all(classes[roof & ~crown] == BUILDING)
    assert np.mean(classes[~(roof | crown | bush)] == GROUND) > 0.99  # green lawn stays ground
    # A dark green-tinted roof (in shadow) is not vegetation: its chromaticity is noise.
    shadowed = label_points(np.column_stack([xy, z]), [footprint], rgb=np.where(roof[:, None], [10, 14, 8], rgb))
    assert np.all(shadowed[roof & ~crown] == BUILDING)
    # Without colours, the overhanging crown is building: what the colours are for.
    assert np.all(label_points(np.column_stack([xy, z]), [footprint])[crown & roof] == BUILDING)


def test_the_points_file_is_byte_identical_for_the_same_points(tmp_path):
    import pyproj

    rng = np.random.default_rng(3)
    xyz = rng.uniform([652000.0, 6862000.0, 40.0], [652100.0, 6862100.0, 90.0], (2000, 3))
    rgb = rng.integers(0, 256, (2000, 3), dtype=np.uint8)
    classes = rng.choice([OTHER, GROUND, MEDIUM_VEGETATION, HIGH_VEGETATION, BUILDING], 2000).astype(np.uint8)
    crs = pyproj.CRS("EPSG:2154")
    first = write_points_laz(tmp_path / "first.laz", xyz, rgb, classes, crs)
    time.sleep(1.1)  # a clock in the file would now differ
    second = write_points_laz(tmp_path / "second.laz", xyz, rgb, classes, crs)
    assert first.read_bytes() == second.read_bytes()
    las = laspy.read(first)
    assert np.allclose(las.header.scales, 0.001) and np.array_equal(las.header.offsets, np.floor(xyz.min(axis=0)))
    assert las.header.parse_crs().to_epsg() == 2154
    assert np.array_equal(las.classification, classes)
    assert np.array_equal(np.column_stack([las.red, las.green, las.blue]), rgb.astype(np.uint16) * 257)
    assert np.abs(np.column_stack([las.x, las.y, las.z]) - xyz).max() <= 0.0005 + 1e-9


# --- Acceptance on the sample district's rendered aerial images ---------------------------

IMAGERY = SAMPLE / "imagery"
HEIGHT_RANGE = (45.0, 90.0)
"""Below the lowest terrain (48 m) to above the highest roof (82.2 m) of the sample."""


@pytest.fixture(scope="module")
def sample_match(tmp_path_factory):
    """`twin match` on the sample's images: (cameras of the matched pairs, points (n, 3), LAZ path)."""
    from twin.cli import main
    from twin.imagery.readers import read_cameras_json
    from twin.photogrammetry import auto_pairs

    if not (IMAGERY / "cameras.json").exists():
        pytest.skip("sample_data/imagery/ is absent; run `twin sample` to render it")
    path = tmp_path_factory.mktemp("match") / "points.laz"
    result = CliRunner().invoke(main, [
        "match", "--cameras", str(IMAGERY / "cameras.json"), "--footprints", str(SAMPLE / "footprints.gpkg"),
        "--height-range", *map(str, HEIGHT_RANGE), "--out", str(path),
    ])
    assert result.exit_code == 0, result.output
    assert "8 image pairs matched" in result.output  # the vertical frames only: obliques look 45 degrees away
    cameras = read_cameras_json(IMAGERY / "cameras.json")
    used = sorted({i for pair in auto_pairs(cameras, HEIGHT_RANGE) for i in pair})
    las = laspy.read(path)
    return [cameras[i] for i in used], np.column_stack([las.x, las.y, las.z]), path


@pytest.fixture(scope="module")
def truth_surfaces():
    """The true buildings (LoD2.2, map coordinates) as a ray-casting scene, and their roof surfaces."""
    from reconstruction.triangulate import triangulate_surface
    from twin.inputs.cityjson import read_cityjson
    from twin.model import SurfaceKind

    vertices, triangles, roofs, count = [], [], [], 0
    for building in read_cityjson(SAMPLE / "truth.city.json").buildings:
        for solid in building.solids("2.2"):
            for surface in solid.surfaces:
                v, t = triangulate_surface(surface)
                vertices.append(v)
                triangles.append(t + count)
                count += len(v)
                if surface.kind == SurfaceKind.ROOF:
                    roofs.append(shapely.Polygon(surface.rings[0][:, :2], [r[:, :2] for r in surface.rings[1:]]))
    origin = np.vstack(vertices).min(axis=0)
    return _scene(np.vstack(vertices) - origin, np.vstack(triangles)), origin, roofs


def _scene(vertices: np.ndarray, triangles: np.ndarray) -> o3d.t.geometry.RaycastingScene:
    mesh = o3d.t.geometry.TriangleMesh()
    mesh.vertex.positions = o3d.core.Tensor(vertices.astype(np.float32))
    mesh.triangle.indices = o3d.core.Tensor(triangles.astype(np.int32))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(mesh)
    return scene


def test_points_lie_on_the_true_surfaces(sample_match, truth_surfaces):
    from twin.sample.generate import ORIGIN
    from twin.sample.scene import terrain_height

    cameras, xyz, _ = sample_match
    scene, origin, _ = truth_surfaces
    to_buildings = scene.compute_distance(o3d.core.Tensor((xyz - origin).astype(np.float32))).numpy()
    # The terrain is gentle (3 % at most): the vertical distance is the distance to it.
    to_terrain = np.abs(xyz[:, 2] - terrain_height(xyz[:, 0] - ORIGIN[0], xyz[:, 1] - ORIGIN[1]))
    distance = np.minimum(to_buildings, to_terrain)
    assert len(xyz) > 100_000
    assert np.median(distance) <= 2 * _ground_sampling_distance(cameras, HEIGHT_RANGE)
    # Few gross errors: trees, which the truth lacks, make most of those over 1 m.
    assert np.percentile(distance, 95) <= 0.5 and np.mean(distance > 1.0) < 0.03


def test_roofs_seen_by_two_images_are_covered(sample_match, truth_surfaces):
    """Share of 0.5 m cells of the true roofs, seen unhidden by two matched images, with a
    point within 0.5 m of the roof's height. Trees are not in the truth and may hide a few."""
    cameras, xyz, _ = sample_match
    scene, origin, roofs = truth_surfaces
    xmin, ymin, xmax, ymax = shapely.union_all(roofs).bounds
    gx, gy = np.meshgrid(np.arange(xmin + 0.25, xmax, 0.5), np.arange(ymin + 0.25, ymax, 0.5))
    cells = np.column_stack([gx.ravel(), gy.ravel()])
    cells = cells[shapely.contains_xy(shapely.union_all(roofs), cells[:, 0], cells[:, 1])]
    down = np.column_stack([cells - origin[:2], np.full(len(cells), 500.0), np.tile([0, 0, -1.0], (len(cells), 1))])
    roof_z = origin[2] + 500.0 - scene.cast_rays(o3d.core.Tensor(down.astype(np.float32)))["t_hit"].numpy()
    roof_points = np.column_stack([cells, roof_z])
    seen = np.zeros(len(cells), dtype=int)
    for camera in cameras:
        pixels, _ = camera.project(roof_points)
        towards = camera.center - roof_points
        length = np.linalg.norm(towards, axis=1)
        rays = np.column_stack([roof_points - origin + towards / length[:, None] * 0.05, towards / length[:, None]])
        blocked = np.isfinite(scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy())
        seen += camera.inside(pixels) & ~blocked
    visible = seen >= 2
    cell_of = np.full(gx.shape, -1)
    rows, columns = np.floor((cells[:, 1] - ymin) / 0.5).astype(int), np.floor((cells[:, 0] - xmin) / 0.5).astype(int)
    cell_of[rows, columns] = np.arange(len(cells))
    point_rows = np.floor((xyz[:, 1] - ymin) / 0.5).astype(int)
    point_columns = np.floor((xyz[:, 0] - xmin) / 0.5).astype(int)
    inside = (point_rows >= 0) & (point_rows < gx.shape[0]) & (point_columns >= 0) & (point_columns < gx.shape[1])
    cell = np.full(len(xyz), -1)
    cell[inside] = cell_of[point_rows[inside], point_columns[inside]]
    on_roof_cell = cell >= 0
    covered = np.zeros(len(cells), dtype=bool)
    covered[cell[on_roof_cell][np.abs(xyz[on_roof_cell, 2] - roof_z[cell[on_roof_cell]]) <= 0.5]] = True
    assert visible.sum() > 0.5 * len(cells)
    assert covered[visible].mean() >= 0.8


def test_twin_builds_lod12_heights_from_the_points(sample_match, tmp_path):
    """LOD1.2 heights (the 70th percentile of the roof points) within 0.3 m of the truth for
    every building. Trees overhanging B02 and B27 are labelled vegetation by their colour;
    without that, their crowns raised those roofs by 0.4 m."""
    import twin

    _, _, path = sample_match
    las = laspy.read(path)
    assert las.header.point_format.id == 7 and str(las.header.version) == "1.4"
    assert las.header.parse_crs() is not None and {2, 6} <= set(np.unique(las.classification).tolist())
    assert np.any(las.red != las.blue)  # colours from the images
    model = twin.build(points=[path], footprints=SAMPLE / "footprints.gpkg", out_dir=tmp_path, formats=("cityjson",))
    truth = json.loads((SAMPLE / "truth.json").read_text())["buildings"]
    assert all(b.status in ("built", "fallback") for b in model.buildings)
    errors = np.abs([b.attributes["h_roof_70p"] - truth[b.id]["h_roof_70p"] for b in model.buildings])
    assert np.median(errors) <= 0.15 and errors.max() <= 0.3, dict(zip([b.id for b in model.buildings], errors.round(3)))
    assert {4, 5} <= set(np.unique(las.classification).tolist())


def test_match_command_needs_the_height_range_and_known_pair_names(tmp_path):
    from twin.cli import main

    if not (IMAGERY / "cameras.json").exists():
        pytest.skip("sample_data/imagery/ is absent; run `twin sample` to render it")
    runner = CliRunner()
    common = ["match", "--cameras", str(IMAGERY / "cameras.json"), "--footprints", str(SAMPLE / "footprints.gpkg"),
              "--out", str(tmp_path / "p.laz")]
    assert runner.invoke(main, common).exit_code == 2  # --height-range is required
    result = runner.invoke(main, [*common, "--height-range", "45", "90", "--pairs", "nope:other"])
    assert result.exit_code == 2 and "no camera 'nope'" in result.output
    result = runner.invoke(main, [*common, "--height-range", "45", "90", "--images-dir", str(tmp_path)])
    assert result.exit_code == 2 and "image not found" in result.output
    twice = "vertical_1_1:vertical_1_2,vertical_1_2:vertical_1_1"
    result = runner.invoke(main, [*common, "--height-range", "45", "90", "--pairs", twice])
    assert result.exit_code == 2 and "is given twice" in result.output
    # A vertical and an oblique frame look too differently to be rectified: named, refused.
    result = runner.invoke(main, [*common, "--height-range", "45", "90", "--pairs", "vertical_1_1:oblique_south"])
    assert result.exit_code == 2 and "--pairs: vertical_1_1:oblique_south:" in result.output, result.output
    elsewhere = tmp_path / "utm.gpkg"
    write_footprints(elsewhere, [shapely.box(450000, 5410000, 450020, 5410020)], ["a"], crs="EPSG:32631")
    result = runner.invoke(main, [*common[:3], "--footprints", str(elsewhere), *common[5:], "--height-range", "45", "90"])
    assert result.exit_code == 2 and "reproject the footprints" in result.output
    assert not (tmp_path / "p.laz").exists()


def test_match_command_names_why_no_pair_could_be_matched(tmp_path, monkeypatch):
    import twin.photogrammetry
    from twin.cli import main

    if not (IMAGERY / "cameras.json").exists():
        pytest.skip("sample_data/imagery/ is absent; run `twin sample` to render it")

    def too_large(first, second, scale):
        raise ValueError(f"cameras {first.name!r} and {second.name!r} would need a rectified image of 40000 x 900 pixels")

    monkeypatch.setattr(twin.photogrammetry, "rectify_pair", too_large)
    result = CliRunner().invoke(main, [
        "match", "--cameras", str(IMAGERY / "cameras.json"), "--footprints", str(SAMPLE / "footprints.gpkg"),
        "--height-range", "45", "90", "--out", str(tmp_path / "p.laz"),
    ])
    assert result.exit_code == 2, result.output
    assert "no image pair could be matched: vertical_1_1:vertical_1_2: cameras 'vertical_1_1'" in result.output
    assert not (tmp_path / "p.laz").exists()
