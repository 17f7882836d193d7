"""Camera orientation readers: the project's JSON form and the photogrammetric forms of the
shared imagery (OpenSfM, x y z omega phi kappa, lat lon alt roll pitch yaw), checked by
projecting the shared elevation models into the images."""

from __future__ import annotations

import numpy as np
import pyproj
import pytest

from twin.errors import InputError
from twin.imagery.camera import FrameCamera, Intrinsics, look_at
from twin.imagery.readers import read_cameras_json, write_cameras_json


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
