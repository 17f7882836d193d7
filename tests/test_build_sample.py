"""End to end on the sample district: accuracy against its ground truth, and outputs
checked by the official CityJSON schemas, cjio and trimesh."""

from __future__ import annotations

import json

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import twin
from reconstruction.validate import validate_parts, validate_solid
from tests.helpers import cityjson_solids, cityjson_validators, mesh_of_cityjson_solid, schema_errors
from tests.helpers import assert_closed_outward


@pytest.fixture(scope="module")
def truth(sample_dir):
    return json.loads((sample_dir / "truth.json").read_text())


def test_every_footprint_is_in_the_output_with_a_status(sample_build, sample_dir):
    model, out = sample_build
    import pyogrio

    feature_ids = set(pyogrio.raw.read(sample_dir / "footprints.gpkg", columns=["id"])[3][0])
    ids = {b.id for b in model.buildings}
    assert feature_ids <= ids
    assert ids - feature_ids == {"B26_2"}  # the multipolygon's second part
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["total"] == len(model.buildings) == 34
    assert {b["id"]: b["status"] for b in summary["buildings"]} == {b.id: str(b.status) for b in model.buildings}
    assert all(b.status == "built" for b in model.buildings)


def test_heights_match_the_ground_truth(sample_build, truth):
    model, _ = sample_build
    ground_errors, roof_errors = [], []
    for building in model.buildings:
        expected = truth["buildings"][building.id]
        ground_errors.append(building.attributes["h_ground"] - expected["h_ground"])
        roof_errors.append(building.attributes["h_roof_70p"] - expected["h_roof_70p"])
    assert np.median(np.abs(ground_errors)) <= 0.15
    assert np.median(np.abs(roof_errors)) <= 0.15
    # No building is far off either: the worst cases are footprints offset over a neighbour.
    assert np.max(np.abs(ground_errors)) <= 0.3
    assert np.max(np.abs(roof_errors)) <= 0.5


def test_lod12_block_height_is_the_roof_percentile(sample_build):
    model, _ = sample_build
    for building in model.buildings:
        roof = max(v[2] for s in building.solids("1.2")[0].surfaces for r in s.rings for v in r)
        assert roof == pytest.approx(building.attributes["h_roof_70p"], abs=0.0011)


def test_lod13_splits_where_roofs_step_by_3_m(sample_build, truth):
    model, _ = sample_build
    by_id = {b.id: b for b in model.buildings}
    assert len(by_id["B21"].parts) == 2  # tower on a podium
    assert len(by_id["B17"].parts) == 2  # two flat levels 4.4 m apart
    tower = max(by_id["B21"].parts, key=lambda p: p.attributes["h_roof"])
    assert tower.attributes["h_roof"] == pytest.approx(truth["buildings"]["B21"]["h_roof_max"], abs=0.15)
    for single in ("B01", "B02", "B20", "B22", "B06"):  # flat, gable, courtyard, large flat, L-shape
        assert by_id[single].parts == () and "1.3" in by_id[single].lods
    for building in model.buildings:
        part_area = sum(p.attributes["area"] for p in building.parts) or building.footprint.area
        assert part_area == pytest.approx(building.footprint.area, rel=0.001)


def test_all_solids_are_valid_closed_and_outward(sample_build):
    model, _ = sample_build
    for building in model.buildings:
        assert building.attributes["validity_lod12"] == [] == validate_solid(building.solids("1.2")[0])
        assert building.attributes["validity_lod13"] == [] == validate_parts(list(building.solids("1.3")))
        for lod in ("1.2", "1.3"):
            for solid in building.solids(lod):
                assert_closed_outward(solid, f"{building.id} LoD{lod}")


def test_courtyard_survives_as_a_hole(sample_build):
    model, _ = sample_build
    courtyard = next(b for b in model.buildings if b.id == "B20")
    assert len(courtyard.footprint.interiors) == 1
    assert courtyard.attributes["volume_lod12"] == pytest.approx(
        courtyard.footprint.area * courtyard.attributes["height_lod12"], rel=1e-3
    )


def test_cityjson_validates_against_the_official_schema(sample_build, validators_dir):
    _, out = sample_build
    document = json.loads((out / "buildings.city.json").read_text())
    file_validator, _ = cityjson_validators(validators_dir / "cityjson-2.0")
    assert schema_errors(file_validator, document) == []
    assert document["metadata"]["referenceSystem"] == "https://www.opengis.net/def/crs/EPSG/0/5698"
    assert document["metadata"]["referenceDate"] == "2024-04-17"
    assert all(isinstance(v, int) for vertex in document["vertices"][:50] for v in vertex)


def test_cityjson_solids_are_closed_on_the_file_vertices(sample_build):
    _, out = sample_build
    document = json.loads((out / "buildings.city.json").read_text())
    solids = cityjson_solids(document)
    assert len(solids) >= 34 * 2
    for (object_id, lod), (boundaries, vertices) in solids.items():
        mesh = mesh_of_cityjson_solid(boundaries, vertices)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, (object_id, lod)


def test_cityjson_semantics_and_parts(sample_build):
    _, out = sample_build
    document = json.loads((out / "buildings.city.json").read_text())
    tower = document["CityObjects"]["B21"]
    assert [g["lod"] for g in tower["geometry"]] == ["1.2", "2.2"]
    assert len(tower["children"]) == 2
    for child in tower["children"]:
        part = document["CityObjects"][child]
        assert part["type"] == "BuildingPart" and part["parents"] == ["B21"]
        assert part["geometry"][0]["lod"] == "1.3"
    semantics = document["CityObjects"]["B01"]["geometry"][0]["semantics"]
    assert sorted(s["type"] for s in semantics["surfaces"]) == ["GroundSurface", "RoofSurface", "WallSurface"]


def test_cjio_reads_the_output(sample_build, tmp_path):
    # cjio runs in its own process: importing it patches the json module's float encoder
    # for the whole interpreter.
    model, out = sample_build
    cjio = Path(sys.executable).with_name("cjio")
    info = subprocess.run([cjio, out / "buildings.city.json", "info", "--long"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "EPSG:5698" in info.stdout or "5698" in info.stdout
    assert f"Building ({len(model.buildings)})" in info.stdout
    saved = tmp_path / "cleaned.city.json"
    cleaned = subprocess.run(
        [cjio, out / "buildings.city.json", "vertices_clean", "save", saved], capture_output=True, text=True
    )
    assert cleaned.returncode == 0, cleaned.stderr
    before = json.loads((out / "buildings.city.json").read_text())
    assert len(json.loads(saved.read_text())["vertices"]) == len(before["vertices"])  # none duplicate, none orphan


def test_cityjsonseq_validates_and_matches_the_model(sample_build, validators_dir):
    model, out = sample_build
    lines = (out / "buildings.city.jsonl").read_text().splitlines()
    file_validator, feature_validator = cityjson_validators(validators_dir / "cityjson-2.0")
    header = json.loads(lines[0])
    assert schema_errors(file_validator, header) == [] and header["CityObjects"] == {}
    features = [json.loads(line) for line in lines[1:]]
    assert [f["id"] for f in features] == [b.id for b in model.buildings]
    for feature in features:
        assert schema_errors(feature_validator, feature) == [], feature["id"]
        merged = {**header, "CityObjects": feature["CityObjects"], "vertices": feature["vertices"]}
        for (object_id, lod), (boundaries, vertices) in cityjson_solids(merged).items():
            assert mesh_of_cityjson_solid(boundaries, vertices).is_watertight, (object_id, lod)


def test_metadata_and_summary_records(sample_build, sample_dir):
    model, out = sample_build
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["crs"] == "https://www.opengis.net/def/crs/EPSG/0/5698"
    assert metadata["inputs"]["points"][0]["acquisition_dates"] == ["2024-04-17", "2024-04-17"]
    assert metadata["parameters"]["lod1"]["roof_percentile"] == 70.0
    assert metadata["software"]["name"] == "twin"
    assert any("multipolygon" in note for b in model.buildings for note in b.attributes.get("footprint_notes", []))


def test_two_runs_give_byte_identical_files(sample_build, sample_dir, tmp_path):
    _, first = sample_build
    twin.build(
        points=[sample_dir / "lidar.laz"],
        footprints=sample_dir / "footprints.gpkg",
        out_dir=tmp_path,
        formats=("cityjson", "cityjsonseq"),
    )
    for name in ("buildings.city.json", "buildings.city.jsonl", "summary.json", "metadata.json"):
        assert (tmp_path / name).read_bytes() == (first / name).read_bytes(), name
