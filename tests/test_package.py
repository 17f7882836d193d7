"""`twin package`: one folder and zip per commune, every file checked by an independent
reader (GDAL, the official schemas, open3d, Chromium), and clear one-line errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
import zipfile

import numpy as np
import open3d as o3d
import pyogrio
import pyogrio.raw
import pytest
import shapely
import trimesh
from PIL import Image

from exporters.gpkg import write_gpkg
from tests.browser import render
from tests.citygml_schemas import citygml_schema, schema_errors
from tests.helpers import cityjson_validators
from tests.helpers import schema_errors as json_schema_errors
from tests.test_cli import twin_cli
from tests.test_citygml import truth_model  # noqa: F401  (fixture)
from twin.model import CityModel

FILES = ["README.txt", "buildings.city.json", "buildings.citygml2.gml", "buildings.citygml3.gml",
         "buildings.gpkg", "buildings.obj", "metadata.json", "report.html"]


@pytest.fixture(scope="module")
def packages(sample_build_communes, tmp_path_factory):
    model, out = sample_build_communes
    dest = tmp_path_factory.mktemp("packages")
    result = twin_cli("package", out, "--dest", dest)
    assert result.returncode == 0, result.stderr
    return model, dest


def commune_buildings(model: CityModel, code: str):
    return [b for b in model.buildings if b.attributes.get("commune") == code]


def test_one_folder_and_zip_per_commune(packages):
    _, dest = packages
    assert sorted(p.name for p in dest.iterdir()) == ["77083", "77083.zip", "93051", "93051.zip"]
    for code in ("77083", "93051"):
        assert sorted(p.name for p in (dest / code).iterdir()) == FILES
        with zipfile.ZipFile(dest / f"{code}.zip") as archive:
            assert archive.testzip() is None
            assert sorted(archive.namelist()) == [f"{code}/{name}" for name in FILES]
            for name in FILES:
                assert archive.read(f"{code}/{name}") == (dest / code / name).read_bytes()


def test_geopackage_is_typed_and_has_one_feature_per_building(packages):
    model, dest = packages
    path = dest / "77083/buildings.gpkg"
    assert [tuple(layer) for layer in pyogrio.list_layers(path)] == [
        ("buildings", "Polygon"), ("roof_faces", "Polygon Z"), ("layer_styles", None)
    ]
    info = pyogrio.read_info(path, layer="buildings")
    assert info["crs"] == "EPSG:2154"
    expected = commune_buildings(model, "77083")
    assert info["features"] == len(expected)
    types = dict(zip(info["fields"], info["ogr_types"]))
    assert types["h_ground"] == types["volume_lod12"] == types["footprint_area"] == "OFTReal"
    assert types["point_count"] == types["lod13_part_count"] == "OFTInteger64"
    assert types["acquisition_date"] == "OFTDate"
    assert types["building_id"] == types["status"] == types["validity_lod12"] == "OFTString"
    _, _, wkb, values = pyogrio.raw.read(path, layer="buildings")
    fields = list(info["fields"])
    ids = list(values[fields.index("building_id")])
    assert ids == [b.id for b in expected]
    by_id = {b.id: b for b in expected}
    for identifier, geometry, h_ground in zip(ids, shapely.from_wkb(wkb), values[fields.index("h_ground")]):
        assert geometry.equals_exact(by_id[identifier].footprint, 0.001)
        assert h_ground == pytest.approx(by_id[identifier].attributes["h_ground"])
    assert set(values[fields.index("validity_lod12")]) == {"[]"}


def test_geopackage_carries_default_qgis_styles_for_its_layers(packages):
    from lxml import etree

    _, dest = packages
    path = dest / "77083/buildings.gpkg"
    _, _, _, values = pyogrio.raw.read(path, layer="layer_styles")
    fields = list(pyogrio.read_info(path, layer="layer_styles")["fields"])
    rows = dict(zip(values[fields.index("f_table_name")], zip(values[fields.index("styleQML")], values[fields.index("useAsDefault")])))
    assert set(rows) == {"buildings", "roof_faces"}
    for layer, (qml, default) in rows.items():
        assert default == 1
        renderer = etree.fromstring(qml.encode()).find("renderer-v2")
        assert renderer.get("type") == "graduatedSymbol"
        # The styled attribute is a numeric column of the layer, so QGIS can classify by it.
        types = dict(zip(*(pyogrio.read_info(path, layer=layer)[k] for k in ("fields", "ogr_types"))))
        assert types[renderer.get("attr")] == "OFTReal", layer
        assert len(renderer.findall("ranges/range")) == len(renderer.findall("symbols/symbol")) >= 4


def test_roof_faces_layer_matches_the_ground_truth(truth_model, sample_dir, tmp_path):  # noqa: F811
    truth = json.loads((sample_dir / "truth.json").read_text())["buildings"]
    write_gpkg(truth_model, tmp_path)
    path = tmp_path / "buildings.gpkg"
    info = pyogrio.read_info(path, layer="roof_faces")
    assert info["crs"] == "EPSG:5698" and info["geometry_type"] == "Polygon Z"
    types = dict(zip(info["fields"], info["ogr_types"]))
    assert types["slope"] == types["azimuth"] == types["area"] == "OFTReal"
    _, _, _, values = pyogrio.raw.read(path, layer="roof_faces")
    fields = list(info["fields"])
    column = {name: values[fields.index(name)] for name in ("building_id", "slope", "azimuth", "area_2d", "area")}
    checked = 0
    for identifier, expected in truth.items():
        rows = np.flatnonzero(column["building_id"] == identifier)
        faces = expected.get("roof_faces") or []
        if not faces or len(rows) != len(faces):
            continue  # faces split differently in the truth's solids (e.g. parts)
        ours = np.array(sorted((column["slope"][r], column["area_2d"][r]) for r in rows))
        theirs = np.array(sorted((f["slope_deg"], f["area"]) for f in faces))
        assert np.allclose(ours, theirs, atol=0.15), identifier
        for row in rows:
            if column["slope"][row] > 1:
                assert any(abs((column["azimuth"][row] - f["azimuth_deg"] + 180) % 360 - 180) < 0.5
                           for f in faces if f["azimuth_deg"] is not None)
                assert column["area"][row] > column["area_2d"][row]
        checked += 1
    assert checked >= 20


def test_citygml_and_cityjson_of_the_package_validate(packages, validators_dir):
    model, dest = packages
    expected = len(commune_buildings(model, "93051"))
    for version, name in (("3.0", "buildings.citygml3.gml"), ("2.0", "buildings.citygml2.gml")):
        path = dest / "93051" / name
        assert schema_errors(citygml_schema(validators_dir / "citygml", version), path) == []
        assert len(re.findall(r"<bldg:Building ", path.read_text())) == expected
    document = json.loads((dest / "93051/buildings.city.json").read_text())
    file_validator, _ = cityjson_validators(validators_dir / "cityjson-2.0")
    assert json_schema_errors(file_validator, document) == []
    assert sum(o["type"] == "Building" for o in document["CityObjects"].values()) == expected


def obj_objects(text: str) -> dict[str, trimesh.Trimesh]:
    """Each `o` object of an OBJ file as its own mesh (OBJ indices are global to the file)."""
    vertices, objects, current = [], {}, None
    for line in text.splitlines():
        if line.startswith("o "):
            current = objects.setdefault(line[2:], [])
        elif line.startswith("v "):
            vertices.append([float(v) for v in line.split()[1:4]])
        elif line.startswith("f "):
            current.append([int(v.split("/")[0]) - 1 for v in line.split()[1:]])
    vertices = np.array(vertices)
    return {name: trimesh.Trimesh(vertices, np.array(faces), process=False) for name, faces in objects.items()}


def test_obj_mesh_has_one_closed_object_per_building(packages):
    model, dest = packages
    path = dest / "77083/buildings.obj"
    text = path.read_text()
    expected = commune_buildings(model, "77083")
    objects = obj_objects(text)
    assert list(objects) == [b.id for b in expected]
    for building in expected:
        mesh = objects[building.id]
        volume = building.attributes[f"volume_lod{building.available_lods()[-1].replace('.', '')}"]
        assert mesh.is_watertight and mesh.is_winding_consistent, building.id
        assert mesh.volume == pytest.approx(volume, rel=1e-3), building.id
    # An independent reader (open3d's) finds the same triangles, in the same place.
    origin = np.array(re.search(r"origin (\S+) (\S+) (\S+)", text.splitlines()[0]).groups(), dtype=float)
    mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(mesh.triangles) == sum(len(m.faces) for m in objects.values())
    vertices = np.asarray(mesh.vertices) + origin
    low = min(s.vertices().min(axis=0)[2] for b in expected for s in b.solids(b.available_lods()[-1]))
    assert vertices[:, 2].min() == pytest.approx(low, abs=0.001)
    xmin, ymin, xmax, ymax = shapely.total_bounds([b.footprint for b in expected])
    assert vertices[:, 0].min() == pytest.approx(xmin, abs=0.001)
    assert vertices[:, 1].max() == pytest.approx(ymax, abs=0.001)


def test_report_renders_in_chromium_without_errors(packages, tmp_path):
    _, dest = packages
    report = dest / "77083/report.html"
    html = report.read_text()
    sources = re.findall(r'src="([^"]+)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html and "http://" not in html.replace("http://www.opengis.net", "")
    for source in sources:
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 300
    assert "Champs-sur-Marne" in html
    console = render(report, tmp_path / "report.png", tmp_path / "profile")
    assert console == []
    screenshot = np.asarray(Image.open(tmp_path / "report.png").convert("RGB"), dtype=float)
    assert screenshot.shape[:2] == (900, 1200)
    assert screenshot.std() > 20  # not blank
    assert len(np.unique(screenshot.reshape(-1, 3), axis=0)) > 50  # text and plot colours


def test_metadata_and_readme(packages):
    _, dest = packages
    metadata = json.loads((dest / "77083/metadata.json").read_text())
    assert metadata["commune"] == {"code": "77083", "name": "Champs-sur-Marne"}
    assert metadata["crs"]["uri"] == "http://www.opengis.net/def/crs/EPSG/0/5698"
    assert "NGF-IGN69" in metadata["crs"]["vertical_datum"]
    assert metadata["sources"][0]["dates"] == ["2024-04-17"]
    assert metadata["software"]["name"] == "twin" and metadata["parameters"]["lod1"]["roof_percentile"] == 70.0
    for entry in metadata["files"]:
        assert hashlib.sha256((dest / "77083" / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    readme = (dest / "77083/README.txt").read_text()
    assert "NGF-IGN69" in readme and "70th percentile" in readme and "licence" in readme


def test_ign_sources_get_the_licence_ouverte():
    from twin.package import IGN_LICENCE, sources

    found = sources({"inputs": {
        "points": [{"path": "LHD_FXX_0652_6862_PTS_C_LAMB93_IGN69.copc.laz", "acquisition_dates": ["2022-03-01"]}],
        "footprints": {"path": "bati.gpkg", "id_field": "cleabs"},
    }})
    assert [s["licence"] for s in found] == [IGN_LICENCE, IGN_LICENCE]
    assert "Licence Ouverte" in IGN_LICENCE


def test_packages_are_deterministic_and_overwrite_needs_the_flag(packages, sample_build_communes, tmp_path):
    _, dest = packages
    _, out = sample_build_communes
    again = tmp_path / "again"
    assert twin_cli("package", out, "--commune", "77083", "--dest", again).returncode == 0
    assert (again / "77083.zip").read_bytes() == (dest / "77083.zip").read_bytes()
    refused = twin_cli("package", out, "--commune", "77083", "--dest", again)
    assert refused.returncode == 2 and "already exists; pass --overwrite" in refused.stderr
    replaced = twin_cli("package", out, "--commune", "77083", "--dest", again, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in again.iterdir()) == ["77083", "77083.zip"]  # nothing left behind
    assert (again / "77083.zip").read_bytes() == (dest / "77083.zip").read_bytes()


@pytest.fixture(scope="module")
def build_with_empty_commune(sample_dir, tmp_path_factory):
    """The sample built with a third commune that holds no building."""
    import twin

    folder = tmp_path_factory.mktemp("empty_commune")
    _, _, wkb, values = pyogrio.raw.read(sample_dir / "communes.gpkg")
    meta = pyogrio.read_info(sample_dir / "communes.gpkg")
    far = shapely.box(600000, 6800000, 601000, 6801000)
    communes = folder / "communes.gpkg"
    pyogrio.raw.write(
        communes, np.array(list(wkb) + [shapely.to_wkb(far)], dtype=object),
        [np.array(list(v) + [x], dtype=object) for v, x in zip(values, ["94000", "Nulle-part"])],
        list(meta["fields"]), driver="GPKG", crs="EPSG:2154", geometry_type="MultiPolygon", promote_to_multi=True,
    )
    twin.build(points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg", communes=communes,
               out_dir=folder / "out")
    return folder / "out"


def test_bad_inputs_give_one_line(sample_build, build_with_empty_commune, tmp_path):
    _, no_communes = sample_build
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        ([build_with_empty_commune, "--commune", "99999", "--dest", tmp_path / "a"], "unknown commune"),
        ([build_with_empty_commune, "--commune", "94000", "--dest", tmp_path / "b"], "no building"),
        ([build_with_empty_commune, "--dest", blocker / "sub"], "cannot write packages there"),
        ([no_communes, "--dest", tmp_path / "c"], "build them with --communes"),
        ([tmp_path / "nowhere", "--dest", tmp_path / "d"], "no such folder"),
    ]
    for args, message in cases:
        result = twin_cli("package", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    good = twin_cli("package", build_with_empty_commune, "--dest", tmp_path / "all")
    assert good.returncode == 0, good.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["77083", "77083.zip", "93051", "93051.zip"]
    shutil.rmtree(tmp_path / "all")


def test_report_counts_roof_types_and_lists_fallbacks(truth_model, sample_build_communes):  # noqa: F811
    from dataclasses import replace

    from exporters.report_html import building_height, report_html
    from twin.model import Status

    html = report_html(truth_model)
    assert "<h3>Roof type</h3><table>" in html and "<td>sloped</td>" in html
    b01 = next(b for b in truth_model.buildings if b.id == "B01")
    assert building_height(b01) == pytest.approx(b01.attributes["h_roof_max"] - b01.attributes["h_ground"], abs=0.001)
    model, _ = sample_build_communes
    without_rmse = {
        b.id: {k: v for k, v in b.attributes.items() if not k.startswith("rmse_")} for b in model.buildings
    }
    degraded = tuple(
        replace(b, status=Status.FALLBACK, reason="ground from nearest ground points: 12 m away",
                attributes=without_rmse[b.id])
        if b.id == "B03" else replace(b, attributes=without_rmse[b.id]) for b in model.buildings
    )
    html = report_html(replace(model, buildings=degraded))
    assert "<td>B03</td><td>fallback</td><td>ground from nearest ground points: 12 m away</td>" in html
    assert "no RMSE attribute in these buildings" in html
    with_rmse = tuple(replace(b, attributes={**b.attributes, "rmse_lod12": 0.05 + 0.01 * k})
                      for k, b in enumerate(degraded))
    assert "RMSE between the points and the model (rmse_lod12)" in report_html(replace(model, buildings=with_rmse))
