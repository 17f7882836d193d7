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
        result = subprocess.run([sys.executable, "-m", "twin", "sample", "--out", str(out)], capture_output=True, text=True)
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
    total = sum(p.stat().st_size for p in sample_dir.iterdir())
    assert total < 5_000_000


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
