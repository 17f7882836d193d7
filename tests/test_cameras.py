"""Camera orientation readers: the project's JSON form and the photogrammetric forms of the
shared imagery (OpenSfM, x y z omega phi kappa, lat lon alt roll pitch yaw), checked by
projecting the shared elevation models into the images."""

from __future__ import annotations

import inspect
import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyproj
import pytest
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import map_coordinates

from twin.errors import InputError
from twin.imagery.camera import FrameCamera, Intrinsics, look_at, rotation_from_rpy
from twin.imagery.images import ImagesOnDemand, check_image_size, read_image
from twin.imagery.readers import (
    load_cameras,
    opensfm_local_cameras,
    read_cameras_json,
    read_interior,
    read_lla_rpy_csv,
    read_opensfm,
    read_opk_csv,
    read_opk_geojson,
    utm_crs_of,
    write_cameras_json,
)

DRONE = "imagery/odm-oblique-drone"
NGI = "imagery/ngi-vertical-aerial"
TABLES = "imagery/orientation-tables"


def _synthetic_cameras(folder):
    crs = pyproj.CRS("EPSG:32651")
    oblique = FrameCamera(
        "oblique",
        Intrinsics(1368, 912, 911.7, 911.7, 681.4, 459.8, k1=-0.264, k2=0.102, k3=-0.026, p1=7.3e-4, p2=2.6e-4),
        np.array([292746.19, 2731093.47, 186.56]),
        look_at(np.array([292746.19, 2731093.47, 186.56]), np.array([292700.0, 2731050.0, 100.0])),
        crs,
        image=str(folder / "images" / "oblique.tif"),
    )
    vertical = FrameCamera("vertical", Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5), np.array([292700.0, 2731000.0, 300.0]), np.diag([1.0, -1.0, -1.0]), crs)
    return [vertical, oblique]


def test_cameras_json_round_trip_is_exact_and_deterministic(tmp_path):
    cameras = _synthetic_cameras(tmp_path)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    write_cameras_json(cameras, first)
    read = read_cameras_json(first)
    assert [camera.name for camera in read] == ["oblique", "vertical"]  # sorted by name
    write_cameras_json(list(reversed(read)), second)
    assert first.read_bytes() == second.read_bytes()
    for original in cameras:
        (copy,) = [camera for camera in read if camera.name == original.name]
        assert copy.intrinsics == original.intrinsics
        assert np.allclose(copy.center, original.center, rtol=0, atol=1e-8)
        assert np.allclose(copy.rotation, original.rotation, rtol=0, atol=1e-14)
        assert copy.crs == original.crs
        assert copy.image == original.image


@pytest.mark.parametrize(
    "document, message",
    [
        ('{"type": "twin-cameras", "version": 1, "cameras": []}', '"crs"'),
        ('{"type": "twin-cameras", "version": 2, "crs": "EPSG:32651", "cameras": []}', "version 2"),
        ('{"type": "twin-cameras", "version": 1, "crs": "EPSG:32651", "cameras": [{"name": "a", "width": 10}]}', "missing height"),
        ('{"type": "twin-cameras", "version": 1, "crs": "not a crs", "cameras": []}', "cannot read the CRS"),
        ("[1, 2", "cannot read it as JSON"),
    ],
)
def test_cameras_json_bad_files_give_clear_errors(tmp_path, document, message):
    path = tmp_path / "cameras.json"
    path.write_text(document)
    with pytest.raises(InputError, match=message) as error:
        read_cameras_json(path)
    assert str(path) in str(error.value)


# --- Shared real data -------------------------------------------------------------------


class ElevationModel:
    """A GeoTIFF elevation grid (pixel-is-area) read with tifffile: its cell centres as world
    points, its CRS from the GeoKeys, and bilinear heights for ray marching."""

    def __init__(self, path):
        tifffile = pytest.importorskip("tifffile")
        with tifffile.TiffFile(path) as tif:
            self.heights = tif.asarray().astype(float)
            keys = tif.geotiff_metadata
        self.cell = np.array(keys["ModelPixelScale"][:2], dtype=float)
        self.origin = np.array(keys["ModelTiepoint"][3:5], dtype=float)  # top-left corner
        if int(keys["ProjectedCSTypeGeoKey"]) != 32767:
            self.crs = pyproj.CRS.from_epsg(int(keys["ProjectedCSTypeGeoKey"]))
        else:  # user-defined transverse Mercator on WGS 84 (the NGI DEM)
            self.crs = pyproj.CRS(
                f"+proj=tmerc +lat_0={keys['ProjNatOriginLatGeoKey']} +lon_0={keys['ProjNatOriginLongGeoKey']}"
                f" +k={keys['ProjScaleAtNatOriginGeoKey']} +x_0={keys['ProjFalseEastingGeoKey']} +y_0={keys['ProjFalseNorthingGeoKey']} +datum=WGS84 +units=m"
            )
        rows, columns = self.heights.shape
        self.xs = self.origin[0] + (np.arange(columns) + 0.5) * self.cell[0]
        self.ys = self.origin[1] - (np.arange(rows) + 0.5) * self.cell[1]
        self._height_at = RegularGridInterpolator((self.ys[::-1], self.xs), self.heights[::-1], bounds_error=False, fill_value=np.nan)

    def points(self) -> np.ndarray:
        x, y = np.meshgrid(self.xs, self.ys)
        points = np.column_stack([x.ravel(), y.ravel(), self.heights.ravel()])
        return points[np.isfinite(points[:, 2])]

    def height(self, xy: np.ndarray) -> np.ndarray:
        return self._height_at(xy[:, ::-1])

    def intersect(self, origins: np.ndarray, directions: np.ndarray, step: float = 0.25) -> np.ndarray:
        """First crossing of each ray with the surface: a march in `step` metres, then bisection.
        NaN rows for rays that leave the grid or meet no data first."""
        top = np.nanmax(self.heights)
        start = (origins[:, 2] - top) / -directions[:, 2]  # where each ray comes down to the highest cell
        hits = np.full((len(origins), 3), np.nan)
        for index, (origin, direction, t) in enumerate(zip(origins, directions, start)):
            below = lambda t: (origin + t * direction)[2] - self.height((origin + t * direction)[None, :2])[0]
            previous, gap = t, below(t)
            while np.isfinite(gap) and gap > 0:
                previous, t = t, t + step
                gap = below(t)
            if not np.isfinite(gap):
                continue
            low, high = previous, t
            for _ in range(60):
                middle = 0.5 * (low + high)
                low, high = (middle, high) if below(middle) > 0 else (low, middle)
            hits[index] = origin + high * direction
        return hits


@pytest.fixture(scope="module")
def drone_files(shared_data):
    return {
        "reconstruction": shared_data / DRONE / "opensfm" / "reconstruction.json",
        "xyz_opk": shared_data / TABLES / "odm_xyz_opk.csv",
        "lla_rpy": shared_data / TABLES / "odm_lla_rpy.csv",
        "images": shared_data / DRONE / "images",
        "dsm": shared_data / DRONE / "odm_dem" / "dsm.tif",
    }


@pytest.fixture(scope="module")
def dsm(drone_files):
    return ElevationModel(drone_files["dsm"])


@pytest.fixture(scope="module")
def drone_cameras(drone_files, dsm):
    """The drone cameras read from their three orientation forms, all in the DSM's CRS."""
    files = drone_files
    return {
        "opensfm": read_opensfm(files["reconstruction"]),
        "xyz_opk": read_opk_csv(files["xyz_opk"], files["reconstruction"], crs=dsm.crs, image_dir=files["images"]),
        "lla_rpy": read_lla_rpy_csv(files["lla_rpy"], files["reconstruction"], crs=dsm.crs, image_dir=files["images"]),
    }


def _visible(camera, points, margin=0.0):
    pixels, depth = camera.project(points)
    return pixels, (depth > 0) & camera.inside(pixels, margin)


def _rotation_angle_deg(a, b):
    return float(np.degrees(np.arccos(np.clip((np.trace(a @ b.T) - 1.0) / 2.0, -1.0, 1.0))))


# --- Drone set: OpenSfM, x y z omega phi kappa, lat lon alt roll pitch yaw ----------------


def test_drone_cameras_read_from_every_form(drone_cameras, dsm):
    for form, cameras in drone_cameras.items():
        assert [c.name for c in cameras] == ["100_0005_0018", "100_0005_0136", "100_0005_0140", "100_0005_0142"], form
        # The table's x y z are in the CRS it is given; OpenSfM's and the lat lon alt table's
        # ellipsoidal heights say so: UTM with an ellipsoidal height axis.
        expected_crs = dsm.crs if form == "xyz_opk" else pyproj.CRS("EPSG:32651").to_3d()
        for camera in cameras:
            assert camera.crs == expected_crs
            assert camera.intrinsics.width == 1368 and camera.intrinsics.height == 912
            assert camera.intrinsics.k1 == pytest.approx(-0.26406291)
            image = read_image(camera.image)
            check_image_size(camera, image, camera.image)


def test_distortion_round_trip_over_the_whole_drone_image(drone_cameras):
    camera = drone_cameras["opensfm"][0]
    width, height = camera.intrinsics.width, camera.intrinsics.height
    u, v = np.meshgrid(np.linspace(-0.5, width - 0.5, 343), np.linspace(-0.5, height - 0.5, 229))
    pixels = np.column_stack([u.ravel(), v.ravel()])
    back, depth = camera.project(camera.center + 150.0 * camera.rays(pixels))
    assert np.all(depth > 0)
    assert np.max(np.linalg.norm(back - pixels, axis=1)) < 0.01
    # The corners really are strongly distorted: their ideal radius is a third larger.
    corner = camera.intrinsics.pixels_to_normalised(np.array([[-0.5, -0.5]]))
    distorted = (np.array([-0.5, -0.5]) - [camera.intrinsics.cx, camera.intrinsics.cy]) / camera.intrinsics.fx
    assert np.linalg.norm(corner) > 1.3 * np.linalg.norm(distorted)


def test_opensfm_reconstruction_of_odm_is_read_in_its_utm_offset_frame(drone_files, drone_cameras):
    """ODM rewrites reconstruction.json in UTM minus a whole-metre offset (reference_lla maps to
    292632, 2731169 in UTM 51N): the shots' topocentric GPS positions converted to UTM meet the
    camera centres within 5 cm that way, and 1.7 to 2.4 m off when the file is taken as topocentric."""
    cameras = drone_cameras["opensfm"]
    assert {c.metadata["opensfm_frame"] for c in cameras} == {"utm-offset"}
    local, reference = opensfm_local_cameras(drone_files["reconstruction"])
    to_utm = pyproj.Transformer.from_pipeline(
        "+proj=pipeline"
        f" +step +inv +proj=topocentric +ellps=WGS84 +lon_0={reference['longitude']} +lat_0={reference['latitude']} +h_0={reference['altitude']}"
        " +step +inv +proj=cart +ellps=WGS84 +step +proj=utm +zone=51 +ellps=WGS84"
    )
    gps = np.array([c.metadata["gps_position"] for c in local])
    gps_utm = np.column_stack(to_utm.transform(gps[:, 0], gps[:, 1], gps[:, 2]))
    centers = np.array([c.center for c in cameras])
    assert np.max(np.linalg.norm(centers[:, :2] - gps_utm[:, :2], axis=1)) < 0.06
    topocentric = np.array([c.center for c in read_opensfm(drone_files["reconstruction"], frame="topocentric")])
    assert np.min(np.linalg.norm(topocentric[:, :2] - gps_utm[:, :2], axis=1)) > 1.5


def test_topocentric_poses_follow_the_grid_convergence_to_a_tenth_of_a_pixel(drone_files, dsm):
    """Taking the reconstruction as OpenSfM-topocentric: the camera carried into UTM (centre by
    pyproj, attitude turned by the local grid convergence, -0.86 degree) projects the DSM where
    the untouched topocentric camera projects the same points converted exactly by PROJ.
    Measured: 0.067 px at most (what is left is the UTM scale factor, 1.00013); keeping the
    topocentric attitude instead would be off by 14.5 px."""
    local, reference = opensfm_local_cameras(drone_files["reconstruction"])
    world = read_opensfm(drone_files["reconstruction"], frame="topocentric")
    to_topocentric = pyproj.Transformer.from_pipeline(
        "+proj=pipeline +step +inv +proj=utm +zone=51 +ellps=WGS84 +step +proj=cart +ellps=WGS84"
        f" +step +proj=topocentric +ellps=WGS84 +lon_0={reference['longitude']} +lat_0={reference['latitude']} +h_0={reference['altitude']}"
    )
    points = dsm.points()
    local_points = np.column_stack(to_topocentric.transform(points[:, 0], points[:, 1], points[:, 2]))
    for topocentric_camera, utm_camera in zip(local, world):
        expected, seen = _visible(topocentric_camera, local_points)
        assert seen.sum() > 40000
        got, _ = utm_camera.project(points[seen])
        assert np.max(np.linalg.norm(got - expected[seen], axis=1)) < 0.1
        unturned = FrameCamera("unturned", utm_camera.intrinsics, utm_camera.center, topocentric_camera.rotation)
        off, _ = unturned.project(points[seen])
        assert np.max(np.linalg.norm(off - expected[seen], axis=1)) > 10.0


def test_opensfm_cameras_into_another_projected_crs(drone_files, drone_cameras, dsm):
    """Read into TWD97 / TM2 (EPSG:3826) rather than UTM: the DSM carried there by pyproj lands
    on the same pixels within 0.2 px (measured 0.116 px: the two grids' scale factors differ
    by 2.3e-4, which a rigid camera cannot follow)."""
    cameras = read_opensfm(drone_files["reconstruction"], crs="EPSG:3826")
    points = dsm.points()
    to_tm2 = pyproj.Transformer.from_crs(dsm.crs, "EPSG:3826", always_xy=True)
    moved = np.column_stack(to_tm2.transform(points[:, 0], points[:, 1], points[:, 2]))
    for utm_camera, camera in zip(drone_cameras["opensfm"], cameras):
        assert camera.crs == pyproj.CRS("EPSG:3826").to_3d()
        expected, seen = _visible(utm_camera, points)
        got, _ = camera.project(moved[seen])
        assert np.max(np.linalg.norm(got - expected[seen], axis=1)) < 0.2


def test_dsm_projects_over_the_drone_images(drone_cameras, dsm):
    """Each image sees a third of the DSM's cells, and they cover nearly all of the image
    (measured 95 to 99.7 % of its 16-pixel blocks)."""
    points = dsm.points()
    for camera in drone_cameras["opensfm"]:
        pixels, seen = _visible(camera, points)
        assert 0.25 < seen.mean() < 0.5
        blocks = np.zeros((912 // 16 + 1, 1368 // 16 + 1), dtype=bool)
        hit = np.round(pixels[seen] / 16).astype(int)
        blocks[hit[:, 1], hit[:, 0]] = True
        assert blocks.mean() > 0.9, camera.name


def test_drone_images_agree_on_the_colour_of_the_dsm(drone_cameras, dsm):
    """Photo-consistency: the grey value each image shows at a DSM point correlates between
    overlapping images (measured 0.83 to 0.90 for the five overlapping pairs); with one camera
    turned 2 degrees about its optical axis it falls (0.83 -> 0.66)."""
    points = dsm.points()
    cameras = {c.name[-4:]: c for c in drone_cameras["opensfm"]}
    grey = {key: cv2.cvtColor(read_image(c.image), cv2.COLOR_RGB2GRAY).astype(float) for key, c in cameras.items()}

    def sample(camera, image):
        pixels, seen = _visible(camera, points, margin=1.0)
        values = np.full(len(points), np.nan)
        values[seen] = map_coordinates(image, [pixels[seen, 1], pixels[seen, 0]], order=1)
        return values

    def correlation(a, b):
        both = np.isfinite(a) & np.isfinite(b)
        return np.corrcoef(a[both], b[both])[0, 1] if both.sum() > 5000 else None

    values = {key: sample(cameras[key], grey[key]) for key in cameras}
    pairs = {(a, b): correlation(values[a], values[b]) for a in values for b in values if a < b}
    overlapping = {pair: value for pair, value in pairs.items() if value is not None}
    assert len(overlapping) == 5  # 0018 and 0140 look at each other's back
    assert min(overlapping.values()) > 0.78
    turn = cv2.Rodrigues(np.radians([0.0, 0.0, 2.0]))[0]
    camera = cameras["0140"]
    turned = FrameCamera(camera.name, camera.intrinsics, camera.center, turn @ camera.rotation)
    assert correlation(values["0136"], sample(turned, grey["0140"])) < 0.72


def test_drone_forms_agree_in_the_images(drone_cameras, dsm):
    """The same DSM points projected with the cameras of the three forms.

    x y z omega phi kappa: the table is the reconstruction rounded to 1 mm and 0.001 degree
    (0.016 px at f = 912 px, plus 0.01 px for 1 mm seen from 80 m): measured 0.016 px at most.
    lat lon alt roll pitch yaw: the GPS positions (measured 1 to 5 cm from the adjusted
    centres) and the gimbal's nominal angles (roll 0, pitch 30), 0.76 to 1.39 degrees from
    the adjusted attitudes, so up to f * tan(1.4 degrees) = 22 px plus the lens's stretch
    towards the edges: measured 10 to 21 px median, 24.5 px at most."""
    points = dsm.points()
    for reference, table, attitude in zip(drone_cameras["opensfm"], drone_cameras["xyz_opk"], drone_cameras["lla_rpy"]):
        expected, seen = _visible(reference, points)
        from_table, _ = table.project(points[seen])
        assert np.max(np.linalg.norm(from_table - expected[seen], axis=1)) < 0.05
        assert np.linalg.norm(attitude.center - reference.center) < 0.1
        assert _rotation_angle_deg(attitude.rotation, reference.rotation) < 1.5
        from_attitude, _ = attitude.project(points[seen])
        distance = np.linalg.norm(from_attitude - expected[seen], axis=1)
        assert np.nanmedian(distance) < 25.0
        assert np.nanmax(distance) < 32.0


def test_roll_pitch_yaw_convention_matches_the_adjusted_attitudes(drone_cameras):
    """Pitch 30 is a view 30 degrees off the nadir towards the yaw heading (a DJI gimbal pitch
    of -60): each adjusted camera looks 28.8 to 30.1 degrees off nadir, towards the table's yaw."""
    table_yaw = {"100_0005_0018": 92.9, "100_0005_0136": -175.8, "100_0005_0140": -90.3, "100_0005_0142": -2.1}
    for camera in drone_cameras["opensfm"]:
        view = camera.viewing_direction
        off_nadir = np.degrees(np.arccos(-view[2]))
        heading = np.degrees(np.arctan2(view[0], view[1]))
        assert off_nadir == pytest.approx(30.0, abs=1.5)
        assert (heading - table_yaw[camera.name] + 180.0) % 360.0 - 180.0 == pytest.approx(0.0, abs=2.5)


def test_pixel_ray_dsm_pixel_round_trip(drone_cameras, dsm):
    camera = drone_cameras["opensfm"][1]
    u, v = np.meshgrid(np.linspace(0, 1367, 12), np.linspace(0, 911, 8))
    pixels = np.column_stack([u.ravel(), v.ravel()])
    directions = camera.rays(pixels)
    hits = dsm.intersect(np.repeat(camera.center[None], len(pixels), axis=0), directions)
    found = np.all(np.isfinite(hits), axis=1)
    assert found.mean() > 0.75  # the top rows look beyond the DSM (measured 85 % of the rays meet it)
    assert np.all(np.abs(hits[found, 2] - dsm.height(hits[found, :2])) < 1e-6)
    back, depth = camera.project(hits[found])
    assert np.all(depth > 0)
    assert np.max(np.linalg.norm(back - pixels[found], axis=1)) < 0.01


# --- NGI vertical aerial set ------------------------------------------------------------


@pytest.fixture(scope="module")
def ngi_cameras(shared_data):
    interior = shared_data / TABLES / "ngi_int_param.yaml"
    return read_opk_csv(shared_data / TABLES / "ngi_xyz_opk.csv", interior, image_dir=shared_data / NGI)


def test_ngi_dem_projects_inside_the_vertical_images(shared_data, ngi_cameras):
    dem = ElevationModel(shared_data / NGI / "dem.tif")
    assert dem.crs.equals(ngi_cameras[0].crs)
    assert ngi_cameras[0].intrinsics.fx == pytest.approx(120.0 * 640 / 92.16)
    points = dem.points()
    for camera in ngi_cameras:
        image = read_image(camera.image)
        check_image_size(camera, image, camera.image)
        assert camera.viewing_direction[2] < -0.999  # vertical frames
        pixels, seen = _visible(camera, points)
        blocks = np.zeros((1152 // 16 + 1, 640 // 16 + 1), dtype=bool)
        hit = np.round(pixels[seen] / 16).astype(int)
        blocks[hit[:, 1], hit[:, 0]] = True
        assert blocks.mean() > 0.95, camera.name


def test_ngi_forms_agree(shared_data, ngi_cameras):
    """The CSV, orthority's GeoJSON (radians, full precision) and the legacy simple-ortho pair
    (camera_pos_ori.txt without header + config.yaml) give the same cameras to rounding."""
    interior = shared_data / TABLES / "ngi_int_param.yaml"
    prj = (shared_data / TABLES / "ngi_xyz_opk.prj").read_text()
    geojson = load_cameras(shared_data / TABLES / "ngi_ext_param.geojson", interior, image_dir=shared_data / NGI)
    legacy = load_cameras(shared_data / NGI / "camera_pos_ori.txt", shared_data / NGI / "config.yaml", crs=prj)
    dem = ElevationModel(shared_data / NGI / "dem.tif")
    points = dem.points()
    for camera, *others in zip(ngi_cameras, geojson, legacy):
        assert camera.image == others[0].image == others[1].image
        expected, seen = _visible(camera, points)
        for other in others:
            assert other.name == camera.name and other.intrinsics == camera.intrinsics
            got, _ = other.project(points[seen])
            assert np.max(np.linalg.norm(got - expected[seen], axis=1)) < 0.05  # measured 0.013 px


def test_cameras_json_keeps_a_crs_without_epsg_code(ngi_cameras, tmp_path):
    write_cameras_json(ngi_cameras, tmp_path / "ngi.json")
    assert '"crs": "PROJCRS[' in (tmp_path / "ngi.json").read_text()
    copies = read_cameras_json(tmp_path / "ngi.json")
    for camera, copy in zip(ngi_cameras, copies):
        assert copy.crs.equals(camera.crs) and copy.image == camera.image
        assert np.allclose(copy.rotation, camera.rotation, rtol=0, atol=1e-14)


# --- Dispatch and bad input -------------------------------------------------------------


def test_load_cameras_picks_the_reader_by_content(drone_files, tmp_path):
    reconstruction, images = drone_files["reconstruction"], drone_files["images"]
    by_form = {
        "opensfm": load_cameras(reconstruction),
        "xyz_opk": load_cameras(drone_files["xyz_opk"], reconstruction, crs="EPSG:32651", image_dir=images),
        "lla_rpy": load_cameras(drone_files["lla_rpy"], reconstruction, crs="EPSG:32651", image_dir=images),
    }
    direct = {
        "opensfm": read_opensfm(reconstruction),
        "xyz_opk": read_opk_csv(drone_files["xyz_opk"], reconstruction, crs="EPSG:32651", image_dir=images),
        "lla_rpy": read_lla_rpy_csv(drone_files["lla_rpy"], reconstruction, crs="EPSG:32651", image_dir=images),
    }
    write_cameras_json(by_form["opensfm"], tmp_path / "cameras.json")
    # The camera JSON declares its CRS: a `crs` given to load_cameras leaves it alone.
    by_form["json"] = load_cameras(tmp_path / "cameras.json", crs="EPSG:2154")
    direct["json"] = read_cameras_json(tmp_path / "cameras.json")
    for form, cameras in by_form.items():
        assert len(cameras) == len(direct[form]) == 4, form
        for camera, expected in zip(cameras, direct[form]):
            assert camera.name == expected.name and camera.crs == expected.crs and camera.image == expected.image, form
            assert np.array_equal(camera.center, expected.center) and np.array_equal(camera.rotation, expected.rotation), form
            assert camera.metadata == expected.metadata, form
    # What tells the readers apart: OpenSfM notes its frame, the lat lon alt table's heights
    # are ellipsoidal (a 3D CRS), the x y z table's are in the CRS it is given.
    assert {c.metadata.get("opensfm_frame") for c in by_form["opensfm"]} == {"utm-offset"}
    assert all("opensfm_frame" not in c.metadata for form in ("xyz_opk", "lla_rpy", "json") for c in by_form[form])
    assert by_form["lla_rpy"][0].crs == pyproj.CRS("EPSG:32651").to_3d()
    assert by_form["xyz_opk"][0].crs == pyproj.CRS("EPSG:32651")
    assert by_form["json"][0].crs == by_form["opensfm"][0].crs
    assert by_form["json"][0].image == by_form["opensfm"][0].image
    assert np.allclose(by_form["json"][0].center, by_form["opensfm"][0].center, rtol=0, atol=1e-8)
    interior = read_interior(reconstruction)
    assert list(interior) == ["dji fc6310r 5472 3648 brown 0.6666"]


def _copy(source, folder, name=None):
    target = folder / (name or source.name)
    shutil.copyfile(source, target)
    return target


def test_orientation_tables_bad_input_gives_clear_errors(shared_data, drone_files, tmp_path):
    reconstruction = drone_files["reconstruction"]
    table = _copy(drone_files["xyz_opk"], tmp_path)
    with pytest.raises(InputError, match=r"no CRS.*odm_xyz_opk\.prj"):
        read_opk_csv(table, reconstruction)

    missing = tmp_path / "missing.csv"
    missing.write_text("filename,x,y,z,omega,phi\nimage,1,2,3,0,0\n")
    with pytest.raises(InputError, match=r"missing.csv: missing column\(s\) kappa"):
        load_cameras(missing, reconstruction, crs="EPSG:32651")

    unknown = tmp_path / "unknown.csv"
    unknown.write_text(drone_files["xyz_opk"].read_text().replace("'dji fc6310r 5472 3648 brown 0.6666'", "'other camera'", 1))
    with pytest.raises(InputError, match=r"unknown.csv: line 2: unknown camera 'other camera'.*dji fc6310r"):
        read_opk_csv(unknown, reconstruction, crs="EPSG:32651")

    not_a_number = tmp_path / "nan.csv"
    not_a_number.write_text("filename,x,y,z,omega,phi,kappa\na,1,2,3,0,0,0\nb,1,two,3,0,0,0\n")
    with pytest.raises(InputError, match=r"nan.csv: line 3: .*must be numbers"):
        read_opk_csv(not_a_number, shared_data / TABLES / "ngi_int_param.yaml", crs="EPSG:32651")

    broken_yaml = tmp_path / "interior.yaml"
    broken_yaml.write_text("camera: [unclosed\n")
    with pytest.raises(InputError, match=r"interior.yaml: cannot read it as YAML"):
        read_opk_csv(not_a_number, broken_yaml, crs="EPSG:32651")

    fisheye = tmp_path / "fisheye.yaml"
    fisheye.write_text("cam:\n  type: fisheye\n  im_size: [100, 100]\n  focal_len: 0.5\n")
    with pytest.raises(InputError, match=r"fisheye.yaml: camera 'cam': type 'fisheye' is not supported"):
        read_interior(fisheye)

    with pytest.raises(InputError, match=r"geographic|not projected"):
        read_opk_csv(table, reconstruction, crs="EPSG:4326")

    with pytest.raises(InputError, match=r"interior parameters"):
        load_cameras(shared_data / TABLES / "ngi_int_param.yaml")

    with pytest.raises(InputError, match=r"no interior orientation"):
        read_lla_rpy_csv(drone_files["lla_rpy"], None)


# --- Images -----------------------------------------------------------------------------


def test_read_image_gives_rgb_bytes(tmp_path):
    colour = np.zeros((4, 6, 3), dtype=np.uint8)
    colour[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "red.png"), colour[..., ::-1])  # OpenCV writes BGR
    assert np.array_equal(read_image(tmp_path / "red.png"), colour)

    rgba = np.dstack([colour[..., ::-1], np.full((4, 6), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "red_alpha.png"), rgba)
    assert np.array_equal(read_image(tmp_path / "red_alpha.png"), colour)

    deep = np.tile(np.array([0, 1000, 4000], dtype=np.uint16), (3, 1))
    cv2.imwrite(str(tmp_path / "grey16.png"), deep)
    grey = read_image(tmp_path / "grey16.png")
    assert grey.shape == (3, 3, 3) and grey.dtype == np.uint8
    assert grey[0, :, 0].tolist() == [0, 62, 249] and np.all(grey[..., 0] == grey[..., 2])  # 12 bits: x 255/4095

    (tmp_path / "text.tif").write_text("not an image")
    with pytest.raises(InputError, match="text.tif: cannot read it as an image"):
        read_image(tmp_path / "text.tif")
    with pytest.raises(InputError, match="absent.tif: image not found"):
        read_image(tmp_path / "absent.tif")


def test_check_image_size_names_both_sizes(tmp_path):
    camera = _synthetic_cameras(tmp_path)[0]
    with pytest.raises(InputError, match=r"is 6 x 4 pixels but camera 'vertical' is calibrated for 640 x 480"):
        check_image_size(camera, np.zeros((4, 6, 3), np.uint8), "small.png")


def test_images_on_demand_checks_every_file_up_front_and_reads_each_when_asked(tmp_path, monkeypatch):
    import twin.imagery.images as images_module

    vertical, oblique = _synthetic_cameras(tmp_path)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "oblique.tif"), np.zeros((912, 1368, 3), np.uint8))
    with pytest.raises(InputError, match="cameras.json: camera 'vertical' names no image"):
        ImagesOnDemand([vertical, oblique], tmp_path / "cameras.json")
    absent = replace(vertical, image=str(tmp_path / "images" / "vertical.tif"))
    with pytest.raises(InputError, match="vertical.tif: image not found for camera 'vertical'; check the image paths in"):
        ImagesOnDemand([oblique, absent], tmp_path / "cameras.json")
    with pytest.raises(InputError, match="check the images folder"):
        ImagesOnDemand([oblique, absent], tmp_path / "cameras.json", images_dir=tmp_path / "images")
    (tmp_path / "images" / "vertical.xyz").write_text("not an image")
    with pytest.raises(InputError, match="vertical.xyz: the image of camera 'vertical' is not in a format OpenCV reads"):
        ImagesOnDemand([replace(vertical, image=str(tmp_path / "images" / "vertical.xyz"))], tmp_path / "cameras.json")

    # A wrong-sized image is found when read; reads are cached for the next `keep` asks.
    cv2.imwrite(str(tmp_path / "images" / "vertical.tif"), np.zeros((10, 10, 3), np.uint8))
    reads = []
    monkeypatch.setattr(images_module, "read_image", lambda path: reads.append(Path(path).name) or cv2.imread(str(path)))
    images = ImagesOnDemand([oblique, absent], tmp_path / "elsewhere" / "cameras.json", images_dir=tmp_path / "images", keep=1)
    assert sorted(images) == ["oblique", "vertical"] and len(images) == 2
    assert images["oblique"].shape == (912, 1368, 3)
    images["oblique"]
    assert reads == ["oblique.tif"]
    with pytest.raises(InputError, match="vertical.tif: the image is 10 x 10 pixels but camera 'vertical' is calibrated for 640 x 480"):
        images["vertical"]


def test_read_image_bit_depth_snaps_to_standard_depths(tmp_path):
    """Two frames of one 12-bit sensor in 16-bit files: a dark one (all below 1024) and a bright
    one. The guess snaps to standard depths (10 and 12 bits here, not 9 and 12), and `bits`
    reads both on the sensor's scale."""
    dark = np.full((2, 2), 300, dtype=np.uint16)
    bright = np.array([[300, 4000], [0, 0]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "dark.png"), dark)
    cv2.imwrite(str(tmp_path / "bright.png"), bright)
    assert read_image(tmp_path / "dark.png")[0, 0, 0] == 75  # 300 * 255 / 1023
    assert read_image(tmp_path / "bright.png")[0, 0, 0] == 19  # 300 * 255 / 4095
    assert read_image(tmp_path / "dark.png", bits=12)[0, 0, 0] == read_image(tmp_path / "bright.png", bits=12)[0, 0, 0] == 19
    assert read_image(tmp_path / "bright.png", bits=10)[0, 1, 0] == 255  # above 10 bits: clipped


# --- Camera model -----------------------------------------------------------------------


def test_intrinsics_refuse_non_finite_parameters():
    with pytest.raises(ValueError, match="fx=nan"):
        Intrinsics(640, 480, float("nan"), 500.0, 319.5, 239.5)
    with pytest.raises(ValueError, match="k1=inf"):
        Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5, k1=float("inf"))


def test_undistort_gives_nan_beyond_the_fold():
    """r (1 - 0.3 r^2) grows up to r = 1.054 (distorted radius 0.703) and folds back after:
    a distorted radius of 0.8 has no ideal point, 0.5 has one."""
    intrinsics = Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5, k1=-0.3)
    assert "iterations" not in inspect.signature(intrinsics.undistort).parameters
    ideal = intrinsics.undistort(np.array([[0.5, 0.0], [0.8, 0.0], [0.0, -0.6], [0.0, 0.9], [0.7, 0.0]]))
    assert np.all(np.isfinite(ideal[[0, 2]])) and np.all(np.isnan(ideal[[1, 3]]))
    assert np.allclose(intrinsics.distort(ideal[[0, 2]]), [[0.5, 0.0], [0.0, -0.6]], rtol=0, atol=1e-12)
    assert ideal[4] == pytest.approx([1.0, 0.0], abs=1e-9)  # 1 (1 - 0.3) = 0.7: just short of the fold
    camera = FrameCamera("fold", intrinsics, np.zeros(3), np.eye(3))
    directions = camera.rays(np.array([[319.5 + 0.8 * 500.0, 239.5]]))
    assert np.isnan(directions).all()


def test_project_gives_nan_behind_the_camera_and_beyond_the_fold():
    intrinsics = Intrinsics(640, 480, 500.0, 500.0, 319.5, 239.5, k1=-0.3)
    camera = FrameCamera("down", intrinsics, np.array([0.0, 0.0, 100.0]), np.diag([1.0, -1.0, -1.0]))
    # In front on the axis; behind (above the camera); in front but 2 x the depth off-axis (r = 2 > 1.054).
    pixels, depth = camera.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 150.0], [200.0, 0.0, 0.0]]))
    assert np.allclose(pixels[0], [319.5, 239.5]) and depth[0] == pytest.approx(100.0)
    assert np.isnan(pixels[1]).all() and depth[1] < 0
    assert np.isnan(pixels[2]).all() and depth[2] > 0
    # Without the fold check r = 2 would land back inside the image: 2 (1 - 0.3 * 4) = -0.4.
    assert np.abs(intrinsics.distort(np.array([[2.0, 0.0]]))[0, 0]) < 0.5


def test_distortion_matches_opencv_project_points():
    """Brown distortion with all five coefficients, tangential ones included, is OpenCV's."""
    intrinsics = Intrinsics(1368, 912, 911.7, 905.3, 681.4, 459.8, k1=-0.264, k2=0.102, k3=-0.026, p1=3.1e-3, p2=-2.4e-3)
    center = np.array([10.0, -5.0, 80.0])
    camera = FrameCamera("c", intrinsics, center, look_at(center, np.array([30.0, 20.0, 0.0])))
    rng = np.random.default_rng(7)
    points = np.column_stack([rng.uniform(-20, 80, 500), rng.uniform(-30, 70, 500), rng.uniform(0, 20, 500)])
    pixels, depth = camera.project(points)
    kept = (depth > 0) & np.isfinite(pixels).all(axis=1)
    assert kept.sum() > 400
    rvec = cv2.Rodrigues(camera.rotation)[0]
    tvec = -camera.rotation @ center
    expected = cv2.projectPoints(points[kept], rvec, tvec, intrinsics.matrix, intrinsics.distortion)[0].reshape(-1, 2)
    assert np.max(np.linalg.norm(pixels[kept] - expected, axis=1)) < 1e-6


def test_roll_pitch_yaw_axes():
    """Heading north (yaw 0): a positive roll (right side down) swings the view to the west, the
    left of the heading; pitch 30 with yaw 90 looks 30 degrees off nadir towards the east."""
    view = rotation_from_rpy(10.0, 0.0, 0.0)[2]
    assert view[0] < -0.17 and abs(view[1]) < 1e-12
    view = rotation_from_rpy(0.0, 30.0, 90.0)[2]
    assert view == pytest.approx([0.5, 0.0, -np.sqrt(3.0) / 2.0], abs=1e-12)


def test_utm_zone_of_any_longitude():
    assert utm_crs_of(200.0, 10.0) == utm_crs_of(-160.0, 10.0) == pyproj.CRS("EPSG:32604")
    assert utm_crs_of(2.35, -48.85) == pyproj.CRS("EPSG:32731")
    assert utm_crs_of(180.0, 1.0) == pyproj.CRS("EPSG:32601")


# --- Heights: ellipsoidal in, converted with the geoid grid or said to be ellipsoidal ----

CONTROL_POINT = (652470.0, 6861960.0, 35.0)  # Lambert-93 + NGF-IGN69, near Notre-Dame de Paris
CONTROL_HEIGHT = 78.80  # its WGS84 ellipsoidal height with IGN's geoid grid
LAMBERT93_NGF = "EPSG:2154+5720"


def _control_lon_lat():
    return pyproj.Transformer.from_crs("EPSG:2154", "EPSG:4326", always_xy=True).transform(*CONTROL_POINT[:2])


def _down_looking_reconstruction(path, reference_altitude, center):
    """A one-shot OpenSfM reconstruction at the control point, looking straight down."""
    longitude, latitude = _control_lon_lat()
    rotation = np.diag([1.0, -1.0, -1.0])
    document = [
        {
            "cameras": {"cam": {"projection_type": "perspective", "width": 100, "height": 80, "focal": 1.0, "k1": 0.0, "k2": 0.0}},
            "shots": {"a.jpg": {"camera": "cam", "rotation": [np.pi, 0.0, 0.0], "translation": (-rotation @ np.asarray(center)).tolist()}},
            "reference_lla": {"latitude": latitude, "longitude": longitude, "altitude": reference_altitude},
        }
    ]
    path.write_text(json.dumps(document))
    return path


def _lla_table(path):
    longitude, latitude = _control_lon_lat()
    path.write_text(f"filename,latitude,longitude,altitude,roll,pitch,yaw\na.jpg,{latitude!r},{longitude!r},{CONTROL_HEIGHT},0,0,0\n")
    return path


PLAIN = Intrinsics(100, 80, 100.0, 100.0, 49.5, 39.5)


@pytest.mark.parametrize("form", ["topocentric", "utm-offset", "lla"])
def test_ellipsoidal_heights_become_ngf_altitudes_with_the_geoid_grid(proj_data, tmp_path, form):
    """At the control point the ellipsoidal height 78.80 m is the NGF-IGN69 altitude 35.0 m
    (RAF20): every form holding ellipsoidal heights gives 35.0 in Lambert-93 + NGF-IGN69."""
    if form == "lla":
        path = _lla_table(tmp_path / "lla.csv")
        read = lambda crs: load_cameras(path, PLAIN, crs=crs)  # noqa: E731
    else:
        # Topocentric: the shot at the origin, reference_lla at 78.80 m. UTM-offset: z is the height.
        altitude, center = (CONTROL_HEIGHT, [0.0, 0.0, 0.0]) if form == "topocentric" else (0.0, [0.0, 0.0, CONTROL_HEIGHT])
        path = _down_looking_reconstruction(tmp_path / "reconstruction.json", altitude, center)
        read = lambda crs: read_opensfm(path, crs=crs, frame=form)  # noqa: E731
    (camera,) = read(LAMBERT93_NGF)
    assert camera.crs == pyproj.CRS(LAMBERT93_NGF)
    assert camera.center == pytest.approx(CONTROL_POINT, abs=0.05)
    assert camera.viewing_direction == pytest.approx([0.0, 0.0, -1.0], abs=1e-4)
    (ellipsoidal,) = read("EPSG:2154")
    assert ellipsoidal.crs == pyproj.CRS("EPSG:2154").to_3d()
    assert ellipsoidal.center == pytest.approx([*CONTROL_POINT[:2], CONTROL_HEIGHT], abs=0.01)
    if form != "lla":
        (also,) = load_cameras(path, crs=LAMBERT93_NGF)
        assert also.center[2] == pytest.approx(CONTROL_POINT[2], abs=0.05)


def test_heights_without_their_geoid_grid_are_refused(drone_files, tmp_path):
    """UTM 51N + EGM96 heights need us_nga_egm96_15.tif; PROJ would otherwise fall back to a
    "ballpark" transformation keeping the ellipsoidal heights under the EGM96 label."""
    from pyproj.transformer import TransformerGroup

    target = "EPSG:32651+5773"
    with warnings.catch_warnings():  # pyproj warns that the best transformation is unavailable
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup("EPSG:4979", target, always_xy=True)
    if group.best_available:
        pytest.skip("the EGM96 grid is installed here")
    reconstruction = drone_files["reconstruction"]
    readers = [
        lambda: read_opensfm(reconstruction, crs=target),
        lambda: read_opensfm(reconstruction, crs=target, frame="topocentric"),
        lambda: load_cameras(reconstruction, crs=target),
        lambda: load_cameras(drone_files["lla_rpy"], reconstruction, crs=target, image_dir=drone_files["images"]),
    ]
    for read in readers:
        with pytest.raises(InputError, match=r"EGM96 height needs the geoid grid us_nga_egm96_15\.tif.*projsync --file us_nga_egm96_15\.tif.*--proj-data"):
            read()


# --- Bad input --------------------------------------------------------------------------


def test_broken_documents_give_input_errors(drone_files, tmp_path):
    document = json.loads(drone_files["reconstruction"].read_text())
    cases = {
        "cameras_list.json": [{**document[0], "cameras": list(document[0]["cameras"].values())}],
        "shots_list.json": [{**document[0], "shots": list(document[0]["shots"].values())}],
        "lla_text.json": [{**document[0], "reference_lla": {"latitude": "north", "longitude": 120.9, "altitude": 0}}],
    }
    messages = {"cameras_list.json": '"cameras" must map', "shots_list.json": '"shots" must map', "lla_text.json": "reference_lla.*must be numbers"}
    for name, content in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(InputError, match=messages[name]) as error:
            load_cameras(tmp_path / name)
        assert name in str(error.value)

    table = _copy(drone_files["xyz_opk"], tmp_path)
    table.with_suffix(".prj").write_bytes('PROJCS["Lambert-93 \xe9"]'.encode("latin-1"))
    with pytest.raises(InputError, match=r"odm_xyz_opk\.prj: cannot read it as UTF-8"):
        read_opk_csv(table, drone_files["reconstruction"])

    geojson = tmp_path / "exterior.geojson"
    geojson.write_text("[1, 2, 3]")
    with pytest.raises(InputError, match=r"exterior\.geojson: not a GeoJSON FeatureCollection"):
        read_opk_geojson(geojson, PLAIN, crs="EPSG:32651")


def test_an_empty_camera_set_is_refused(drone_files, tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text("filename,x,y,z,omega,phi,kappa\n")
    document = json.loads(drone_files["reconstruction"].read_text())
    no_shots = tmp_path / "reconstruction.json"
    no_shots.write_text(json.dumps([{**document[0], "shots": {}}]))
    for path, interior in ((header_only, PLAIN), (no_shots, None)):
        with pytest.raises(InputError, match=f"{path.name}: holds no cameras; give one orientation per image"):
            load_cameras(path, interior, crs="EPSG:32651")


def test_tables_without_header_keep_their_camera_column_and_pix4d_headers_are_read(tmp_path):
    wide, narrow = Intrinsics(100, 80, 50.0, 50.0, 49.5, 39.5), Intrinsics(100, 80, 200.0, 200.0, 49.5, 39.5)
    legacy = tmp_path / "legacy.txt"
    legacy.write_text("a 1 2 3 0 0 0 wide\nb 4 5 6 0 0 0 narrow\n")
    cameras = load_cameras(legacy, {"wide": wide, "narrow": narrow}, crs="EPSG:32651")
    assert [(c.name, c.intrinsics) for c in cameras] == [("a", wide), ("b", narrow)]

    pix4d = tmp_path / "pix4d.txt"
    pix4d.write_text("imageName X Y Z Omega Phi Kappa\nIMG_1.JPG 652470.0 6861960.0 135.0 1.5 -2.0 90.0\n")
    (camera,) = load_cameras(pix4d, wide, crs="EPSG:2154")
    assert camera.name == "IMG_1" and camera.center.tolist() == [652470.0, 6861960.0, 135.0]
    assert camera.image == str(tmp_path / "IMG_1.JPG")


def test_image_names_are_matched_literally_and_camera_json_takes_an_image_dir(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "img[1].tif").write_bytes(b"")
    (images / "img1.jpg").write_bytes(b"")
    table = tmp_path / "table.csv"
    table.write_text("filename,x,y,z,omega,phi,kappa\nimg[1],1,2,3,0,0,0\n")
    (camera,) = read_opk_csv(table, PLAIN, crs="EPSG:32651", image_dir=images)
    assert camera.image == str(images / "img[1].tif")

    write_cameras_json(_synthetic_cameras(tmp_path), tmp_path / "cameras.json")
    moved = read_cameras_json(tmp_path / "cameras.json", image_dir=images)
    assert [c.image for c in moved] == [str(images / "oblique.tif"), None]
    assert read_cameras_json(tmp_path / "cameras.json")[0].image == str(tmp_path / "images" / "oblique.tif")


def test_into_crs_carries_only_the_forms_that_convert(shared_data):
    """A caller wanting one CRS (twin build --images) passes `into_crs`: OpenSfM cameras are
    carried into it; a table keeps its own .prj's CRS rather than being relabelled."""
    folder = shared_data / "imagery"
    taiwan = pyproj.CRS("EPSG:3826")
    odm = load_cameras(folder / "odm-oblique-drone/opensfm/reconstruction.json", crs="EPSG:32651", into_crs=taiwan)
    assert all(c.crs.to_2d().equals(taiwan) for c in odm)
    table = load_cameras(folder / "orientation-tables/ngi_xyz_opk.csv",
                         interior=folder / "orientation-tables/ngi_int_param.yaml", into_crs=taiwan)
    own = pyproj.CRS((folder / "orientation-tables/ngi_xyz_opk.prj").read_text())
    assert all(c.crs.equals(own) for c in table)
