"""The sample generator: deterministic, faithful to its ground truth, with the promised defects."""

from __future__ import annotations

import json
import subprocess
import sys

import laspy
import numpy as np
import pyogrio
import pytest
import shapely

from reconstruction.extrude import extrude_faces
from reconstruction.validate import validate_solid
from tests.conftest import ROOT
from tests.helpers import assert_closed_outward
from twin.sample.scene import district


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    folders = []
    for _ in range(2):
        out = tmp_path_factory.mktemp("sample")
        # Imagery is checked on its own below: rendering it twice would double this fixture's time.
        command = [sys.executable, "-m", "twin", "sample", "--out", str(out), "--no-imagery"]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        folders.append(out)
    return folders


def test_generation_is_deterministic(regenerated):
    first, second = regenerated
    for name in ("lidar.laz", "footprints.gpkg", "communes.gpkg", "truth.city.json", "truth.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_committed_sample_is_what_the_generator_makes(regenerated, sample_dir):
    # Compared by content, not bytes: GDAL versions write GeoPackages differently, and ray
    # casting may round differently on another CPU.
    fresh = regenerated[0]
    committed_truth = json.loads((sample_dir / "truth.json").read_text())["buildings"]
    fresh_truth = json.loads((fresh / "truth.json").read_text())["buildings"]
    assert committed_truth.keys() == fresh_truth.keys()
    for building_id, record in committed_truth.items():
        for key in ("h_ground", "h_roof_70p", "h_roof_max", "volume"):
            assert fresh_truth[building_id][key] == pytest.approx(record[key], abs=0.002), (building_id, key)
    for name in ("footprints.gpkg", "communes.gpkg"):
        a, b = (pyogrio.raw.read(folder / name) for folder in (sample_dir, fresh))
        assert all(shapely.equals_exact(shapely.from_wkb(x), shapely.from_wkb(y), 0.001) for x, y in zip(a[2], b[2]))
        assert all(np.array_equal(x, y) for x, y in zip(a[3], b[3]))
    counts = [laspy.open(folder / "lidar.laz").header.point_count for folder in (sample_dir, fresh)]
    assert abs(counts[0] - counts[1]) <= 0.005 * counts[0]


def test_sample_is_small(sample_dir):
    total = sum(p.stat().st_size for p in sample_dir.iterdir() if p.is_file())
    assert total < 5_000_000
    imagery = sum(p.stat().st_size for p in (sample_dir / "imagery").iterdir())
    assert imagery < 3_500_000


def test_scene_has_the_promised_buildings_and_valid_truth():
    buildings, trees = district()
    assert len(buildings) >= 30
    shapes = " ".join(b.shape for b in buildings)
    for shape in ("flat", "multi-level flat", "shed", "gable", "hip", "pyramid", "L-shaped gable", "T-shaped gable",
                  "courtyard", "tower on podium", "terraced", "tiny shed"):
        assert shape in shapes, shape
    assert any(b.footprint.area < 15 for b in buildings)
    for building in buildings:
        solid = extrude_faces(building.roof_faces(), building.ground_z)
        assert validate_solid(solid) == [], building.id
        assert_closed_outward(solid, building.id)
        assert sum(f.polygon.area for f in building.roof_faces()) == pytest.approx(building.footprint.area, rel=1e-6)
    over_roofs = [t for t in trees if any(b.footprint.distance(shapely.Point(t.x, t.y)) < t.crown_radius for b in buildings)]
    assert len(over_roofs) >= 3


def test_lidar_is_lidar_hd_like(sample_dir):
    las = laspy.read(sample_dir / "lidar.laz")
    classes = set(np.unique(las.classification).tolist())
    assert {1, 2, 3, 4, 5, 6, 67} <= classes
    area = (las.header.maxs[0] - las.header.mins[0]) * (las.header.maxs[1] - las.header.mins[1])
    assert 10 <= las.header.point_count / area <= 25
    assert las.header.parse_crs().to_epsg() == 5698
    assert (np.asarray(las.number_of_returns) > 1).any()


def test_truth_checks_itself_against_the_points(sample_dir):
    """Roof points inside a true footprint sit on the true roof within the scan's noise."""
    truth = json.loads((sample_dir / "truth.json").read_text())
    buildings = {b.id: b for b in district()[0]}
    las = laspy.read(sample_dir / "lidar.laz")
    origin = truth["origin"]
    xyz = np.column_stack([las.x - origin[0], las.y - origin[1], las.z])
    roof = xyz[np.isin(las.classification, [6, 67])]
    for building_id in ("B02", "B21", "B24"):
        building = buildings[building_id]
        inner = building.footprint.buffer(-0.5)
        inside = roof[shapely.contains_xy(inner, roof[:, 0], roof[:, 1])]
        residual = inside[:, 2] - building.roof_height(inside[:, 0], inside[:, 1])
        assert np.median(np.abs(residual)) < 0.05, building_id


def test_footprint_defects_are_there(sample_dir):
    meta, _, wkb, fields = pyogrio.raw.read(sample_dir / "footprints.gpkg")
    ids = list(fields[list(meta["fields"]).index("id")])
    geometries = dict(zip(ids, shapely.from_wkb(wkb)))
    assert "B30" not in ids
    assert len(geometries["B26"].geoms) == 2
    assert not geometries["B31"].is_valid
    assert len(geometries["B20"].geoms[0].interiors) == 1
    assert geometries["B28"].intersection(geometries["B29"]).area > 1


@pytest.fixture(scope="module")
def survey(sample_dir):
    from twin.imagery.images import read_image
    from twin.imagery.readers import read_cameras_json

    cameras = read_cameras_json(sample_dir / "imagery" / "cameras.json")
    return cameras, [read_image(camera.image) for camera in cameras]


def test_survey_has_verticals_and_obliques_that_see_every_building(survey):
    cameras, _ = survey
    truth_buildings = district()[0]
    origin = np.array([*json.loads((ROOT / "sample_data" / "truth.json").read_text())["origin"], 0.0])
    assert sum(c.name.startswith("vertical") for c in cameras) == 8
    assert sum(c.name.startswith("oblique") for c in cameras) == 4
    assert all(c.crs.to_epsg() == 5698 for c in cameras)
    for building in truth_buildings:
        roof_points = np.array([[*f.polygon.representative_point().coords[0], 0.0] for f in building.roof_faces()])
        roof_points[:, 2] = building.roof_height(roof_points[:, 0], roof_points[:, 1])
        seen_by = [c.name for c in cameras if c.inside(c.project(roof_points + origin)[0], margin=5).all()]
        assert sum(name.startswith("vertical") for name in seen_by) >= 2, building.id
        assert any(name.startswith("oblique") for name in seen_by), building.id


def test_images_show_the_scene_pattern_where_the_cameras_say(survey):
    """The committed images agree with their cameras: the true colour of visible scene
    points is what the images hold at the points' projections."""
    import open3d as o3d

    from twin.sample.imagery import sample_scene

    cameras, images = survey
    buildings, trees = district()
    scene = sample_scene(buildings, trees)
    origin = np.array([*json.loads((ROOT / "sample_data" / "truth.json").read_text())["origin"], 0.0])
    rng = np.random.default_rng(0)
    for camera, image in zip(cameras, images):
        # Points of the scene that this camera sees: hits of its own rays through random pixels.
        pixels = np.column_stack([rng.uniform(20, camera.intrinsics.width - 20, 400), rng.uniform(20, camera.intrinsics.height - 20, 400)])
        local_center = camera.center - origin
        directions = camera.rays(pixels)
        rays = np.column_stack([np.broadcast_to(local_center, directions.shape), directions]).astype(np.float32)
        distance = scene.raycasting.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().astype(float)
        points = local_center + directions * distance[:, None]
        expected = scene.colour_at(points)
        got = image[np.round(pixels[:, 1]).astype(int), np.round(pixels[:, 0]).astype(int)].astype(float)
        # Rounding to the nearest pixel, JPEG and sensor noise blur single pixels: compare medians.
        assert np.median(np.abs(got - expected)) < 12, camera.name
        shuffled = np.median(np.abs(got - expected[rng.permutation(len(expected))]))
        assert shuffled > 2 * np.median(np.abs(got - expected)), camera.name


def test_rendering_is_deterministic():
    from twin.imagery.camera import FrameCamera, Intrinsics, look_at
    from twin.sample.imagery import sample_scene

    buildings, trees = district()
    scene = sample_scene(buildings, trees)
    center = np.array([60.0, 20.0, 120.0])
    camera = FrameCamera("small", Intrinsics(160, 120, 200.0, 200.0, 79.5, 59.5, k1=-0.05), center, look_at(center, np.array([60.0, 80.0, 50.0])))
    images = [scene.render(camera, np.zeros(3), np.random.default_rng(5)) for _ in range(2)]
    assert np.array_equal(*images)
    assert images[0].std() > 10
