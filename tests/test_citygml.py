"""CityGML 3.0 and 2.0: validity against the official XSDs, xlinks, CRS, round trips through
the readers (CityGML and CityJSON), LoD 2.2 solids, invalid solids, ids, hostile files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from exporters.citygml import CITYGML2_FILE, CITYGML3_FILE, write_citygml2, write_citygml3
from exporters.cityjson import CITYJSON_FILE, write_cityjson
from reconstruction.geometry import surface_normal
from tests.citygml_schemas import citygml_schema, schema_errors
from tests.model_checks import differences
from twin.errors import InputError
from twin.gml import gml_id
from twin.inputs.citymodels import read_city_model
from twin.model import CityModel, SurfaceKind

WRITERS = {"3.0": (write_citygml3, CITYGML3_FILE), "2.0": (write_citygml2, CITYGML2_FILE)}
GML = {"3.0": "http://www.opengis.net/gml/3.2", "2.0": "http://www.opengis.net/gml"}
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"


def write(model: CityModel, version: str, folder: Path) -> Path:
    writer, name = WRITERS[version]
    folder.mkdir(parents=True, exist_ok=True)
    writer(model, folder)
    return folder / name


def assert_valid(path: Path, version: str, validators_dir: Path) -> etree._ElementTree:
    schema = citygml_schema(validators_dir / "citygml", version)
    assert schema_errors(schema, path) == []
    document = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    gml = GML[version]
    ids = {e.get(f"{{{gml}}}id") for e in document.iter() if e.get(f"{{{gml}}}id")}
    hrefs = [e.get(XLINK_HREF) for e in document.iter() if e.get(XLINK_HREF)]
    assert all(href.startswith("#") and href[1:] in ids for href in hrefs), "an xlink points at nothing"
    return document


@pytest.fixture(scope="module")
def truth_model(sample_dir):
    """The sample's ground truth: LoD 2.2 solids with semantics, roof faces given their slope
    and azimuth as surface attributes (as LoD2 reconstruction records them)."""
    model = read_city_model(sample_dir / "truth.city.json")
    buildings = []
    for building in model.buildings:
        solid = building.lods["2.2"]
        surfaces = []
        for surface in solid.surfaces:
            if surface.kind == SurfaceKind.ROOF:
                normal = surface_normal(surface)
                slope = float(np.degrees(np.arccos(np.clip(normal[2], -1, 1))))
                azimuth = float(np.degrees(np.arctan2(normal[0], normal[1])) % 360)
                surface = replace(surface, attributes={"slope": round(slope, 2), "azimuth": round(azimuth, 2)})
            surfaces.append(surface)
        buildings.append(replace(building, lods={"2.2": replace(solid, surfaces=tuple(surfaces))}))
    return CityModel(tuple(buildings), model.crs, model.metadata)


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_sample_citygml_validates_and_carries_crs_and_envelope(sample_build_communes, validators_dir, version):
    model, out = sample_build_communes
    path = out / WRITERS[version][1]
    document = assert_valid(path, version, validators_dir)
    gml = GML[version]
    envelope = document.getroot().find(f"{{{gml}}}boundedBy/{{{gml}}}Envelope")
    assert envelope.get("srsName") == "http://www.opengis.net/def/crs/EPSG/0/5698"
    assert envelope.get("srsDimension") == "3"
    low = np.array(envelope.findtext(f"{{{gml}}}lowerCorner").split(), dtype=float)
    high = np.array(envelope.findtext(f"{{{gml}}}upperCorner").split(), dtype=float)
    coordinates = np.concatenate([
        np.array(p.text.split(), dtype=float).reshape(-1, 3) for p in document.iter(f"{{{gml}}}posList")
    ])
    assert np.all(coordinates >= low - 1e-9) and np.all(coordinates <= high + 1e-9)
    assert np.allclose(coordinates.min(axis=0), low) and np.allclose(coordinates.max(axis=0), high)
    building_tag = "{http://www.opengis.net/citygml/building/%s}Building" % version
    assert [b.get(f"{{{gml}}}id") for b in document.iter(building_tag)] == [b.id for b in model.buildings]


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_lod1_layout_building_and_parts(sample_build_communes, version):
    """LOD1.2 on the Building, LOD1.3 in BuildingParts (the model's parts, or one part
    carrying a single-part building's LOD1.3), solids referencing their surfaces."""
    _, out = sample_build_communes
    document = etree.parse(str(out / WRITERS[version][1]))
    bldg = f"http://www.opengis.net/citygml/building/{version}"
    gml = GML[version]
    buildings = {b.get(f"{{{gml}}}id"): b for b in document.iter(f"{{{bldg}}}Building")}
    parts = lambda b: [p.get(f"{{{gml}}}id") for p in b.iter(f"{{{bldg}}}BuildingPart")]  # noqa: E731
    assert parts(buildings["B21"]) == ["B21-part1", "B21-part2"]
    assert parts(buildings["B01"]) == ["B01_lod1.3"]
    if version == "3.0":
        core = "http://www.opengis.net/citygml/3.0"
        solid = buildings["B01"].find(f"{{{core}}}lod1Solid")
        members = solid.findall(f".//{{{gml}}}surfaceMember")
        assert members and all(m.get(XLINK_HREF) for m in members)
        kinds = {etree.QName(s).localname for s in buildings["B01"].findall(f"{{{core}}}boundary/*")}
        assert kinds == {"GroundSurface", "WallSurface", "RoofSurface"}
    else:
        assert buildings["B01"].find(f"{{{bldg}}}lod1Solid/{{{gml}}}Solid") is not None
        assert buildings["B01"].find(f"{{{bldg}}}lod0FootPrint") is not None


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_citygml_round_trip_preserves_the_model(sample_build_communes, tmp_path, version):
    model, out = sample_build_communes
    path = out / WRITERS[version][1]
    read = read_city_model(path)
    assert read.crs.to_epsg() == 5698
    assert differences(model, read) == []
    # And back: the file the read model gives is the same file, byte for byte.
    again = write(read, version, tmp_path)
    assert again.read_bytes() == path.read_bytes()


def test_cityjson_round_trip_is_byte_identical(sample_build_communes, tmp_path):
    model, out = sample_build_communes
    read = read_city_model(out / CITYJSON_FILE)
    assert differences(model, read, footprints=False) == []
    write_cityjson(read, tmp_path)
    assert (tmp_path / CITYJSON_FILE).read_bytes() == (out / CITYJSON_FILE).read_bytes()


def test_cityjsonseq_reader_matches_the_cityjson_reader(sample_build):
    _, out = sample_build
    whole = read_city_model(out / "buildings.city.json")
    sequence = read_city_model(out / "buildings.city.jsonl")
    assert differences(whole, sequence) == []


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_lod22_solids_with_roof_attributes(truth_model, tmp_path, validators_dir, version):
    path = write(truth_model, version, tmp_path)
    document = assert_valid(path, version, validators_dir)
    core = "http://www.opengis.net/citygml/3.0" if version == "3.0" else f"http://www.opengis.net/citygml/building/{version}"
    assert len(list(document.iter(f"{{{core}}}lod2Solid"))) == len(truth_model.buildings)
    roof_tag = ("{http://www.opengis.net/citygml/construction/3.0}RoofSurface" if version == "3.0"
                else "{http://www.opengis.net/citygml/building/2.0}RoofSurface")
    assert len(list(document.iter(roof_tag))) >= len(truth_model.buildings)
    read = read_city_model(path)
    assert differences(truth_model, read) == []
    gable = next(b for b in read.buildings if b.attributes.get("roof_type") == "sloped" or b.attributes.get("shape") == "gable")
    roofs = [s for s in gable.lods["2.2"].surfaces if s.kind == SurfaceKind.ROOF]
    assert len(roofs) >= 2 and all(0 < s.attributes["slope"] < 90 for s in roofs)
    assert read.buildings[0].attributes["in_footprints"] is True  # booleans survive as JSON text


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_invalid_solid_is_written_as_surfaces_and_recorded(sample_build_communes, tmp_path, validators_dir, version):
    model, _ = sample_build_communes
    broken_id = "B05"
    buildings = tuple(
        replace(b, attributes={**b.attributes, "validity_lod12": [302]}) if b.id == broken_id else b
        for b in model.buildings
    )
    path = write(replace(model, buildings=buildings), version, tmp_path)
    document = assert_valid(path, version, validators_dir)
    gml = GML[version]
    bldg = f"http://www.opengis.net/citygml/building/{version}"
    broken = next(b for b in document.iter(f"{{{bldg}}}Building") if b.get(f"{{{gml}}}id") == broken_id)
    lod1_solid_parent = "http://www.opengis.net/citygml/3.0" if version == "3.0" else bldg
    assert broken.find(f"{{{lod1_solid_parent}}}lod1Solid") is None
    assert "twin_surfaces_only" in etree.tostring(broken).decode()
    read = {b.id: b for b in read_city_model(path).buildings}
    assert read[broken_id].available_lods() == ("1.2", "1.3", "2.2")
    assert read[broken_id].attributes["validity_lod12"] == [302]


def test_ids_become_ncnames_and_come_back(tmp_path, validators_dir, shared_data):
    odd = ["{C9D4A5CF-094A}", "12345", "a b", "a:b", "a_b", "é"]
    assert len({gml_id(i) for i in odd}) == len(odd)
    assert gml_id("BATIMENT0000000240859745") == "BATIMENT0000000240859745"
    rotterdam = read_city_model(shared_data / "cityjson/rotterdam_subset.json", crs="EPSG:7415")
    assert any("{" in b.id for b in rotterdam.buildings)
    for version in ("3.0", "2.0"):
        path = write(rotterdam, version, tmp_path / version)
        assert_valid(path, version, validators_dir)
        assert [b.id for b in read_city_model(path).buildings] == [b.id for b in rotterdam.buildings]


def test_three_lods_on_one_building(shared_data, tmp_path, validators_dir):
    """3DBAG's buildings hold LoD 1.2, 1.3 and 2.2 themselves; all three come back."""
    model = read_city_model(shared_data / "cityjson/multi_lod.json", crs="EPSG:7415")
    assert all(b.available_lods() == ("1.2", "1.3", "2.2") for b in model.buildings)
    for version in ("3.0", "2.0"):
        path = write(model, version, tmp_path / version)
        assert_valid(path, version, validators_dir)
        assert differences(model, read_city_model(path)) == []


def test_reads_the_shared_citygml_samples(shared_data):
    haus = read_city_model(shared_data / "citygml/citygml2-fzk-haus/Building_LOD2-EPSG25832.gml")
    assert haus.crs.to_epsg() == 5555  # the compound URN: ETRS89 / UTM 32N + DHHN92
    (house,) = haus.buildings
    kinds = [s.kind for s in house.lods["2"].surfaces]
    assert kinds.count(SurfaceKind.ROOF) == 2 and kinds.count(SurfaceKind.WALL) == 4
    assert house.attributes["measuredHeight"] == 5.0
    assert house.footprint.area == pytest.approx(50.0)
    garage = read_city_model(shared_data / "citygml/citygml2-fzk-haus/Building_and_garage_LOD2-EPSG25832.gml")
    assert len(garage.buildings[0].parts) == 1 and "2" in garage.buildings[0].parts[0].lods
    lod1 = read_city_model(shared_data / "citygml/citygml2-fzk-haus/Building_LOD1-EPSG25832.gml").buildings[0]
    assert sorted(s.kind for s in lod1.lods["1"].surfaces).count(SurfaceKind.WALL) == 4  # kinds from normals
    v3 = read_city_model(
        shared_data / "citygml/citygml3-examples/Building_CityGML3.0_LOD2_with_several_attributes.gml",
        crs="EPSG:31468+7837",
    )
    (building,) = v3.buildings
    assert building.id == "DEBY_LOD2_5744682"
    assert building.attributes["Gemeindeschluessel"] == "09175128"
    assert {s.kind for s in building.lods["2"].surfaces} == set(SurfaceKind)
    with pytest.raises(InputError, match="unknown CRS"):
        read_city_model(shared_data / "citygml/citygml3-examples/Building_CityGML3.0_LOD2_with_several_attributes.gml")


def test_reads_the_shared_cityjson_samples(shared_data):
    zurich = read_city_model(shared_data / "cityjson/zurich_subset_lod2.json")
    assert zurich.crs.to_epsg() == 2056
    with_parts = [b for b in zurich.buildings if b.parts]
    assert with_parts and all(lod == "2" for b in with_parts for p in b.parts for lod in p.lods)
    assert all(not b.footprint.is_empty for b in with_parts)


HOSTILE = {
    "entity expansion": """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<CityModel xmlns="http://www.opengis.net/citygml/2.0"><name>&lol3;</name></CityModel>""",
    "external entity": """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<CityModel xmlns="http://www.opengis.net/citygml/2.0"><name>&xxe;</name></CityModel>""",
    "not CityGML": """<?xml version="1.0"?><html/>""",
    "broken XML": """<?xml version="1.0"?><CityModel xmlns="http://www.opengis.net/citygml/2.0">""",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_or_broken_xml_is_refused(tmp_path, case):
    path = tmp_path / "hostile.gml"
    path.write_text(HOSTILE[case])
    with pytest.raises(InputError) as error:
        read_city_model(path, crs="EPSG:5698")
    assert "root:" not in str(error.value)  # nothing of /etc/passwd leaks into messages


def test_cityjson_without_crs_asks_for_it(tmp_path):
    path = tmp_path / "nocrs.city.json"
    path.write_text(json.dumps({"type": "CityJSON", "version": "2.0", "transform": {"scale": [1, 1, 1], "translate": [0, 0, 0]},
                                "CityObjects": {}, "vertices": []}))
    with pytest.raises(InputError, match="crs="):
        read_city_model(path)


def test_real_ign_build_through_the_cli(shared_data, tmp_path, validators_dir):
    """BD TOPO footprints over LiDAR HD, written by `twin build --format citygml3 --format
    citygml2`: ids from feature ids, buildings without points (and so without footprint)."""
    from tests.test_cli import twin_cli

    folder = shared_data / "lidarhd/bdtopo-870000-6618000"
    out = tmp_path / "out"
    result = twin_cli("build", "--points", folder / "lidar.laz", "--footprints", folder / "bdtopo_batiments.shp",
                      "--out", out, "--format", "citygml3", "--format", "citygml2")
    assert result.returncode == 0, result.stderr
    model = read_city_model(out / "buildings.citygml3.gml")
    assert {str(b.status) for b in model.buildings} >= {"built", "no points"}
    assert len(model.buildings) == 40 and all(b.id.startswith("bdtopo_batiments.") for b in model.buildings)
    for version in ("3.0", "2.0"):
        path = out / WRITERS[version][1]
        assert_valid(path, version, validators_dir)
        read = read_city_model(path)
        assert differences(model, read) == []
        assert write(read, version, tmp_path / version).read_bytes() == path.read_bytes()
    with_ground = [b for b in model.buildings if "h_ground" in b.attributes]
    assert with_ground and all(not b.footprint.is_empty for b in with_ground)


@pytest.mark.parametrize("name", ["Building_LOD3-EPSG25832.gml", "Building_and_garage_LOD2-EPSG25832.gml"])
def test_other_producers_buildings_go_through(shared_data, tmp_path, validators_dir, name):
    """KIT's FZK-Haus (LoD 3 with openings; LoD 2 with a garage part) read, written in both
    versions, valid, and read back the same."""
    model = read_city_model(shared_data / "citygml/citygml2-fzk-haus" / name)
    for version in ("3.0", "2.0"):
        path = write(model, version, tmp_path / version)
        assert_valid(path, version, validators_dir)
        assert differences(model, read_city_model(path)) == []


def test_malformed_coordinates_name_the_file_and_line(sample_build_communes, tmp_path):
    _, out = sample_build_communes
    text = (out / CITYGML2_FILE).read_text()
    broken = tmp_path / "broken.gml"
    broken.write_text(text.replace("<gml:posList srsDimension=\"3\">", "<gml:posList srsDimension=\"3\">x ", 1))
    with pytest.raises(InputError, match=r"broken\.gml: a ring's coordinates are not numbers \(line \d+\)"):
        read_city_model(broken)
