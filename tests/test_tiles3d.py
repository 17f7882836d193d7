"""3D Tiles: geoid-correct heights, tilesets checked by the official 3D Tiles 1.1 schemas, every
.glb by the Khronos glTF validator, bounding volumes and geometric errors, per-building metadata
read back, LoD chains, communes and bad inputs, and the point-cloud layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import pytest
import shapely
from scipy.spatial import cKDTree

import twin
from exporters.pointcloud_tiles import write_pointcloud_tiles
from exporters.tiles3d import write_3dtiles
from exporters.tiles3d.metadata import building_properties
from exporters.tiles3d.tiling import quadtree
from tests.conftest import ROOT, SAMPLE
from tests.helpers import (
    glb_ecef_vertices,
    load_glb,
    plain_glb,
    property_table_rows,
    run_node,
    schema_errors,
    tiles_validator,
    walk_tiles,
)
from twin.config import BuildConfig, TilesConfig
from twin.heights import HeightTransform, ecef_to_geodetic
from twin.inputs.communes import read_communes
from twin.model import Building, CityModel, Status

CONTROL_POINT = (652470.0, 6861960.0, 35.0)  # Lambert-93 + NGF-IGN69, near Notre-Dame de Paris
CONTROL_HEIGHT = 78.80  # its WGS84 ellipsoidal height with IGN's geoid grid


def twin_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "twin", *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env
    )


def without_grids_env(tmp_path) -> dict[str, str]:
    """An environment in which PROJ can find no geoid grid: no extra folders, an empty user folder."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB", "TWIN_PROJ_DATA")}
    env["PROJ_USER_WRITABLE_DIRECTORY"] = str(tmp_path / "empty-proj-user-dir")
    env["PROJ_NETWORK"] = "OFF"
    return env


def write_communes(path: Path, polygons, codes) -> Path:
    pyogrio.raw.write(
        path,
        geometry=np.array([shapely.to_wkb(p) for p in polygons], dtype=object),
        field_data=[np.array(codes, dtype=object), np.array([f"commune {c}" for c in codes], dtype=object)],
        fields=["code_insee", "nom"],
        driver="GPKG",
        crs="EPSG:2154",
        geometry_type="Unknown",
    )
    return path


def glb_files(out: Path) -> list[Path]:
    return sorted((out / "tiles").rglob("*.glb"))


def content_tiles(out: Path):
    for folder, tile, parent in walk_tiles(out / "tiles/tileset.json"):
        uri = tile.get("content", {}).get("uri", "")
        if uri.endswith(".glb"):
            yield folder / uri, tile, parent


# --- heights ---------------------------------------------------------------------------------------


def test_control_point_gets_its_ellipsoidal_height(proj_data):
    heights = HeightTransform.for_crs(pyproj.CRS("EPSG:2154+5720"))
    assert not heights.approximate and heights.grids
    lon, lat, h = heights.geodetic(np.array([CONTROL_POINT]))[0]
    assert h == pytest.approx(CONTROL_HEIGHT, abs=0.05)
    assert (lon, lat) == pytest.approx((2.3522, 48.8559), abs=1e-3)
    assert ecef_to_geodetic(heights.ecef(np.array([CONTROL_POINT])))[0] == pytest.approx([lon, lat, h], abs=1e-7)


def test_missing_geoid_grid_stops_before_writing(tmp_path):
    out = tmp_path / "out"
    result = twin_cli(
        "build", "--points", SAMPLE / "lidar.laz", "--footprints", SAMPLE / "footprints.gpkg",
        "--format", "3dtiles", "--out", out, env=without_grids_env(tmp_path),
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: heights:"), result.stderr
    assert "fr_ign_RAF20.tif" in lines[0] and "--proj-data" in lines[0] and "--allow-approximate-heights" in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_approximate_heights_only_when_asked_and_recorded(tmp_path, validators_dir):
    out = tmp_path / "out"
    result = twin_cli(
        "build", "--points", SAMPLE / "lidar.laz", "--footprints", SAMPLE / "footprints.gpkg",
        "--format", "3dtiles", "--allow-approximate-heights", "--out", out, env=without_grids_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "approximate heights" in result.stderr
    root = json.loads((out / "tiles/tileset.json").read_text())
    assert [c["content"]["uri"] for c in root["root"]["children"]] == ["all/tileset.json"]  # no --communes
    assert root["metadata"]["properties"]["approximateHeights"] is True
    assert "geoidGrids" not in root["metadata"]["properties"]
    assert schema_errors(tiles_validator(validators_dir / "3d-tiles-1.1"), root) == []
    assert any("approximate heights" in note for note in json.loads((out / "metadata.json").read_text())["notes"])
    base = min(ecef_to_geodetic(e)[:, 2].min() for path, _, _ in content_tiles(out) for e, _, _ in glb_ecef_vertices(*load_glb(path)))
    assert base == pytest.approx(47.7, abs=1.0)  # the altitudes themselves, about 44 m below where they belong


def test_proj_data_option_and_environment_variable(tmp_path, shared_data):
    env = without_grids_env(tmp_path)
    common = ["build", "--points", SAMPLE / "lidar.laz", "--footprints", SAMPLE / "footprints.gpkg", "--format", "3dtiles"]
    result = twin_cli(*common, "--proj-data", shared_data / "proj", "--out", tmp_path / "a", env=env)
    assert result.returncode == 0, result.stderr
    result = twin_cli(*common, "--out", tmp_path / "b", env={**env, "TWIN_PROJ_DATA": str(shared_data / "proj")})
    assert result.returncode == 0, result.stderr
    result = twin_cli(*common, "--proj-data", tmp_path / "nowhere", "--out", tmp_path / "c", env=env)
    assert result.returncode == 2 and "no such folder" in result.stderr


def test_sample_building_base_is_ground_plus_geoid_undulation(tiles_build, proj_data):
    model, out = tiles_build
    building = next(b for b in model.buildings if b.id == "B01")
    x, y = building.footprint.exterior.coords[0]
    lon, lat, _ = HeightTransform.for_crs(model.crs).geodetic(np.array([[x, y, 0.0]]))[0]
    # The undulation read straight from the grid by a PROJ pipeline, independently of twin's choice of operation.
    grid = json.loads((out / "tiles/tileset.json").read_text())["metadata"]["properties"]["geoidGrids"][0]
    undulation = pyproj.Transformer.from_pipeline(
        f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad +step +proj=vgridshift +grids={grid} +multiplier=1"
    ).transform(lon, lat, 0.0)[2]
    assert 40 < undulation < 50
    bases = []
    for path, _, _ in content_tiles(out):
        document, views = load_glb(path)
        ids = [row["id"] for row in property_table_rows(document, views, tileset_schema(out))]
        if "B01" in ids:
            feature = ids.index("B01")
            heights = [ecef_to_geodetic(e[f == feature])[:, 2] for e, _, f in glb_ecef_vertices(document, views)]
            bases.append(min(h.min() for h in heights if len(h)))
    assert len(bases) == len(building.available_lods()) == 3  # LOD1.2, LOD1.3 and LOD2.2
    for base in bases:
        assert base == pytest.approx(building.attributes["h_ground"] + undulation, abs=0.05)


# --- the tilesets ----------------------------------------------------------------------------------


def tileset_schema(out: Path) -> dict:
    return json.loads((out / "tiles/schema.json").read_text())


def test_layout_per_commune(tiles_build):
    model, out = tiles_build
    root = json.loads((out / "tiles/tileset.json").read_text())
    assert [c["content"]["uri"] for c in root["root"]["children"]] == ["77083/tileset.json", "93051/tileset.json"]
    assert root["asset"]["version"] == "1.1"
    properties = root["metadata"]["properties"]
    assert properties["communes"] == ["77083", "93051"] and properties["buildings"] == 34
    assert properties["lods"] == ["1.2", "1.3", "2.2"] and properties["approximateHeights"] is False
    for code in ("77083", "93051"):
        commune = json.loads((out / f"tiles/{code}/tileset.json").read_text())
        assert commune["metadata"]["properties"]["code"] == code
        members = {b.id for b in model.buildings if b.attributes["commune"] == code}
        assert commune["metadata"]["properties"]["buildings"] == len(members)
    assert not (out / "tiles/unassigned").exists()


def test_tilesets_and_schema_pass_the_official_3d_tiles_schemas(tiles_build, validators_dir):
    _, out = tiles_build
    schemas = validators_dir / "3d-tiles-1.1"
    tileset_validator = tiles_validator(schemas)
    tilesets = sorted(out.rglob("tileset.json"))
    assert len(tilesets) == 4  # regional root, two communes, point cloud
    for path in tilesets:
        assert schema_errors(tileset_validator, json.loads(path.read_text())) == [], path
    assert schema_errors(tiles_validator(schemas, "Schema/schema.schema.json"), tileset_schema(out)) == []
    table_validator = tiles_validator(schemas, "PropertyTable/propertyTable.schema.json")
    for path in glb_files(out):
        document, _ = load_glb(path)
        metadata = document.extensions["EXT_structural_metadata"]
        assert metadata["schemaUri"] == "../../schema.json"
        for table in metadata["propertyTables"]:
            assert schema_errors(table_validator, table) == [], path
    errors = schema_errors(tileset_validator, {"asset": {"version": "1.1"}, "geometricError": -1, "root": {}})
    assert len(errors) == 3  # the validator does reject a broken tileset


def assert_region_inside(inner, outer, label):
    assert inner[0] >= outer[0] and inner[1] >= outer[1], label
    assert inner[2] <= outer[2] and inner[3] <= outer[3], label
    assert inner[4] >= outer[4] and inner[5] <= outer[5], label


def test_bounding_volumes_contain_children_and_content_and_errors_decrease(tiles_build):
    _, out = tiles_build
    leaves = 0
    for folder, tile, parent in walk_tiles(out / "tiles/tileset.json"):
        region = tile["boundingVolume"]["region"]
        assert region[0] < region[2] and region[1] < region[3] and region[4] < region[5]
        assert tile["refine"] == "REPLACE"
        if parent is not None:
            label = f"{folder.name}: {tile.get('content', {}).get('uri', 'tile')}"
            assert_region_inside(region, parent["boundingVolume"]["region"], label)
            assert tile["geometricError"] <= parent["geometricError"], label
            if parent.get("content", {}).get("uri", "").endswith(".glb"):
                assert tile["geometricError"] < parent["geometricError"], label  # a finer LoD refines
        content = tile.get("content", {})
        if "boundingVolume" in content:
            assert_region_inside(content["boundingVolume"]["region"], region, content["uri"])
        if not tile.get("children") and not content.get("uri", "").endswith(".json"):
            leaves += 1
            assert tile["geometricError"] == 0 and content["uri"].endswith("_lod22.glb")  # the finest LoD
    assert leaves >= 4  # the quadtree did split (budget of 4 buildings per tile)
    for path, tile, _ in content_tiles(out):
        west, south, east, north, low, high = tile["content"]["boundingVolume"]["region"]
        for ecef, _, _ in glb_ecef_vertices(*load_glb(path)):
            lon, lat, h = ecef_to_geodetic(ecef).T
            assert np.all((np.radians(lon) >= west) & (np.radians(lon) <= east)), path
            assert np.all((np.radians(lat) >= south) & (np.radians(lat) <= north)), path
            assert np.all((h >= low) & (h <= high)), path


def test_buildings_appear_from_kilometres_and_refine_on_approach(tiles_build):
    _, out = tiles_build
    errors = {}
    for _, tile, parent in walk_tiles(out / "tiles/tileset.json"):
        uri = tile.get("content", {}).get("uri", "")
        if uri.endswith(".glb"):
            errors.setdefault(uri.rsplit("_", 1)[1], set()).add(tile["geometricError"])
            if uri.endswith("_lod12.glb"):
                assert parent["geometricError"] == 50.0  # the LOD1.2 tiles' parents refine within ~3 km
    assert errors == {"lod12.glb": {16.0}, "lod13.glb": {8.0}, "lod22.glb": {0.0}}


@pytest.mark.parametrize("compression", ["none", "quantize", "meshopt"])
def test_every_glb_passes_the_khronos_validator(compression, tiles_build, tmp_path):
    model, out = tiles_build
    if compression != "none":
        out = tmp_path
        write_3dtiles(model, out, BuildConfig(tiles=TilesConfig(max_features_per_tile=4, compression=compression)))
    paths = glb_files(out)
    plain = []
    for path in paths:
        document, views = load_glb(path)
        assert "EXT_mesh_features" in document.extensionsUsed
        if compression != "none":
            assert "KHR_mesh_quantization" in document.extensionsRequired
        if compression == "meshopt":
            assert "EXT_meshopt_compression" in document.extensionsRequired
            plain_path = tmp_path / f"decoded-{path.parent.parent.name}-{path.name}"
            plain_path.write_bytes(plain_glb(document, views))
            plain.append(plain_path)
    reports = run_node("validate_gltf.mjs", *paths, *plain)
    assert len(reports) == len(paths) + len(plain)
    for path, report in reports.items():
        assert report["errors"] == 0 and report["warnings"] == 0, (path, report["messages"])


def test_compression_keeps_geometry_and_makes_tiles_smaller(tiles_build, tmp_path):
    model, out = tiles_build
    reference = {p.relative_to(out / "tiles"): glb_ecef_vertices(*load_glb(p)) for p in glb_files(out)}
    for compression in ("quantize", "meshopt"):
        folder = tmp_path / compression
        write_3dtiles(model, folder, BuildConfig(tiles=TilesConfig(max_features_per_tile=4, compression=compression)))
        for relative, primitives in reference.items():
            decoded = glb_ecef_vertices(*load_glb(folder / "tiles" / relative))
            for (ecef, triangles, features), (ecef_c, triangles_c, features_c) in zip(primitives, decoded):
                assert len(triangles) == len(triangles_c), relative
                # Each triangle has a twin within a centimetre (quantization moves vertices by millimetres),
                # of the same building and facing the same way.
                centres, centres_c = ecef[triangles].mean(axis=1), ecef_c[triangles_c].mean(axis=1)
                distance, match = cKDTree(centres_c).query(centres)
                assert distance.max() < 0.01, relative
                assert np.all(features[triangles[:, 0]] == features_c[triangles_c[match, 0]]), relative
                normals = np.cross(*(ecef[triangles[:, k]] - ecef[triangles[:, 0]] for k in (1, 2)))
                normals_c = np.cross(*(ecef_c[triangles_c[match, k]] - ecef_c[triangles_c[match, 0]] for k in (1, 2)))
                assert np.all(np.einsum("ij,ij->i", normals, normals_c) > 0), relative
    sizes = {}
    for compression in ("none", "quantize", "meshopt"):  # tiles of the default size, where compression pays
        write_3dtiles(model, tmp_path / f"default-{compression}", BuildConfig(tiles=TilesConfig(compression=compression)))
        sizes[compression] = sum(p.stat().st_size for p in glb_files(tmp_path / f"default-{compression}"))
    assert sizes["meshopt"] < sizes["quantize"] < sizes["none"]


def test_one_feature_per_building_with_its_attributes(tiles_build):
    model, out = tiles_build
    schema = tileset_schema(out)
    definitions = schema["classes"]["building"]["properties"]
    names = {key: definition["name"] for key, definition in definitions.items()}
    by_id = {b.id: b for b in model.buildings}
    seen: dict[str, list[str]] = {}
    for path, _, _ in content_tiles(out):
        document, views = load_glb(path)
        rows = property_table_rows(document, views, schema)
        for ecef, triangles, features in glb_ecef_vertices(document, views):
            assert features.max() < len(rows) and len(np.unique(features[triangles], axis=None)) <= len(rows)
            assert np.all(features[triangles[:, 0]] == features[triangles[:, 1]])  # a triangle is one building's
        commune = path.parent.parent.name
        for row in rows:
            building = by_id[row["id"]]
            seen.setdefault(row["id"], []).append(path.name.rsplit("_", 1)[1])
            assert building.attributes["commune"] == commune
            for key, value in row.items():
                if key == "id":
                    continue
                expected = building.attributes.get(names[key])
                if isinstance(expected, float):
                    assert value == pytest.approx(expected, abs=0, rel=0), (row["id"], key)
                elif isinstance(expected, (list, tuple)) or definitions[key].get("array"):
                    assert value == list(expected or []), (row["id"], key)
                else:
                    assert value == expected, (row["id"], key)
    assert set(seen) == set(by_id)
    assert all(sorted(levels) == ["lod12.glb", "lod13.glb", "lod22.glb"] for levels in seen.values())


def test_identical_runs_give_identical_tiles(tiles_build, tmp_path):
    model, out = tiles_build
    again = twin.build(
        points=[SAMPLE / "lidar.laz"], footprints=SAMPLE / "footprints.gpkg", communes=SAMPLE / "communes.gpkg",
        out_dir=tmp_path, formats=("3dtiles", "pointcloud-tiles"),
        config=BuildConfig(tiles=TilesConfig(max_features_per_tile=4)),
    )
    assert len(again) == len(model)
    for layer in ("tiles", "pointcloud"):
        first = {p.relative_to(out): p.read_bytes() for p in (out / layer).rglob("*") if p.is_file()}
        second = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / layer).rglob("*") if p.is_file()}
        assert first.keys() == second.keys() and first == second, layer
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


# --- LoDs ------------------------------------------------------------------------------------------


def test_finer_lods_refine_coarser_ones_with_buildings_missing_a_lod(tiles_build, tmp_path):
    """A model with LoD 2.2 on some buildings (here the LOD1.3 solids stand in for it): three levels,
    and a building without LoD 2.2 shows its LOD1.3 at the finest level."""
    model, _ = tiles_build
    with_lod22 = {"B01", "B17", "B20"}
    buildings = []
    for building in model.buildings:
        if building.id in with_lod22:
            building = replace(building, lods={**building.lods, "2.2": building.solids("1.3")[0]})
        buildings.append(building)
    richer = CityModel(tuple(buildings), model.crs, model.metadata, model.communes)
    write_3dtiles(richer, tmp_path, BuildConfig(tiles=TilesConfig(max_features_per_tile=40)))
    chains = []
    for _, tile, parent in walk_tiles(tmp_path / "tiles/tileset.json"):
        if tile.get("content", {}).get("uri", "").endswith("_lod12.glb"):
            chain = [tile]
            while chain[-1].get("children"):
                chain.append(chain[-1]["children"][0])
            chains.append(chain)
    assert len(chains) == 2  # one leaf per commune
    levels = {tuple(t["content"]["uri"].rsplit("_", 1)[1] for t in chain) for chain in chains}
    assert levels == {("lod12.glb", "lod13.glb", "lod22.glb")}
    for chain in chains:
        assert [t["geometricError"] for t in chain] == [16.0, 8.0, 0.0]
    ids_at_22 = []
    for path in sorted((tmp_path / "tiles").rglob("*_lod22.glb")):
        ids_at_22 += [row["id"] for row in property_table_rows(*load_glb(path), tileset_schema(tmp_path))]
    assert sorted(ids_at_22) == sorted(b.id for b in model.buildings)  # every building at the finest level


# --- communes and bad inputs -----------------------------------------------------------------------


def test_buildings_outside_every_commune_go_to_unassigned_or_stop_the_run(tmp_path, proj_data, validators_dir):
    west = read_communes(SAMPLE / "communes.gpkg").communes[0]
    only_west = write_communes(tmp_path / "west.gpkg", [west.polygon], [west.code])
    model = twin.build(
        points=[SAMPLE / "lidar.laz"], footprints=SAMPLE / "footprints.gpkg", communes=only_west,
        out_dir=tmp_path / "out", formats=("3dtiles",),
    )
    outside = [b.id for b in model.buildings if b.attributes["commune"] is None]
    assert outside and any(f"{len(outside)} buildings lie outside every commune" in n for n in model.metadata["notes"])
    root = json.loads((tmp_path / "out/tiles/tileset.json").read_text())
    assert [c["content"]["uri"] for c in root["root"]["children"]] == ["77083/tileset.json", "unassigned/tileset.json"]
    assert root["metadata"]["properties"]["unassignedBuildings"] == len(outside)
    unassigned = json.loads((tmp_path / "out/tiles/unassigned/tileset.json").read_text())
    assert "code" not in unassigned["metadata"]["properties"]
    assert schema_errors(tiles_validator(validators_dir / "3d-tiles-1.1"), unassigned) == []

    result = twin_cli(
        "build", "--points", SAMPLE / "lidar.laz", "--footprints", SAMPLE / "footprints.gpkg", "--communes", only_west,
        "--outside-communes", "refuse", "--format", "3dtiles", "--proj-data", proj_data, "--out", tmp_path / "refused",
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "lie outside every commune" in lines[0] and outside[0] in lines[0], result.stderr
    assert not any((tmp_path / "refused").iterdir())


def test_empty_commune_is_reported_and_gets_no_tileset(tmp_path, proj_data, validators_dir):
    polygons = [c.polygon for c in read_communes(SAMPLE / "communes.gpkg").communes]
    polygons.append(shapely.box(600000, 6800000, 601000, 6801000))
    communes = write_communes(tmp_path / "communes.gpkg", polygons, ["77083", "93051", "75056"])
    model = twin.build(
        points=[SAMPLE / "lidar.laz"], footprints=SAMPLE / "footprints.gpkg", communes=communes,
        out_dir=tmp_path / "out", formats=("3dtiles",),
    )
    assert any("commune 75056" in note and "holds no building" in note for note in model.metadata["notes"])
    root = json.loads((tmp_path / "out/tiles/tileset.json").read_text())
    assert root["metadata"]["properties"]["emptyCommunes"] == ["75056"]
    assert not (tmp_path / "out/tiles/75056").exists()
    assert schema_errors(tiles_validator(validators_dir / "3d-tiles-1.1"), root) == []


def test_no_building_with_a_solid_gives_an_empty_but_valid_root(tiles_build, tmp_path, validators_dir):
    model, _ = tiles_build
    failed = tuple(replace(b, lods={}, parts=(), status=Status.FAILED) for b in model.buildings)
    write_3dtiles(CityModel(failed, model.crs, model.metadata, model.communes), tmp_path, BuildConfig())
    root = json.loads((tmp_path / "tiles/tileset.json").read_text())
    assert "children" not in root["root"] and root["metadata"]["properties"]["untiledBuildings"] == len(failed)
    assert sorted(root["metadata"]["properties"]["emptyCommunes"]) == ["77083", "93051"]
    assert schema_errors(tiles_validator(validators_dir / "3d-tiles-1.1"), root) == []


def test_commune_file_without_code_field_is_one_clear_line(tmp_path, proj_data):
    path = tmp_path / "communes.gpkg"
    pyogrio.raw.write(
        path, geometry=np.array([shapely.to_wkb(shapely.box(0, 0, 1, 1))], dtype=object),
        field_data=[np.array(["x"], dtype=object)], fields=["label"], driver="GPKG", crs="EPSG:2154",
        geometry_type="Polygon",
    )
    result = twin_cli(
        "build", "--points", SAMPLE / "lidar.laz", "--footprints", SAMPLE / "footprints.gpkg", "--communes", path,
        "--format", "3dtiles", "--proj-data", proj_data, "--out", tmp_path / "out",
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "--commune-field" in lines[0]
    assert not (tmp_path / "out/tiles").exists()


def test_replacing_tiles_of_an_earlier_run_leaves_no_stale_file(tiles_build, tmp_path):
    model, _ = tiles_build
    stale = tmp_path / "tiles/99999/tileset.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    write_3dtiles(model, tmp_path, BuildConfig())
    assert not stale.exists() and (tmp_path / "tiles/77083/tileset.json").exists()


# --- building blocks -------------------------------------------------------------------------------


def test_quadtree_respects_the_budget_and_places_each_building_once():
    rng = np.random.default_rng(3)
    anchors = np.concatenate([rng.uniform(0, 1000, (300, 2)), np.full((5, 2), 500.0)])  # five at one spot
    weights = rng.integers(10, 200, len(anchors)).astype(float)
    tree = quadtree(anchors, weights, max_count=20, max_weight=2000)
    leaves = tree.leaves()
    members = sorted(m for leaf in leaves for m in leaf.members)
    assert members == list(range(len(anchors)))
    for leaf in leaves:
        inseparable = np.all(anchors[list(leaf.members)] == anchors[leaf.members[0]])
        assert inseparable or (len(leaf.members) <= 20 and weights[list(leaf.members)].sum() <= 2000)
    assert len({leaf.name for leaf in leaves}) == len(leaves)


def test_quadtree_keeps_every_kind_of_weight_within_its_own_budget():
    rng = np.random.default_rng(4)
    anchors = rng.uniform(0, 1000, (300, 2))
    weights = np.column_stack([rng.integers(10, 200, 300), np.where(rng.random(300) < 0.2, 5000.0, 0.0)])
    tree = quadtree(anchors, weights, max_count=50, max_weight=(4000, 12000))
    for leaf in tree.leaves():
        members = list(leaf.members)
        assert len(members) == 1 or np.all(weights[members].sum(axis=0) <= (4000, 12000))
    # The second weight alone splits more than the first does.
    assert len(tree.leaves()) > len(quadtree(anchors, weights[:, 0], max_count=50, max_weight=4000).leaves())


def test_attribute_types_and_missing_values():
    def building(identifier, **attributes):
        return Building(identifier, shapely.box(0, 0, 1, 1), Status.BUILT, "", attributes)

    buildings = [
        building("a", height=3.5, floors=2, flag=True, notes=["x", "y"], label="é", **{"2 name": 1}),
        building("b", height=float("nan"), floors=None, flag=None, notes=None, label=None),
    ]
    properties = {p.key: p for p in building_properties(buildings)}
    assert properties["id"].attribute is None and properties["id"].definition()["required"] is True
    assert properties["height"].component_type == "FLOAT64" and "noData" in properties["height"].definition()
    assert properties["floors"].component_type == "INT32"
    assert properties["flag"].type == "STRING"  # BOOLEAN cannot have noData
    assert properties["notes"].array and properties["notes"].type == "STRING"
    assert properties["_2_name"].definition()["name"] == "2 name"


# --- the point-cloud layer -------------------------------------------------------------------------


def test_point_cloud_layer_has_the_same_geoid_correct_heights(tiles_build, proj_data):
    model, out = tiles_build
    tileset_path = out / "pointcloud/tileset.json"
    tileset = json.loads(tileset_path.read_text())
    assert tileset["asset"]["version"] == "1.1" and "created_date" not in json.dumps(tileset)
    assert tileset["metadata"]["properties"]["geoidGrids"] == list(HeightTransform.for_crs(model.crs).grids)
    heights = []
    stack = [(tileset["root"], np.eye(4), "REPLACE")]
    while stack:
        tile, parent_transform, parent_refine = stack.pop()
        transform = parent_transform @ np.array(tile.get("transform", np.eye(4).ravel().tolist())).reshape(4, 4).T
        uri = tile.get("content", {}).get("uri", "")
        refine = tile.get("refine", parent_refine)
        shown_when_refined = refine == "ADD" or not tile.get("children")  # what a viewer shows up close
        if uri.endswith(".glb") and shown_when_refined:
            for ecef, _, _ in glb_ecef_vertices(*load_glb(out / "pointcloud" / uri), transform):
                heights.append(ecef_to_geodetic(ecef)[:, 2])
        stack.extend((child, transform, refine) for child in tile.get("children", []))
    heights = np.concatenate(heights)
    source = model.metadata["inputs"]["points"][0]
    assert len(heights) == source["point_count"]
    low, high = source["bounds"][2], source["bounds"][5]
    transform = HeightTransform.for_crs(model.crs)
    x, y = source["bounds"][0], source["bounds"][1]
    undulation = transform.geodetic(np.array([[x, y, 0.0]]))[0, 2]
    assert heights.min() == pytest.approx(low + undulation, abs=0.05)
    assert heights.max() == pytest.approx(high + undulation, abs=0.05)


def test_point_cloud_glbs_pass_the_khronos_validator(tiles_build):
    _, out = tiles_build
    paths = sorted((out / "pointcloud").rglob("*.glb"))
    assert paths
    for path, report in run_node("validate_gltf.mjs", *paths).items():
        assert report["errors"] == 0, (path, report["messages"])


def test_coloured_point_cloud_is_valid_gltf(shared_data, proj_data, tmp_path):
    """IGN LiDAR HD points with RGB: py3dtiles' colours rewritten as valid glTF colours."""
    source = shared_data / "lidarhd/montpellier/test_data_77050_627755_LA93_IGN69.laz"
    model = CityModel((), pyproj.CRS("EPSG:5698"), {"inputs": {"points": [{"path": str(source), "point_count": 73355}]}})
    written = write_pointcloud_tiles(model, tmp_path, BuildConfig())
    tileset = json.loads((tmp_path / "pointcloud/tileset.json").read_text())
    assert tileset["metadata"]["properties"]["coloured"] is True
    glbs = [p for p in written if p.suffix == ".glb"]
    for path, report in run_node("validate_gltf.mjs", *glbs).items():
        assert report["errors"] == 0 and report["warnings"] == 0, (path, report["messages"])
    document, views = load_glb(glbs[0])
    assert document.accessors[document.meshes[0].primitives[0].attributes.COLOR_0].normalized
