"""Textures from oriented images: camera choice by visibility, patches against the true
surface pattern, the textured CityJSON (schema, cjio), budgets and determinism.

The scene is drawn here: a few buildings in Lambert-93 coordinates, five aerial cameras
(nadir and four obliques), and images rendered by ray casting with a colour that is a known
function of the world position and the surface kind, so that a patch can be compared with
what it should show.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import open3d as o3d
import pyproj
import pytest
import shapely

from exporters.cityjson import CITYJSON_FILE, write_cityjson_file
from reconstruction.extrude import Plane, RoofFace, extrude_faces, extrude_flat
from reconstruction.texturing import texture_buildings
from reconstruction.triangulate import triangulate_surface
from twin.config import TextureConfig
from twin.imagery.camera import FrameCamera, Intrinsics, look_at
from twin.model import Building, CityModel, SurfaceKind, Status
from tests.helpers import cityjson_validators, schema_errors

ORIGIN = np.array([652000.0, 6861000.0, 0.0])  # Lambert-93 magnitudes, where float32 would fail
KIND_BLUE = {SurfaceKind.ROOF: 200.0, SurfaceKind.WALL: 70.0, SurfaceKind.GROUND: 0.0}


def true_colour(world: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """RGB (n, 3) float of the scene's surfaces: smooth stripes of a few metres, blue by kind."""
    local = world - ORIGIN
    red = 128 + 100 * np.sin(1.3 * local[:, 0] + 0.4 * local[:, 2])
    green = 128 + 100 * np.sin(1.1 * local[:, 1] + 0.9 * local[:, 2])
    blue = np.array([KIND_BLUE[SurfaceKind(k)] for k in kinds]) if len(kinds) else np.zeros(0)
    return np.column_stack([red, green, blue])


def _building(building_id: str, solid) -> Building:
    footprint = shapely.Polygon(solid.surfaces[0].rings[0][:, :2])
    return Building(building_id, footprint, Status.BUILT, "", {}, {"2.2": solid, "1.2": solid})


def _at(polygon: shapely.Polygon) -> shapely.Polygon:
    return shapely.affinity.translate(polygon, ORIGIN[0], ORIGIN[1])


def scene_buildings() -> list[Building]:
    """A tall block with a lower neighbour against it (a shared wall), a courtyard block and
    a gabled house."""
    gable = [
        RoofFace(_at(shapely.box(-30, 0, -18, 4)), Plane(ORIGIN[0] - 30, ORIGIN[1], 6.0, 0.0, 0.5)),
        RoofFace(_at(shapely.box(-30, 4, -18, 8)), Plane(ORIGIN[0] - 30, ORIGIN[1] + 8, 6.0, 0.0, -0.5)),
    ]
    courtyard = shapely.box(30, 0, 50, 20).difference(shapely.box(38, 8, 42, 12))
    return [
        _building("A-tall", extrude_flat(_at(shapely.box(0, 0, 10, 8)), 0.0, 9.0)),
        _building("B-low", extrude_flat(_at(shapely.box(10, 0, 18, 8)), 0.0, 5.0)),
        _building("C-court", extrude_flat(_at(courtyard), 0.0, 12.0)),
        _building("D-gable", extrude_faces(gable, 0.0)),
    ]


def scene_cameras() -> list[FrameCamera]:
    target = ORIGIN + np.array([10.0, 10.0, 3.0])
    intrinsics = Intrinsics(600, 460, 733.0, 733.0, 299.5, 229.5, k1=-0.05, k2=0.01)
    cameras = [FrameCamera("nadir", intrinsics, target + [0.5, 0.3, 160.0], look_at(target + [0.5, 0.3, 160.0], target))]
    for name, direction in (("east", (1, 0)), ("north", (0, 1)), ("south", (0, -1)), ("west", (-1, 0))):
        center = target + np.array([direction[0] * 95.0, direction[1] * 95.0, 110.0])
        cameras.append(FrameCamera(f"oblique-{name}", intrinsics, center, look_at(center, target)))
    return cameras


def ray_scene(buildings: list[Building]) -> tuple[o3d.t.geometry.RaycastingScene, np.ndarray]:
    """The buildings on flat ground in local coordinates (relative to ORIGIN), and each
    triangle's surface kind."""
    vertices, triangles, kinds, offset = [], [], [], 0
    for building in buildings:
        for surface in building.lods["2.2"].surfaces:
            v, t = triangulate_surface(surface)
            vertices.append(v - ORIGIN)
            triangles.append(t + offset)
            kinds += [str(surface.kind)] * len(t)
            offset += len(v)
    ground = np.array([[-500, -500, 0], [500, -500, 0], [500, 500, 0], [-500, 500, 0]], float)
    vertices.append(ground)
    triangles.append(np.array([[0, 1, 2], [0, 2, 3]]) + offset)
    kinds += [str(SurfaceKind.GROUND)] * 2
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(
        o3d.core.Tensor(np.concatenate(vertices).astype(np.float32)),
        o3d.core.Tensor(np.concatenate(triangles).astype(np.uint32)),
    )
    return scene, np.array(kinds)


def cast(scene, camera: FrameCamera, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    origins = np.broadcast_to(camera.center - ORIGIN, directions.shape)
    hits = scene.cast_rays(o3d.core.Tensor(np.hstack([origins, directions]).astype(np.float32)))
    return hits["t_hit"].numpy().astype(float), hits["primitive_ids"].numpy().astype(np.int64)


def render(buildings: list[Building], camera: FrameCamera) -> np.ndarray:
    """The camera's RGB image of the buildings on flat ground, by casting one ray per pixel."""
    scene, kinds = ray_scene(buildings)
    width, height = camera.intrinsics.width, camera.intrinsics.height
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    directions = camera.rays(np.column_stack([columns.ravel(), rows.ravel()]).astype(float))
    distance, primitive = cast(scene, camera, directions)
    seen = np.isfinite(distance)
    colour = np.zeros((len(directions), 3))
    world = camera.center + directions[seen] * distance[seen, None]
    colour[seen] = true_colour(world, kinds[primitive[seen]])
    return np.clip(colour, 0, 255).round().astype(np.uint8).reshape(height, width, 3)


def seen_share(buildings: list[Building], camera: FrameCamera, world: np.ndarray) -> float:
    """Share of the world points that the camera sees (nothing in front of them, on the image)."""
    scene, _ = ray_scene(buildings)
    to_points = world - camera.center
    distance = np.linalg.norm(to_points, axis=1)
    hit, _ = cast(scene, camera, to_points / distance[:, None])
    pixels, depth = camera.project(world)
    return float(np.mean((hit > distance - 0.05) & (depth > 0) & camera.inside(pixels)))


@pytest.fixture(scope="module")
def scene():
    buildings = scene_buildings()
    cameras = scene_cameras()
    images = {camera.name: render(buildings, camera) for camera in cameras}
    return buildings, cameras, images


@pytest.fixture(scope="module")
def textured(scene):
    buildings, cameras, images = scene
    return texture_buildings(buildings, cameras, images, TextureConfig())


def patch_world_points(building: Building, key, texture) -> np.ndarray:
    """World points (h*w, 3) of a patch's pixel centres, from the affine map that takes the
    surface's vertices to their texture coordinates (fitted here, independently of the code)."""
    lod, solid_index, surface_index = key
    surface = building.solids(lod)[solid_index].surfaces[surface_index]
    xyz = np.concatenate(surface.rings)
    anchor = xyz[0]
    uv = np.concatenate(texture.uv)
    design = np.column_stack([uv, np.ones(len(uv))])
    affine, *_ = np.linalg.lstsq(design, xyz - anchor, rcond=None)
    # reconstructed surfaces are planar to the millimetre (their vertices sit on a millimetre grid)
    assert np.abs(design @ affine - (xyz - anchor)).max() < 5e-3, "texture coordinates are not an affine map of the surface"
    height, width = texture.image.shape[:2]
    u, v = np.meshgrid(np.linspace(0, 1, width), np.linspace(1, 0, height))
    return anchor + np.column_stack([u.ravel(), v.ravel(), np.ones(u.size)]) @ affine


def patch_error(building: Building, key, texture) -> float:
    """Median absolute difference (grey levels) between the patch and the true pattern."""
    surface = building.solids(key[0])[key[1]].surfaces[key[2]]
    world = patch_world_points(building, key, texture)
    truth = true_colour(world, np.array([str(surface.kind)] * len(world)))
    inside = inside_surface(surface, world, 0.2)
    return float(np.median(np.abs(texture.image.reshape(-1, 3)[inside].astype(float) - truth[inside])))


def inside_surface(surface, world: np.ndarray, inset: float) -> np.ndarray:
    """Which world points of the surface's plane lie inside it, `inset` metres from its edges."""
    rings = [_plane_coordinates(ring, surface) for ring in surface.rings]
    polygon = shapely.Polygon(rings[0], rings[1:]).buffer(-inset)
    return shapely.contains_xy(polygon, *_plane_coordinates(world, surface).T)


def _plane_coordinates(points: np.ndarray, surface) -> np.ndarray:
    from reconstruction.geometry import surface_normal

    normal = surface_normal(surface)
    u = np.cross(normal, [1.0, 0.0, 0.0] if abs(normal[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    relative = points - surface.rings[0][0]
    return np.column_stack([relative @ u, relative @ v])


def test_every_textured_surface_shows_its_true_pattern(textured):
    buildings, report = textured
    assert report.textured >= 20
    for building in buildings:
        for key, texture in building.textures.items():
            assert patch_error(building, key, texture) < 12.0, (building.id, key, texture.source)


def test_every_texture_comes_from_a_camera_that_sees_its_surface(scene, textured):
    buildings, cameras, _ = scene
    by_name = {c.name: c for c in cameras}
    for building in textured[0]:
        for key, texture in building.textures.items():
            world = patch_world_points(building, key, texture)
            surface = building.solids(key[0])[key[1]].surfaces[key[2]]
            normal = np.cross(*(surface.rings[0][1:3] - surface.rings[0][0]))
            lifted = world + 0.02 * normal / np.linalg.norm(normal)  # off the surface, towards its outside
            assert seen_share(buildings, by_name[texture.source], lifted) >= 0.6, (building.id, key, texture.source)


def test_roofs_and_outer_walls_are_textured_and_ground_never(textured):
    buildings, report = textured
    by_id = {b.id: b for b in buildings}
    for building in buildings:
        for lod in ("1.2", "2.2"):
            surfaces = building.solids(lod)[0].surfaces
            for index, surface in enumerate(surfaces):
                if surface.kind == SurfaceKind.GROUND:
                    assert (lod, 0, index) not in building.textures
                if surface.kind == SurfaceKind.ROOF:
                    assert (lod, 0, index) in building.textures, (building.id, lod, index)
    court = by_id["C-court"].lods["2.2"]
    outer_walls = [
        i for i, s in enumerate(court.surfaces)
        if s.kind == SurfaceKind.WALL and not _at(shapely.box(37, 7, 43, 13)).contains(
            shapely.Point(s.rings[0][:, :2].mean(axis=0)))
    ]
    assert outer_walls and all(("2.2", 0, i) in by_id["C-court"].textures for i in outer_walls)
    assert report.textured + report.unseen == report.surfaces


def test_hidden_walls_are_not_textured(textured):
    """The low neighbour's wall against the tall block is inside it; the tall block's wall
    above the neighbour shows less than the minimum share; the courtyard's walls are seen
    too obliquely or only in part by every camera."""
    buildings, _ = textured
    by_id = {b.id: b for b in buildings}
    courtyard = _at(shapely.box(38, 8, 42, 12))

    def walls_on(building_id, predicate):
        solid = by_id[building_id].lods["2.2"]
        return [i for i, s in enumerate(solid.surfaces) if s.kind == SurfaceKind.WALL and predicate(s.rings[0])]

    at_x10 = lambda ring: np.allclose(ring[:, 0], ORIGIN[0] + 10.0)  # noqa: E731
    in_courtyard = lambda ring: courtyard.buffer(0.01).contains(shapely.MultiPoint(ring[:, :2]))  # noqa: E731
    hidden = [("B-low", i) for i in walls_on("B-low", at_x10)] + [("A-tall", i) for i in walls_on("A-tall", at_x10)]
    hidden += [("C-court", i) for i in walls_on("C-court", in_courtyard)]
    assert len(hidden) == 6
    for building_id, index in hidden:
        assert ("2.2", 0, index) not in by_id[building_id].textures, (building_id, index)


def test_each_wall_takes_the_camera_that_faces_it(textured):
    buildings, _ = textured
    house = next(b for b in buildings if b.id == "D-gable")
    for key, texture in house.textures.items():
        surface = house.lods[key[0]].surfaces[key[2]]
        normal = np.cross(surface.rings[0][1] - surface.rings[0][0], surface.rings[0][2] - surface.rings[0][1])
        if surface.kind == SurfaceKind.WALL and abs(normal[1]) > abs(normal[0]):
            assert texture.source == ("oblique-north" if normal[1] > 0 else "oblique-south")
        if surface.kind == SurfaceKind.WALL and abs(normal[0]) > abs(normal[1]):
            assert texture.source == ("oblique-east" if normal[0] > 0 else "oblique-west")


def test_patches_keep_within_the_budget_and_side_cap(scene):
    buildings, cameras, images = scene
    config = TextureConfig(budget_px_per_building=20_000, max_patch_side_px=96)
    result, _ = texture_buildings(buildings, cameras, images, config)
    for building in result:
        for lod in config.lods:
            patches = [t.image for k, t in building.textures.items() if k[0] == lod]
            # each side rounds up by at most one pixel and a patch has at least 2 x 2
            assert sum(p.shape[0] * p.shape[1] for p in patches) <= 1.2 * config.budget_px_per_building
            assert all(max(p.shape[:2]) <= config.max_patch_side_px for p in patches)


def test_texturing_is_deterministic_and_independent_of_camera_order(scene, textured):
    buildings, cameras, images = scene
    again, report = texture_buildings(buildings, list(reversed(cameras)), images, TextureConfig())
    assert report == textured[1]
    for first, second in zip(textured[0], again):
        assert first.textures.keys() == second.textures.keys()
        for key in first.textures:
            assert first.textures[key].source == second.textures[key].source
            assert np.array_equal(first.textures[key].image, second.textures[key].image)


@pytest.fixture(scope="module")
def textured_cityjson(textured, tmp_path_factory):
    """The textured scene written as CityJSON: (model, file, files written)."""
    model = CityModel(tuple(textured[0]), pyproj.CRS("EPSG:5698"), {"title": "textured scene"})
    path = tmp_path_factory.mktemp("textured") / CITYJSON_FILE
    return model, path, write_cityjson_file(model, path, TextureConfig(max_atlas_side=256))


def test_textured_cityjson_validates_and_points_into_its_atlases(textured_cityjson, validators_dir):
    model, path, written = textured_cityjson
    document = json.loads(path.read_text())
    file_validator, _ = cityjson_validators(validators_dir / "cityjson-2.0")
    assert schema_errors(file_validator, document) == []
    appearance = document["appearance"]
    assert len(appearance["textures"]) == 3  # atlases of 256 px: A and B share one, C fills one alone, then D
    assert [path.parent / t["image"] for t in appearance["textures"]] == written[1:]
    assert all(t["type"] == "JPG" for t in appearance["textures"])
    uv = np.array(appearance["vertices-texture"])
    atlases = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in written[1:]]
    errors, flipped_errors = [], []
    for building in model.buildings:
        for geometry in document["CityObjects"][building.id]["geometry"]:
            lod, values = geometry["lod"], geometry["texture"]["aerial"]["values"][0]
            assert len(values) == len(geometry["boundaries"][0])
            for index, (rings, boundary) in enumerate(zip(values, geometry["boundaries"][0])):
                texture = building.textures.get((lod, 0, index))
                if texture is None:
                    assert rings == [[None]] * len(boundary)
                    continue
                assert [len(r) for r in rings] == [len(b) + 1 for b in boundary]
                # Each ring vertex, looked up in the atlas through its texture coordinates, shows
                # the patch's pixel at the vertex's own texture coordinates (v up), not the pixel
                # a flipped v would give.
                atlas = atlases[rings[0][0]]
                height, width = atlas.shape[:2]
                patch = texture.image.astype(float)
                last_row, last_column = patch.shape[0] - 1, patch.shape[1] - 1
                for ring_uv, ring_indices in zip(texture.uv, rings):
                    for (u, v), (atlas_u, atlas_v) in zip(ring_uv, uv[ring_indices[1:]]):
                        row = int(np.clip(round((1 - atlas_v) * height - 0.5), 0, height - 1))
                        column = int(np.clip(round(atlas_u * width - 0.5), 0, width - 1))
                        found, patch_column = atlas[row, column], int(round(u * last_column))
                        errors.append(np.abs(found - patch[int(round((1 - v) * last_row)), patch_column]).max())
                        flipped_errors.append(np.abs(found - patch[int(round(v * last_row)), patch_column]).max())
    assert np.median(errors) < 20 and np.median(flipped_errors) > 2 * np.median(errors), (np.median(errors), np.median(flipped_errors))


def test_textured_cityjson_loads_in_cjio(textured_cityjson, tmp_path):
    _, path, _ = textured_cityjson
    cjio = Path(sys.executable).with_name("cjio")
    info = subprocess.run([cjio, path, "info", "--long"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "textures" in info.stdout.lower()
    saved = tmp_path / "copy.city.json"
    copied = subprocess.run([cjio, path, "textures_locate", "save", saved], capture_output=True, text=True)
    assert copied.returncode == 0, copied.stderr
    assert "buildings.textures" in copied.stdout


def test_textured_cityjson_is_byte_identical_when_written_again(textured_cityjson, tmp_path):
    model, path, written = textured_cityjson
    again = write_cityjson_file(model, tmp_path / CITYJSON_FILE, TextureConfig(max_atlas_side=256))
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in written]


def test_cityjson_without_textures_writes_no_texture_folder(scene, tmp_path):
    buildings, _, _ = scene
    model = CityModel(tuple(buildings), pyproj.CRS("EPSG:5698"), {})
    written = write_cityjson_file(model, tmp_path / CITYJSON_FILE)
    assert written == [tmp_path / CITYJSON_FILE] and "appearance" not in json.loads(written[0].read_text())
    assert not (tmp_path / "buildings.textures").exists()


def _sample_camera(image: str | None, crs: str = "EPSG:2154") -> FrameCamera:
    centre = np.array([668310.0, 6860380.0, 600.0])
    intrinsics = Intrinsics(400, 300, 500.0, 500.0, 199.5, 149.5)
    return FrameCamera("cam-1", intrinsics, centre, look_at(centre, centre - [0, 0, 500]), pyproj.CRS(crs), image)


@pytest.mark.parametrize(
    "image, crs, message",
    [
        ("missing.jpg", "EPSG:2154", "missing.jpg: image not found for camera 'cam-1'"),
        (None, "EPSG:2154", "camera 'cam-1' names no image"),
        ("present.jpg", "EPSG:32631", "the cameras are in WGS 84 / UTM zone 31N"),
        ("present.jpg", "EPSG:2154+5773", "the camera heights are in EGM96 height but the points. are in NGF-IGN69"),
        ("present.jpg", pyproj.CRS("EPSG:2154").to_3d().to_wkt(), "the camera heights are ellipsoidal but the points' are in NGF-IGN69"),
        ("present.jpg", "EPSG:5698", "is not in a format OpenCV reads"),
    ],
)
def test_bad_imagery_stops_the_run_before_it_starts(sample_dir, tmp_path, image, crs, message):
    import twin
    from twin.errors import InputError
    from twin.imagery.readers import write_cameras_json

    (tmp_path / "present.jpg").write_bytes(b"")
    cameras = tmp_path / "cameras.json"
    write_cameras_json([_sample_camera(str(tmp_path / image) if image else None, crs)], cameras)
    with pytest.raises(InputError, match=message):
        twin.build(points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg", images=cameras)


def test_cameras_without_a_vertical_datum_are_taken_in_the_points_one_and_the_run_says_so(sample_dir, tmp_path):
    import twin
    from twin.imagery.readers import read_cameras_json, write_cameras_json

    cameras = [replace(c, crs=pyproj.CRS("EPSG:2154")) for c in read_cameras_json(sample_dir / "imagery" / "cameras.json")]
    write_cameras_json(cameras, tmp_path / "cameras.json")
    model = twin.build(points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg",
                       images=tmp_path / "cameras.json")
    assert any("names no vertical datum; their heights are taken as NGF-IGN69" in note for note in model.metadata["notes"])
    assert model.metadata["textures"]["textured"] > 0


# The sample district and its committed aerial survey (twin.sample.imagery).


def read_survey(sample_dir: Path):
    from twin.imagery.images import read_image
    from twin.imagery.readers import read_cameras_json

    cameras = read_cameras_json(sample_dir / "imagery" / "cameras.json")
    return cameras, {c.name: read_image(c.image) for c in cameras}


@pytest.fixture(scope="module")
def sample_textured(sample_dir, tmp_path_factory):
    """The sample district built with its survey into CityJSON and CityJSONSeq:
    (model, texturing counts, cameras, output folder)."""
    import twin

    out = tmp_path_factory.mktemp("sample_textured")
    model = twin.build(points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg", out_dir=out,
                       images=sample_dir / "imagery" / "cameras.json", formats=("cityjson", "cityjsonseq"))
    cameras, _ = read_survey(sample_dir)
    return model, model.metadata["textures"], cameras, out


@pytest.fixture(scope="module")
def sample_truth(sample_dir):
    from twin.sample.imagery import sample_scene
    from twin.sample.scene import district

    origin = np.array([*json.loads((sample_dir / "truth.json").read_text())["origin"], 0.0])
    return sample_scene(*district()), origin


def test_sample_patches_show_the_true_surface_pattern(sample_textured, sample_truth):
    """Each patch against the district's true colours at the patch pixels' world points (inside
    the surface): close to them, and much closer than to the same colours shuffled (a wrong
    image or a wrong place would be as far off as the shuffle)."""
    model, counts, _, _ = sample_textured
    scene, origin = sample_truth
    rng = np.random.default_rng(1)
    assert counts["textured"] / counts["surfaces"] > 0.8
    errors, shuffled_errors = [], []
    for building in model.buildings:
        for key, texture in sorted(building.textures.items()):
            surface = building.solids(key[0])[key[1]].surfaces[key[2]]
            world = patch_world_points(building, key, texture)
            inside = np.flatnonzero(inside_surface(surface, world, 0.3))
            if len(inside) < 20:
                continue
            pick = rng.choice(inside, size=min(300, len(inside)), replace=False)
            expected = scene.colour_at(world[pick] - origin)
            got = texture.image.reshape(-1, 3)[pick].astype(float)
            error = float(np.median(np.abs(got - expected)))
            errors.append(error)
            shuffled_errors.append(float(np.median(np.abs(got - expected[rng.permutation(len(pick))]))))
            # reconstructed planes lie a few centimetres to decimetres off the true ones: window edges blur
    # Reconstructed planes lie centimetres to decimetres off the true ones (window edges blur), and
    # trees, which are no occluders here, hide a few walls: a few patches may be off, not many.
    assert np.percentile(errors, 95) < 25
    assert np.median(errors) < 12 and np.median(errors) * 2 < np.median(shuffled_errors)


def test_sample_textures_come_from_cameras_that_see_the_surface(sample_textured, sample_truth):
    """A textured surface's source camera sees it: the true scene, ray cast from that camera
    towards the patch's points, reaches them (not a neighbour in front), trees apart (they
    are not in the model, so texturing cannot know them)."""
    from twin.sample.imagery import _TREE
    model, _, cameras, _ = sample_textured
    scene, origin = sample_truth
    by_name = {c.name: c for c in cameras}
    for building in model.buildings:
        for key, texture in building.textures.items():
            surface = building.solids(key[0])[key[1]].surfaces[key[2]]
            camera = by_name[texture.source]
            world = patch_world_points(building, key, texture)
            world = world[inside_surface(surface, world, 0.3)]
            if len(world) < 10:
                continue
            to_points = world - camera.center
            distance = np.linalg.norm(to_points, axis=1)
            rays = np.hstack([np.broadcast_to(camera.center - origin, world.shape), to_points / distance[:, None]])
            hits = scene.raycasting.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
            tree = scene.kind[hits["primitive_ids"].numpy().astype(np.int64)] == _TREE
            # the reconstructed wall may stand up to ~0.5 m in front of or behind the true one
            assert np.mean((hits["t_hit"].numpy() > distance - 1.0) | tree) > 0.6, (building.id, key, texture.source)


def test_sample_shared_walls_are_not_textured(sample_textured):
    """Walls between adjoining buildings lie inside the neighbour: no camera sees them."""
    model, _, _, _ = sample_textured
    footprints = [b.footprint for b in model.buildings]
    checked = 0
    for building in model.buildings:
        for key, texture in building.textures.items():
            surface = building.solids(key[0])[key[1]].surfaces[key[2]]
            if surface.kind != SurfaceKind.WALL:
                continue
            # a point just outside the wall's middle: inside a neighbour's footprint means a shared wall
            ring = surface.rings[0]
            normal = np.cross(ring[1] - ring[0], ring[2] - ring[1])
            normal[2] = 0
            middle = ring.mean(axis=0)[:2] + 0.3 * normal[:2] / max(np.linalg.norm(normal[:2]), 1e-9)
            neighbours = [f for f, other in zip(footprints, model.buildings) if other.id != building.id]
            assert not any(f.contains(shapely.Point(middle)) for f in neighbours), (building.id, key)
            checked += 1
    assert checked > 100


def test_sample_atlases_stay_within_the_budget(sample_textured, tmp_path):
    model, _, _, _ = sample_textured
    config = TextureConfig()
    for building in model.buildings:
        for lod in config.lods:
            pixels = sum(t.image.shape[0] * t.image.shape[1] for k, t in building.textures.items() if k[0] == lod)
            assert pixels <= 1.2 * config.budget_px_per_building, (building.id, lod, pixels)
    # Small atlases, so that the sample's buildings need several: each holds whole buildings and
    # keeps their patches at full resolution (the atlas's area holds the patches it packs).
    side = 1024
    written = write_cityjson_file(model, tmp_path / CITYJSON_FILE, replace(config, max_atlas_side=side))
    assert len(written) > 3
    patch_area = sum(t.image.shape[0] * t.image.shape[1] for b in model.buildings for t in b.textures.values())
    atlas_area = 0
    for atlas in written[1:]:
        height, width = cv2.imread(str(atlas)).shape[:2]
        assert max(height, width) <= side
        atlas_area += height * width
    assert atlas_area >= patch_area * 0.9  # shared LoD patches are packed once: a little less than all


def test_sample_build_with_images_writes_a_textured_cityjson(sample_textured, validators_dir):
    model, textures, _, out = sample_textured
    assert textures["textured"] + textures["seen_by_no_image"] == textures["surfaces"]
    assert len(textures["images_used"]) == 12 and textures["cameras"].endswith("cameras.json")
    assert json.loads((out / "summary.json").read_text())["textures"]["textured"] == textures["textured"]
    assert json.loads((out / "metadata.json").read_text())["textures"] == textures
    document = json.loads((out / CITYJSON_FILE).read_text())
    file_validator, _ = cityjson_validators(validators_dir / "cityjson-2.0")
    assert schema_errors(file_validator, document) == []
    assert all((out / t["image"]).is_file() for t in document["appearance"]["textures"])
    # every textured surface, of buildings and of their parts, and only those, has texture values
    for building in model.buildings:
        objects = [(building.id, None)] + [(part.id, part) for part in building.parts]
        found = set()
        for object_id, part in objects:
            for geometry in document["CityObjects"][object_id].get("geometry", []):
                lod = geometry["lod"]
                solid_index = 0 if part is None else [p for p in building.parts if lod in p.lods].index(part)
                values = geometry.get("texture", {}).get("aerial", {}).get("values", [[]])[0]
                found |= {(lod, solid_index, i) for i, rings in enumerate(values) if rings[0][0] is not None}
        assert found == set(building.textures), building.id
    assert "appearance" not in (out / "buildings.city.jsonl").read_text()
    assert any("cityjsonseq carry no textures" in note for note in model.metadata["notes"])


def test_an_image_of_another_size_than_its_camera_stops_the_run_naming_it(sample_dir, tmp_path):
    import twin
    from twin.errors import InputError
    from twin.imagery.readers import write_cameras_json

    image = tmp_path / "small.jpg"
    cv2.imwrite(str(image), np.zeros((30, 40, 3), np.uint8))
    cameras = tmp_path / "cameras.json"
    write_cameras_json([_sample_camera(str(image), "EPSG:5698")], cameras)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"small\.jpg: the image is 40 x 30 pixels but camera 'cam-1'"):
        twin.build(points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg", images=cameras,
                   out_dir=out)
    assert not (out / CITYJSON_FILE).exists()


def test_degenerate_surfaces_are_skipped_not_fatal(scene):
    """A sliver and a surface without area (as a broken input could give) keep a plain material."""
    from twin.model import Solid, Surface

    buildings, cameras, images = scene
    tall = buildings[0]
    solid = tall.lods["2.2"]
    corner = solid.surfaces[0].rings[0][0]
    flat = Surface((np.array([corner, corner + [1, 0, 0], corner + [2, 0, 0]]),), SurfaceKind.WALL)
    sliver = Surface((np.array([corner, corner + [3, 0, 0], corner + [3, 0, 0.01], corner + [0, 0, 0.01]]),),
                     SurfaceKind.WALL)
    broken = replace(tall, lods={"2.2": Solid(solid.surfaces + (flat, sliver))})
    result, report = texture_buildings([broken, *buildings[1:]], cameras, images, TextureConfig(lods=("2.2",)))
    count = len(solid.surfaces)
    assert ("2.2", 0, count) not in result[0].textures and ("2.2", 0, count + 1) not in result[0].textures
    assert ("2.2", 0, 1) in result[0].textures


def test_a_surface_whose_patch_cannot_be_cut_is_reported_and_the_rest_textured(scene, monkeypatch):
    import reconstruction.texturing as texturing

    buildings, cameras, images = scene
    cut = texturing._cut_patch

    def failing_for_the_tall_roof(face, *args):
        if buildings[face.building].id == "A-tall" and face.key == ("2.2", 0, 1):
            raise np.linalg.LinAlgError("singular plane frame")
        return cut(face, *args)

    monkeypatch.setattr(texturing, "_cut_patch", failing_for_the_tall_roof)
    result, report = texture_buildings(buildings, cameras, images, TextureConfig(lods=("2.2",)))
    assert ("2.2", 0, 1) not in result[0].textures and len(result[0].textures) > 0
    assert all(b.textures for b in result[1:])
    assert report.failed == ("A-tall: LoD 2.2, solid 0, surface 1: LinAlgError: singular plane frame",)
    assert report.to_dict()["failed"] == list(report.failed)
    assert report.textured == sum(len(b.textures) for b in result)
