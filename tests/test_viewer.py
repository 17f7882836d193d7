"""`twin serve`: what the server serves and refuses, and the CesiumJS viewer driven in headless
Chromium through the real command: tiles load without console errors and clicking a building
shows its id and attributes; textured tiles show their textures."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from exporters.tiles3d import write_3dtiles
from tests.conftest import ROOT
from tests.helpers import run_node
from tests.test_tiles_textures import textured_model
from twin.config import BuildConfig, TilesConfig
from twin.heights import HeightTransform
from twin.serve import ViewerServer


@pytest.fixture(scope="module")
def server(tiles_build, tmp_path_factory):
    """A server of a copy of the sample's tiles, beside a private file and with a link pointing out."""
    _, built = tiles_build
    folder = tmp_path_factory.mktemp("served")
    out = folder / "out"
    shutil.copytree(built, out)
    (folder / "outside-secret.txt").write_text("private")
    (out / "tiles" / "escape").symlink_to(folder)
    viewer = ViewerServer(out, port=0)
    viewer.serve_in_background()
    yield viewer
    viewer.shutdown()
    viewer.server_close()


def get(server, path: str) -> tuple[int, bytes, str]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body, response.getheader("Content-Type") or ""


def test_serves_the_viewer_cesium_layers_and_the_output_folder(server):
    assert server.server_address[0] == "127.0.0.1"
    status, body, kind = get(server, "/")
    assert status == 200 and b"/cesium/Cesium.js" in body and kind.startswith("text/html")
    assert get(server, "/cesium/Cesium.js")[0] == 200
    assert get(server, "/viewer/viewer.js")[0] == 200
    status, body, _ = get(server, "/layers.json")
    assert [layer["url"] for layer in json.loads(body)] == ["/data/tiles/tileset.json", "/data/pointcloud/tileset.json"]
    status, body, kind = get(server, "/data/tiles/tileset.json")
    assert status == 200 and kind == "application/json" and json.loads(body)["asset"]["version"] == "1.1"
    glb = next(p for p in sorted((server.roots["data"] / "tiles/77083/content").iterdir()))
    status, body, kind = get(server, f"/data/tiles/77083/content/{glb.name}")
    assert status == 200 and kind == "model/gltf-binary" and body[:4] == b"glTF"


@pytest.mark.parametrize("path", [
    "/data/../outside-secret.txt",
    "/data/%2e%2e/outside-secret.txt",
    "/data/tiles/%2E%2E/%2E%2E/outside-secret.txt",
    "/data/tiles/escape/outside-secret.txt",  # a symbolic link out of the folder
    "/cesium/../../../../etc/passwd",
    "/viewer/../serve.py",
    "/data/tiles/",  # no directory listing
    "/data/",
    "/data",
    "/cesium/",
    "/etc/passwd",
    "/data/tiles\\..\\..\\outside-secret.txt",
])
def test_refuses_anything_outside_its_folders_and_lists_no_directory(server, path):
    status, body, _ = get(server, path)
    assert status == 404, path
    assert b"private" not in body and b"root:" not in body


def test_serve_without_tiles_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "twin", "serve", tmp_path, "--no-open"], capture_output=True, text=True, cwd=ROOT
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "--format 3dtiles" in lines[0]


def roof_point(model, building_id: str, lod: str = "1.3") -> tuple[float, float, float]:
    """Longitude, latitude and ellipsoidal height of a point on a building's roof."""
    building = next(b for b in model.buildings if b.id == building_id)
    roof = max(v[2] for solid in building.solids(lod) for v in solid.vertices())
    anchor = building.footprint.representative_point()
    return tuple(HeightTransform.for_crs(model.crs).geodetic(np.array([[anchor.x, anchor.y, roof]]))[0])


def pick_in_viewer(out, point, screenshot) -> dict:
    """Runs `twin serve out` and clicks, in headless Chromium, on `point` seen from above."""
    command = [sys.executable, "-m", "twin", "serve", out, "--port", "0", "--no-open"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            url = match.group(1) if match else None
        assert url, "twin serve did not start"
        return run_node("viewer_pick.mjs", url, *point, screenshot, timeout=300)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def test_clicking_a_building_in_headless_chromium_shows_its_id_and_attributes(tiles_build, tmp_path):
    model, out = tiles_build
    building = next(b for b in model.buildings if b.id == "B01")
    shot = tmp_path / "viewer.png"
    result = pick_in_viewer(out, roof_point(model, "B01"), shot)
    assert result["errors"] == []
    assert result["layers"] == ["buildings", "pointcloud"]
    assert result["title"] == "Building B01"
    attributes = result["attributes"]
    assert attributes["commune"] == "77083"
    assert float(attributes["h_ground"]) == building.attributes["h_ground"]
    assert attributes["status"] == "built"
    assert shot.stat().st_size > 10_000


def test_textured_tiles_render_their_textures_and_stay_pickable(tiles_build, tmp_path):
    """Textured buildings (synthetic magenta gradients, drawn unlit) seen from above: the texture
    fills much of the view, and clicking a textured roof still finds its building."""
    model, _ = tiles_build
    textured = textured_model(model)
    write_3dtiles(textured, tmp_path / "out", BuildConfig(tiles=TilesConfig(compression="meshopt")))
    building = next(b for b in textured.buildings if b.textures)
    shot = tmp_path / "textured.png"
    result = pick_in_viewer(tmp_path / "out", roof_point(textured, building.id, "2.2"), shot)
    assert result["errors"] == []
    assert result["layers"] == ["buildings"]
    assert result["title"] == f"Building {building.id}"
    red, green, blue = np.moveaxis(cv2.imread(str(shot))[..., ::-1].astype(int), -1, 0)
    magenta = (red - green > 60) & (blue - green > 60)  # no globe, sky or plain material has this colour
    assert magenta.mean() > 0.05, magenta.mean()
