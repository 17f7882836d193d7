"""End to end on real IGN data: LiDAR HD with BD TOPO footprints, and the edge cases."""

from __future__ import annotations

import json

import laspy
import numpy as np
import pytest
import shapely

import twin
from reconstruction.validate import validate_parts, validate_solid
from tests.helpers import assert_closed_outward, cityjson_validators, schema_errors
from tests.test_inputs import write_footprints, write_laz
from twin.errors import InputError


@pytest.fixture(scope="module")
def bdtopo(shared_data, tmp_path_factory):
    folder = shared_data / "lidarhd/bdtopo-870000-6618000"
    out = tmp_path_factory.mktemp("bdtopo")
    model = twin.build(points=[folder / "lidar.laz"], footprints=folder / "bdtopo_batiments.shp", out_dir=out)
    las = laspy.read(folder / "lidar.laz")
    points = np.column_stack([las.x, las.y, las.z])
    return model, out, points, np.asarray(las.classification), las.header


def test_footprints_over_the_points_get_plausible_lod1(bdtopo):
    model, _, points, classes, header = bdtopo
    extent = shapely.box(header.mins[0], header.mins[1], header.maxs[0], header.maxs[1])
    built = [b for b in model.buildings if b.status == "built"]
    assert len(built) >= 3
    roof_points = points[classes == 6]
    ground_points = points[classes == 2]
    for building in model.buildings:
        polygon = building.footprint
        inside = roof_points[shapely.contains_xy(polygon, roof_points[:, 0], roof_points[:, 1])]
        if not polygon.intersects(extent):
            assert building.status == "no points" and "outside" in building.reason
            continue
        if len(inside) < 3:
            assert building.status == "no points" and "building point" in building.reason
            continue
        assert building.status == "built", building.reason
        a = building.attributes
        z = inside[:, 2]
        assert z.min() <= a["h_roof_70p"] <= z.max()
        assert abs(a["h_roof_70p"] - np.percentile(z, 70)) < 0.5
        ring = polygon.buffer(4).difference(polygon)
        around = ground_points[shapely.contains_xy(ring, ground_points[:, 0], ground_points[:, 1])][:, 2]
        assert around.min() - 0.05 <= a["h_ground"] <= np.percentile(around, 50)
        assert 2.0 < a["h_roof_70p"] - a["h_ground"] < 30.0
        assert a["acquisition_date"] == "2021-02-15"
        assert validate_solid(building.solids("1.2")[0]) == []
        assert validate_parts(list(building.solids("1.3"))) == []
        for solid in (*building.solids("1.2"), *building.solids("1.3")):
            assert_closed_outward(solid, building.id)


def test_real_output_validates_and_names_the_compound_crs(bdtopo, validators_dir):
    model, out, *_ = bdtopo
    document = json.loads((out / "buildings.city.json").read_text())
    validator, _ = cityjson_validators(validators_dir / "cityjson-2.0")
    assert schema_errors(validator, document) == []
    assert document["metadata"]["referenceSystem"].endswith("/5698")
    metadata = json.loads((out / "metadata.json").read_text())
    assert any("NGF-IGN69" in note for note in metadata["notes"])  # header has EPSG:2154 only
    assert len(document["CityObjects"]) == len(model.buildings) == 40


def test_footprint_far_from_the_points_is_a_clear_error(shared_data, tmp_path):
    footprints = write_footprints(tmp_path / "far.gpkg", [shapely.box(100000, 6000000, 100010, 6000010)], ["far"])
    with pytest.raises(InputError, match="none of the 1 footprints .* overlaps the point files"):
        twin.build(points=[shared_data / "lidarhd/bdtopo-870000-6618000/lidar.laz"], footprints=footprints, out_dir=tmp_path / "out")
    assert not list((tmp_path / "out").iterdir())


def test_footprints_in_another_crs_are_refused(shared_data, tmp_path):
    footprints = write_footprints(tmp_path / "wgs.gpkg", [shapely.box(2.5, 48.8, 2.51, 48.81)], ["a"], crs="EPSG:4326")
    with pytest.raises(InputError, match="reproject them"):
        twin.build(points=[shared_data / "lidarhd/bdtopo-870000-6618000/lidar.laz"], footprints=footprints)
    utm = write_footprints(tmp_path / "utm.gpkg", [shapely.box(500000, 5000000, 500010, 5000010)], ["a"], crs="EPSG:32631")
    with pytest.raises(InputError, match="ogr2ogr -t_srs EPSG:2154"):
        twin.build(points=[shared_data / "lidarhd/bdtopo-870000-6618000/lidar.laz"], footprints=utm)


def test_single_point_file_gives_statuses_not_errors(shared_data, tmp_path):
    single = shared_data / "lidarhd/edge-cases/single_point.laz"
    x, y = 436050.0, 6383048.8
    footprints = write_footprints(tmp_path / "f.gpkg", [shapely.box(x - 5, y - 5, x + 5, y + 5)], ["near"])
    model = twin.build(points=[single], footprints=footprints, crs="EPSG:2154", out_dir=tmp_path / "out")
    (building,) = model.buildings
    assert building.status == "no points" and not building.lods
    assert json.loads((tmp_path / "out/summary.json").read_text())["counts"]["no points"] == 1


def test_no_crs_file_builds_once_the_crs_is_given(shared_data, tmp_path):
    path = shared_data / "lidarhd/edge-cases/no_crs.laz"
    footprints = write_footprints(tmp_path / "f.gpkg", [shapely.box(435010, 6291010, 435020, 6291020)], ["a"])
    with pytest.raises(InputError, match="--crs"):
        twin.build(points=[path], footprints=footprints)
    model = twin.build(points=[path], footprints=footprints, crs="EPSG:2154")
    assert model.crs.to_epsg() == 5698
    # all points of this file are unclassified (class 1): no building points, said so
    assert model.buildings[0].status == "no points"


def test_ground_falls_back_to_farther_points_with_a_reason(tmp_path):
    rng = np.random.default_rng(3)
    x0, y0 = 668000.0, 6860000.0
    roof = np.column_stack([x0 + rng.uniform(2, 8, 400), y0 + rng.uniform(2, 8, 400), np.full(400, 60.0)])
    far_ground = np.column_stack([x0 + rng.uniform(20, 30, 200), y0 + rng.uniform(0, 10, 200), np.full(200, 50.0)])
    laz = write_laz(tmp_path / "p.laz", np.vstack([roof, far_ground]), np.r_[np.full(400, 6), np.full(200, 2)])
    footprints = write_footprints(tmp_path / "f.gpkg", [shapely.box(x0, y0, x0 + 10, y0 + 10)], ["a"])
    (building,) = twin.build(points=[laz], footprints=footprints).buildings
    assert building.status == "fallback"
    assert building.attributes["ground_method"] == "nearest ground"
    assert "only 0 ground points within 4 m" in building.reason
    assert building.attributes["h_ground"] == pytest.approx(50.0, abs=0.02)
    assert building.attributes["h_roof_70p"] == pytest.approx(60.0, abs=0.02)
