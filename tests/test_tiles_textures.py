"""Textured 3D Tiles: buildings with `Building.textures` give tiles with one JPEG atlas each, valid
for the Khronos glTF validator with every compression, within the atlas budget, whose texture
coordinates find each face's own patch; tiles without textures stay as they were."""

from __future__ import annotations

import zlib
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from exporters.tiles3d import write_3dtiles
from reconstruction.geometry import surface_normal
from tests.helpers import accessor_values, glb_ecef_vertices, load_glb, plain_glb, property_table_rows, run_node
from tests.test_tiles3d import tileset_schema
from twin.config import BuildConfig, TilesConfig
from twin.heights import HeightTransform
from twin.model import Building, CityModel, Surface, SurfaceKind, SurfaceTexture

TEXTURED_COMMUNE = "93051"
TEXTURED_LODS = ("1.2", "2.2")  # LOD1.3 stays plain: its tiles must not change
PIXELS_PER_METRE = 4.0
SLIVER_M2 = 0.1


def face_uv(surface: Surface) -> tuple[np.ndarray, ...]:
    """Per ring, the surface's coordinates in its own plane (u to the right seen from outside, v up)
    scaled to [0, 1] over the surface's extent."""
    normal = surface_normal(surface)
    right = np.cross([0.0, 0.0, 1.0], normal)
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-6 else np.array([1.0, 0.0, 0.0])
    up = np.cross(normal, right)
    planar = [np.column_stack([ring @ right, ring @ up]) for ring in surface.rings]
    low = planar[0].min(axis=0)
    extent = np.maximum(planar[0].max(axis=0) - low, 1e-9)
    return tuple((p - low) / extent for p in planar), extent


def surface_colour(building_id: str, key: tuple[str, int, int]) -> int:
    """The blue level that tells one textured surface from another."""
    return 130 + zlib.crc32(f"{building_id}{key}".encode()) % 121


def expected_colour(blue: float, uv: np.ndarray) -> np.ndarray:
    """The colour of a synthetic patch at texture coordinates `uv` (v up): red follows u, green
    follows v, blue is the surface's own; every colour is a magenta no sky, globe or plain
    material shows."""
    uv = np.atleast_2d(uv)
    return np.column_stack([130 + 120 * uv[:, 0], 10 + 60 * uv[:, 1], np.full(len(uv), blue)])


def synthetic_patch(building_id: str, key: tuple[str, int, int], extent: np.ndarray) -> np.ndarray:
    """A gradient patch of about PIXELS_PER_METRE pixels per metre whose pixel centres span uv [0, 1]."""
    width, height = (int(np.clip(round(e * PIXELS_PER_METRE), 8, 64)) for e in extent)
    u, v = np.meshgrid(np.linspace(0.0, 1.0, width), np.linspace(1.0, 0.0, height))
    colours = expected_colour(surface_colour(building_id, key), np.column_stack([u.ravel(), v.ravel()]))
    return np.rint(colours).astype(np.uint8).reshape(height, width, 3)


def with_textures(building: Building, lods=TEXTURED_LODS) -> Building:
    """The building with a synthetic texture on every roof and wall of `lods` (ground surfaces stay plain)."""
    textures = {}
    for lod in lods:
        for solid_index, solid in enumerate(building.solids(lod)):
            for surface_index, surface in enumerate(solid.surfaces):
                if surface.kind == SurfaceKind.GROUND:
                    continue
                key = (lod, solid_index, surface_index)
                uv, extent = face_uv(surface)
                textures[key] = SurfaceTexture(synthetic_patch(building.id, key, extent), uv, "synthetic")
    return replace(building, textures=textures)


def textured_model(model: CityModel, commune: str | None = TEXTURED_COMMUNE) -> CityModel:
    """The model with the buildings of `commune` (all buildings for None) textured."""
    buildings = tuple(
        with_textures(b) if commune is None or b.attributes.get("commune") == commune else b for b in model.buildings
    )
    return CityModel(buildings, model.crs, model.metadata, model.communes)


@pytest.fixture(scope="module")
def textured(tiles_build):
    model, _ = tiles_build
    return textured_model(model)


def textured_primitive(document):
    for primitive in document.meshes[0].primitives:
        material = document.materials[primitive.material]
        if material.pbrMetallicRoughness.baseColorTexture is not None:
            return primitive
    return None


def atlas_image(document, views) -> np.ndarray:
    image = document.images[document.textures[0].source]
    assert image.mimeType == "image/jpeg"
    decoded = cv2.imdecode(np.frombuffer(views[image.bufferView], np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def bilinear(image: np.ndarray, gltf_uv: np.ndarray) -> np.ndarray:
    """The image sampled as a GPU samples a texture: glTF uv (v down), texel centres at half-integers."""
    height, width = image.shape[:2]
    x = np.clip(gltf_uv[:, 0] * width - 0.5, 0, width - 1)
    y = np.clip(gltf_uv[:, 1] * height - 0.5, 0, height - 1)
    x0, y0 = np.minimum(x.astype(int), width - 2), np.minimum(y.astype(int), height - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    pixels = image.astype(np.float64)
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x0 + 1] * fx
    bottom = pixels[y0 + 1, x0] * (1 - fx) + pixels[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def face_mapping_errors(path: Path, model: CityModel, schema: dict, heights: HeightTransform) -> np.ndarray:
    """Per textured triangle of a tile: the largest channel difference between the atlas at the
    triangle's centre and the building's own patch at the same place on the face.

    Each triangle is traced back to its face through its three corners and its orientation: the
    one textured face of its building that holds all three corners and faces the same way (two
    parts' walls against each other share corners but face opposite ways). Slivers are left out:
    their corners, a few millimetres apart, can lie on two faces at once."""
    document, views = load_glb(path)
    primitive = textured_primitive(document)
    lod = {"lod12": "1.2", "lod13": "1.3", "lod22": "2.2"}[path.stem.rsplit("_", 1)[1]]
    ids = [row["id"] for row in property_table_rows(document, views, schema)]
    by_id = {b.id: b for b in model.buildings}
    corners, owners, patch_uv, blues, normals = [], [], [], [], []
    for feature, building_id in enumerate(ids):
        building = by_id[building_id]
        for (texture_lod, solid_index, surface_index), texture in building.textures.items():
            if texture_lod != lod:
                continue
            surface = building.solids(lod)[solid_index].surfaces[surface_index]
            corners.append(heights.ecef(np.concatenate(surface.rings)))
            exterior = corners[-1][: len(surface.rings[0])]
            normals.append(np.cross(exterior, np.roll(exterior, -1, axis=0)).sum(axis=0))  # Newell's normal
            patch_uv.append(np.concatenate(texture.uv))
            owners += [(feature, len(blues))] * len(corners[-1])
            blues.append(surface_colour(building_id, (lod, solid_index, surface_index)))
    corners, patch_uv = np.concatenate(corners), np.concatenate(patch_uv)
    tree = cKDTree(corners)

    index = document.meshes[0].primitives.index(primitive)
    ecef, triangles, features = glb_ecef_vertices(document, views)[index]
    gltf_uv = accessor_values(document, views, primitive.attributes.TEXCOORD_0)
    atlas = atlas_image(document, views)
    errors = []
    for triangle in triangles:
        candidates = [
            {(owners[j], j) for j in tree.query_ball_point(ecef[corner], 0.005) if owners[j][0] == features[corner]}
            for corner in triangle
        ]
        normal = np.cross(*(ecef[triangle[k]] - ecef[triangle[0]] for k in (1, 2)))
        faces = set.intersection(*({owner for owner, _ in c} for c in candidates))
        faces = {face for face in faces if normals[face[1]] @ normal > 0}
        if np.linalg.norm(normal) / 2 < SLIVER_M2:
            continue
        assert len(faces) == 1, f"{path.name}: a textured triangle matches {len(faces)} textured faces"
        face = faces.pop()
        model_corners = [next(j for owner, j in c if owner == face) for c in candidates]
        expected = expected_colour(blues[face[1]], patch_uv[model_corners].mean(axis=0))[0]
        found = bilinear(atlas, gltf_uv[triangle].mean(axis=0, keepdims=True))[0]
        errors.append(np.abs(found - expected).max())
    return np.array(errors)


@pytest.mark.parametrize("compression, max_side", [("none", 4096), ("quantize", 128), ("meshopt", 4096)])
def test_textured_tiles_are_valid_within_budget_and_map_each_face_to_its_patch(
    compression, max_side, textured, tmp_path
):
    config = TilesConfig(max_features_per_tile=4, compression=compression, max_atlas_side=max_side)
    write_3dtiles(textured, tmp_path, BuildConfig(tiles=config))
    schema = tileset_schema(tmp_path)
    heights = HeightTransform.for_crs(textured.crs)
    paths = sorted((tmp_path / "tiles").rglob("*.glb"))
    textured_paths, decoded, errors = [], [], []
    for path in paths:
        document, views = load_glb(path)
        primitive = textured_primitive(document)
        if path.parent.parent.name != TEXTURED_COMMUNE or path.stem.endswith("lod13"):
            assert primitive is None and not document.images, path
            continue
        textured_paths.append(path)
        assert primitive is not None and len(document.meshes[0].primitives) >= 2, path  # ground surfaces stay plain
        assert len(document.images) == 1 and "KHR_materials_unlit" in document.extensionsUsed
        assert "KHR_materials_unlit" not in document.extensionsRequired  # a lit fallback is fine
        sampler = document.samplers[document.textures[0].sampler]
        assert (sampler.minFilter, sampler.magFilter, sampler.wrapS, sampler.wrapT) == (9987, 9729, 33071, 33071)
        assert max(atlas_image(document, views).shape[:2]) <= max_side
        texcoords = document.accessors[primitive.attributes.TEXCOORD_0]
        if compression == "none":
            assert texcoords.componentType == 5126
        else:
            assert texcoords.componentType == 5123 and texcoords.normalized  # KHR_mesh_quantization's uint16
        for each in document.meshes[0].primitives:
            assert getattr(each.attributes, "_FEATURE_ID_0") is not None and each.extensions["EXT_mesh_features"]
        errors.append(face_mapping_errors(path, textured, schema, heights))
        if compression == "meshopt":
            decoded.append(tmp_path / f"decoded-{path.parent.parent.name}-{path.name}")
            decoded[-1].write_bytes(plain_glb(document, views))
    assert len(textured_paths) >= 4
    errors = np.concatenate(errors)
    assert len(errors) > 500
    # JPEG keeps smooth gradients within a few levels; a wrong patch, a flipped or offset v would be off by tens.
    tolerance = 12 if max_side == 4096 else 25  # patches shrunk to fit 128 pixels are a few texels wide
    assert np.median(errors) < tolerance / 3 and np.quantile(errors, 0.98) < tolerance, np.quantile(errors, [0.5, 0.98, 1])
    reports = run_node("validate_gltf.mjs", *textured_paths, *decoded)
    assert len(reports) == len(textured_paths) + len(decoded)
    for path, report in reports.items():
        assert report["errors"] == 0 and report["warnings"] == 0, (path, report["messages"])


def test_tiles_without_textures_are_unchanged_and_textured_ones_are_deterministic(textured, tiles_build, tmp_path):
    _, built = tiles_build
    config = BuildConfig(tiles=TilesConfig(max_features_per_tile=4))
    write_3dtiles(textured, tmp_path / "a", config)
    write_3dtiles(textured, tmp_path / "b", config)
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in sorted((tmp_path / "a/tiles").rglob("*.glb"))}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in sorted((tmp_path / "b/tiles").rglob("*.glb"))}
    assert first == second
    plain = {p.relative_to(built): p.read_bytes() for p in sorted((built / "tiles").rglob("*.glb"))}
    assert first.keys() == plain.keys()
    changed = {p for p in first if first[p] != plain[p]}
    expected = {p for p in first if p.parts[1] == TEXTURED_COMMUNE and not p.stem.endswith("lod13")}
    assert changed == expected and len(expected) >= 4


def test_textured_communes_split_into_tiles_whose_patches_fit_one_atlas(textured, tmp_path):
    side = 256
    write_3dtiles(textured, tmp_path / "textured", BuildConfig(tiles=TilesConfig(max_atlas_side=side)))
    plain_model = CityModel(tuple(replace(b, textures={}) for b in textured.buildings), textured.crs, textured.metadata, textured.communes)
    write_3dtiles(plain_model, tmp_path / "plain", BuildConfig(tiles=TilesConfig(max_atlas_side=side)))

    def tiles(root, commune):
        return sorted(p.name for p in (root / "tiles" / commune / "content").glob("*.glb"))

    assert len(tiles(tmp_path / "textured", TEXTURED_COMMUNE)) > len(tiles(tmp_path / "plain", TEXTURED_COMMUNE))
    other = next(p.name for p in (tmp_path / "plain/tiles").iterdir() if p.is_dir() and p.name != TEXTURED_COMMUNE)
    assert tiles(tmp_path / "textured", other) == tiles(tmp_path / "plain", other)
    by_id = {b.id: b for b in textured.buildings}
    for path in sorted((tmp_path / "textured/tiles" / TEXTURED_COMMUNE / "content").glob("*lod22.glb")):
        document, views = load_glb(path)
        ids = [row["id"] for row in property_table_rows(document, views, tileset_schema(tmp_path / "textured"))]
        pixels = sum(t.image.shape[0] * t.image.shape[1] for i in ids for k, t in by_id[i].textures.items() if k[0] == "2.2")
        assert len(ids) == 1 or pixels <= 0.7 * side * side, path.name


@pytest.mark.parametrize("break_texture, message", [
    (lambda t: replace(t, uv=(t.uv[0][:-1],)), "has texture coordinates for other rings than the surface's"),
    (lambda t: replace(t, image=t.image[..., 0]), "is not an RGB image of bytes"),
])
def test_textures_that_do_not_fit_their_surface_are_refused(break_texture, message, textured, tmp_path):
    building = next(b for b in textured.buildings if b.textures)
    key, texture = next(iter(sorted(building.textures.items())))
    broken = replace(building, textures={key: break_texture(texture)})
    model = CityModel((broken,), textured.crs, textured.metadata)
    with pytest.raises(ValueError, match=f"building {building.id}: the texture of LoD {key[0]}.*{message}"):
        write_3dtiles(model, tmp_path, BuildConfig())


@pytest.mark.parametrize("options", [{"max_atlas_side": 32}, {"max_atlas_side": 1001}, {"jpeg_quality": 0}])
def test_atlas_options_outside_their_range_are_refused(options):
    with pytest.raises(ValueError, match="texture atlas side|JPEG quality"):
        TilesConfig(**options)


def test_build_with_the_sample_survey_writes_textured_tiles_that_validate(sample_dir, proj_data, tmp_path):
    """End to end: `twin build --images` textures the reconstructed buildings from the sample's
    aerial images and the 3D Tiles carry them: one atlas per tile, valid glTF."""
    import twin

    model = twin.build(points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg", out_dir=tmp_path,
                       images=sample_dir / "imagery" / "cameras.json", formats=("3dtiles",))
    counts = model.metadata["textures"]
    assert counts["textured"] > 0.8 * counts["surfaces"]
    paths = sorted((tmp_path / "tiles").rglob("*.glb"))
    for path in paths:
        document, views = load_glb(path)
        assert len(document.images) == 1 and document.images[0].mimeType == "image/jpeg", path.name
        assert max(atlas_image(document, views).shape[:2]) <= TilesConfig().max_atlas_side
    reports = run_node("validate_gltf.mjs", *paths)
    for path, report in reports.items():
        assert report["errors"] == 0 and report["warnings"] == 0, (path, report["messages"])
