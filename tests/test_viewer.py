"""`twin serve`: what the server serves and refuses, and the CesiumJS viewer driven in headless
Chromium through the real command: tiles load without console errors and clicking a building
shows its id and attributes."""

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

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers import run_node
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


def test_clicking_a_building_in_headless_chromium_shows_its_id_and_attributes(tiles_build, tmp_path):
    model, out = tiles_build
    building = next(b for b in model.buildings if b.id == "B01")
    roof = max(v[2] for v in building.lods["1.3"].vertices())
    anchor = building.footprint.representative_point()
    lon, lat, height = HeightTransform.for_crs(model.crs).geodetic(np.array([[anchor.x, anchor.y, roof]]))[0]

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
        shot = tmp_path / "viewer.png"
        result = run_node("viewer_pick.mjs", url, lon, lat, height, shot, timeout=300)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert result["errors"] == []
    assert result["layers"] == ["buildings", "pointcloud"]
    assert result["title"] == "Building B01"
    attributes = result["attributes"]
    assert attributes["commune"] == "77083"
    assert float(attributes["h_ground"]) == building.attributes["h_ground"]
    assert attributes["status"] == "built"
    assert shot.stat().st_size > 10_000
