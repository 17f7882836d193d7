"""Readers: footprints from OGR formats with their repairs, point files with their CRS."""

from __future__ import annotations

import laspy
import numpy as np
import pyogrio
import pyproj
import pytest
import shapely

from twin.config import ClassMapping
from twin.errors import InputError
from twin.inputs import points
from twin.inputs.footprints import read_footprints, repair_footprint
from twin.inputs.points import KeepMask, TerrainSums, open_sources, read_file
from twin.gpstime import gps_date

X0, Y0 = 668000.0, 6860000.0


def write_footprints(path, geometries, ids, driver="GPKG", crs="EPSG:2154", field="id"):
    pyogrio.raw.write(
        path,
        geometry=np.array([shapely.to_wkb(g) for g in geometries], dtype=object),
        field_data=[np.array(ids, dtype=object)],
        fields=[field],
        driver=driver,
        crs=crs,
        geometry_type="Unknown",
    )
    return path


def write_laz(path, xyz, classification, crs="EPSG:2154", gps_time=None):
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.offsets = np.floor(xyz.min(axis=0))
    header.scales = np.array([0.01, 0.01, 0.01])
    if crs is not None:
        header.add_crs(pyproj.CRS(crs))
    points = laspy.ScaleAwarePointRecord.zeros(len(xyz), header=header)
    points.x, points.y, points.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points.classification = classification
    if gps_time is not None:
        points.gps_time = gps_time
    with laspy.open(path, mode="w", header=header) as writer:
        writer.write_points(points)
    return path


def box(x, y, w, h):
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


@pytest.mark.parametrize("driver, suffix", [("GPKG", ".gpkg"), ("GeoJSON", ".geojson"), ("ESRI Shapefile", ".shp")])
def test_footprints_from_any_ogr_format(tmp_path, driver, suffix):
    path = write_footprints(tmp_path / f"f{suffix}", [box(0, 0, 10, 10), box(20, 0, 5, 5)], ["a", "b"], driver=driver)
    footprints = read_footprints(path)
    assert [f.id for f in footprints.footprints] == ["a", "b"]
    assert footprints.id_field == "id" and footprints.crs.to_epsg() == 2154
    assert footprints.footprints[0].polygon.area == pytest.approx(100)


def test_repairs_are_recorded(tmp_path):
    lobe_ring = [(0, 0), (10, 0), (10, 8), (10.8, 8.2), (10.8, 9), (10, 8), (0, 8), (0, 0)]
    self_touching = shapely.affinity.translate(shapely.Polygon(lobe_ring), X0, Y0)
    multipolygon = shapely.MultiPolygon([box(30, 0, 10, 10), box(45, 0, 4, 4)])
    with_sliver_hole = shapely.Polygon(box(60, 0, 10, 10).exterior, [box(62, 2, 0.5, 0.5).exterior.coords[::-1]])
    with_courtyard = shapely.Polygon(box(80, 0, 30, 30).exterior, [box(90, 10, 10, 10).exterior.coords[::-1]])
    overlapping = [box(120, 0, 10, 10), box(129, 0, 10, 6)]
    path = write_footprints(
        tmp_path / "f.gpkg",
        [self_touching, multipolygon, with_sliver_hole, with_courtyard, *overlapping],
        ["touch", "multi", "sliver", "court", "big", "small"],
    )
    by_id = {f.id: f for f in read_footprints(path).footprints}
    assert set(by_id) == {"touch", "multi", "multi_2", "sliver", "court", "big", "small"}
    for footprint in by_id.values():
        assert footprint.polygon.is_valid and footprint.polygon.geom_type == "Polygon"
    assert "invalid geometry repaired" in by_id["touch"].notes[0]
    assert by_id["touch"].polygon.area == pytest.approx(80)
    assert by_id["multi"].polygon.area == pytest.approx(100) and by_id["multi_2"].attributes["source_id"] == "multi"
    assert len(by_id["sliver"].polygon.interiors) == 0 and "sliver hole" in by_id["sliver"].notes[0]
    assert len(by_id["court"].polygon.interiors) == 1 and not by_id["court"].notes
    assert by_id["small"].polygon.area == pytest.approx(60 - 6) and "overlapped" in by_id["small"].notes[0]
    assert by_id["big"].polygon.area == pytest.approx(100)
    assert by_id["small"].polygon.intersection(by_id["big"].polygon).area < 1e-6


def test_unusable_geometries_are_rejected_per_feature():
    assert repair_footprint(None) == ([], ["the footprint has no geometry"])
    polygons, notes = repair_footprint(shapely.LineString([(0, 0), (1, 1)]))
    assert polygons == [] and "LineString" in notes[-1]
    polygons, notes = repair_footprint(shapely.box(0, 0, 0.5, 0.5))
    assert polygons == [] and "smaller than" in notes[-1]


@pytest.mark.parametrize(
    "ids, field, message",
    [
        (["a", "a"], "id", "duplicate value"),
        (["a", ""], "id", "empty 'id'"),
    ],
)
def test_bad_ids_are_refused(tmp_path, ids, field, message):
    path = write_footprints(tmp_path / "f.gpkg", [box(0, 0, 5, 5), box(10, 0, 5, 5)], ids, field=field)
    with pytest.raises(InputError, match=message):
        read_footprints(path)


def test_missing_id_field_and_empty_file_are_refused(tmp_path):
    path = write_footprints(tmp_path / "f.gpkg", [box(0, 0, 5, 5)], ["a"])
    with pytest.raises(InputError, match="no field named 'cleabs'"):
        read_footprints(path, id_field="cleabs")
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(InputError, match="no features"):
        read_footprints(empty)
    with pytest.raises(InputError, match="no such file"):
        read_footprints(tmp_path / "absent.gpkg")


def test_feature_ids_serve_when_no_id_field(tmp_path):
    path = write_footprints(tmp_path / "f.gpkg", [box(0, 0, 5, 5)], ["x"], field="nature")
    footprints = read_footprints(path)
    assert footprints.id_field is None and footprints.footprints[0].id == "f.1"


def test_keep_mask_keeps_points_near_footprints_only():
    mask = KeepMask.of_boxes(np.array([box(0, 0, 10, 10).buffer(4).bounds, box(100, 0, 10, 10).bounds]))
    x = np.array([X0 + 5, X0 - 3, X0 + 40, X0 + 13, X0 + 105])
    y = np.array([Y0 + 5, Y0 + 5, Y0 + 5, Y0 + 13, Y0 + 5])
    assert mask.contains(x, y).tolist() == [True, True, False, True, True]


def test_point_crs_comes_from_header_or_option(tmp_path):
    xyz = np.array([[X0, Y0, 50.0], [X0 + 1, Y0 + 1, 51.0]])
    no_crs = write_laz(tmp_path / "no_crs.laz", xyz, np.array([2, 6]), crs=None)
    with pytest.raises(InputError, match="no CRS in its header; pass it with --crs"):
        open_sources([no_crs], None, None)
    _, crs, notes = open_sources([no_crs], "EPSG:2154", None)
    assert crs.to_epsg() == 5698 and "NGF-IGN69" in notes[0]

    compound = write_laz(tmp_path / "compound.laz", xyz, np.array([2, 6]), crs="EPSG:2154+5720")
    _, crs, notes = open_sources([compound], None, None)
    assert crs.to_epsg() == 5698 and notes == []
    with pytest.raises(InputError, match="--vertical-crs"):
        open_sources([compound], None, "EPSG:5703")

    other = write_laz(tmp_path / "utm.laz", xyz, np.array([2, 6]), crs="EPSG:32631")
    with pytest.raises(InputError, match="no vertical datum"):
        open_sources([other], None, None)
    with pytest.raises(InputError, match="must share one CRS"):
        open_sources([compound, other], None, "EPSG:5720")
    with pytest.raises(InputError, match="the header says"):
        open_sources([compound], "EPSG:32631", None)


def test_points_are_cropped_classified_and_dated(tmp_path):
    rng = np.random.default_rng(0)
    xyz = np.column_stack([X0 + rng.uniform(0, 200, 5000), Y0 + rng.uniform(0, 200, 5000), rng.uniform(40, 60, 5000)])
    classes = rng.choice([1, 2, 5, 6, 67], 5000)
    # 2021-02-15 as adjusted standard GPS time, with the header left on GPS week time as IGN does
    gps = np.full(5000, 297417271.7)
    path = write_laz(tmp_path / "p.laz", xyz, classes, gps_time=gps)
    keep = KeepMask.of_boxes(np.array([box(0, 0, 50, 50).bounds]))
    terrain = TerrainSums((X0, Y0, X0 + 200, Y0 + 200))
    found = read_file(str(path), ClassMapping(), keep, terrain)
    kept = np.vstack([found.roof_xyz, found.ground_xyz])
    inside = (xyz[:, 0] < X0 + 50) & (xyz[:, 1] < Y0 + 50)
    assert len(found.roof_xyz) == np.sum(inside & np.isin(classes, [6, 67]))
    assert len(found.ground_xyz) == np.sum(inside & (classes == 2))
    assert np.all(kept[:, 0] < X0 + 55) and np.all(kept[:, 1] < Y0 + 55)
    assert found.acquisition_dates == ("2021-02-15", "2021-02-15") == (gps_date(gps[0]),) * 2
    assert len(found.roof_gps_time) == len(found.roof_xyz)
    # every ground point feeds the terrain, kept or not: mean heights per 10 m cell
    assert terrain.counts.sum() == np.sum(classes == 2)
    centre = (X0 + 105, Y0 + 105)  # the centre of a terrain cell
    cell = (np.floor(xyz[:, 0] / 10) == np.floor(centre[0] / 10)) & (np.floor(xyz[:, 1] / 10) == np.floor(centre[1] / 10))
    assert np.sum(cell & (classes == 2)) > 0
    height, distance = terrain.around(*centre, 30).height_near(*centre)
    assert distance == 0 and height == pytest.approx(xyz[cell & (classes == 2), 2].mean(), abs=0.006)


def test_reading_in_small_chunks_into_small_arrays_gives_the_same_points(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    xyz = np.column_stack([X0 + rng.uniform(0, 200, 5000), Y0 + rng.uniform(0, 200, 5000), rng.uniform(40, 60, 5000)])
    classes = rng.choice([1, 2, 6], 5000)
    path = str(write_laz(tmp_path / "p.laz", xyz, classes, gps_time=297417271.7 + rng.uniform(0, 100, 5000)))
    keep = KeepMask.of_boxes(np.array([box(0, 0, 120, 80).bounds]))
    whole = [read_file(path, ClassMapping(), mask) for mask in (None, keep)]
    # arrays first sized for 100 points, grown chunk after chunk of 700
    monkeypatch.setattr(points, "MAX_INITIAL_CAPACITY", 100)
    monkeypatch.setattr(points, "CHUNK_POINTS", 700)
    for mask, expected in zip((None, keep), whole):
        grown = read_file(path, ClassMapping(), mask)
        assert np.array_equal(grown.roof_xyz, expected.roof_xyz)
        assert np.array_equal(grown.roof_gps_time, expected.roof_gps_time)
        assert np.array_equal(grown.ground_xyz, expected.ground_xyz)
    assert len(whole[0].roof_xyz) == np.sum(classes == 6) and len(whole[0].ground_xyz) == np.sum(classes == 2)
    assert np.allclose(whole[0].roof_xyz, xyz[classes == 6], atol=0.006)  # in the file's order


def test_corrupt_and_missing_point_files_give_clear_errors(tmp_path, shared_data):
    with pytest.raises(InputError, match="not a readable LAS/LAZ file"):
        open_sources([shared_data / "lidarhd/edge-cases/corrupt.laz"], None, None)
    with pytest.raises(InputError, match="no such file"):
        open_sources([tmp_path / "absent.laz"], None, None)
    truncated = tmp_path / "truncated.laz"
    original = (shared_data / "lidarhd/bdtopo-870000-6618000/lidar.laz").read_bytes()
    truncated.write_bytes(original[: len(original) // 2])
    open_sources([truncated], None, None)  # the header is whole
    terrain = TerrainSums((870000, 6617000, 870400, 6617200))
    with pytest.raises(InputError, match="cannot be decoded"):
        read_file(str(truncated), ClassMapping(), None, terrain)
    assert terrain.counts.sum() == 0  # a file that breaks halfway adds nothing
