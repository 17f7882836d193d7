"""`twin serve OUT`: a local web server for the CesiumJS viewer of an output folder.

It serves exactly three things, and nothing else (no directory listing anywhere):
- `/` and `/viewer/...`: the viewer page (twin/viewer);
- `/cesium/...`: the CesiumJS build of the npm package `cesium` that setup.sh installs
  (node_modules/cesium/Build/Cesium, or $TWIN_CESIUM_DIR), so that nothing comes from a CDN;
- `/data/...`: the files of the output folder, and `/layers.json`, the 3D Tiles layers found in it.
Paths are resolved and must stay inside their folder, so `..`, encoded or not, and symbolic
links pointing outside are refused. It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import mimetypes
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from twin.errors import InputError, TwinError

VIEWER_DIR = Path(__file__).resolve().parent / "viewer"
CESIUM_ENV = "TWIN_CESIUM_DIR"
LAYERS = (  # (name, tileset path in the output folder, kind)
    ("Buildings", "tiles/tileset.json", "buildings"),
    ("Point cloud", "pointcloud/tileset.json", "pointcloud"),
)
CONTENT_TYPES = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".json": "application/json",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".ktx2": "image/ktx2",
    ".subtree": "application/octet-stream",
}


def cesium_dir() -> Path:
    """The CesiumJS build to serve: $TWIN_CESIUM_DIR, or the npm package installed beside twin."""
    configured = os.environ.get(CESIUM_ENV)
    candidate = Path(configured) if configured else Path(__file__).resolve().parents[1] / "node_modules/cesium/Build/Cesium"
    if not (candidate / "Cesium.js").is_file():
        raise TwinError(
            f"CesiumJS is not installed at {candidate}; run ./setup.sh (it runs `npm ci`), "
            f"or point {CESIUM_ENV} to the Build/Cesium folder of the npm package `cesium`"
        )
    return candidate


def layers(out_dir: Path) -> list[dict[str, str]]:
    return [
        {"name": name, "url": f"/data/{path}", "kind": kind}
        for name, path, kind in LAYERS
        if (out_dir / path).is_file()
    ]


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, out_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
        out_dir = Path(out_dir)
        if not out_dir.is_dir():
            raise InputError(f"{out_dir}: no such folder; give the --out folder of a twin build")
        found = layers(out_dir)
        if not found:
            raise InputError(
                f"{out_dir} holds no 3D Tiles (tiles/tileset.json or pointcloud/tileset.json); "
                "build them with --format 3dtiles (and --format pointcloud-tiles)"
            )
        self.roots = {"data": out_dir.resolve(), "cesium": cesium_dir().resolve(), "viewer": VIEWER_DIR}
        self.layer_list = found
        try:
            super().__init__((host, port), _Handler)
        except OSError as error:
            raise InputError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "twin"

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self._respond(include_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(include_body=False)

    def log_message(self, format: str, *args) -> None:  # requests are not logged: the terminal stays quiet
        return

    def _respond(self, include_body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path in ("/", "/index.html"):
            return self._send_file(VIEWER_DIR / "index.html", include_body)
        if path == "/layers.json":
            return self._send_bytes(json.dumps(self.server.layer_list).encode(), "application/json", include_body)
        section, _, rest = path.lstrip("/").partition("/")
        root = self.server.roots.get(section)
        target = _inside(root, rest) if root is not None else None
        if target is None or not target.is_file():
            return self.send_error(HTTPStatus.NOT_FOUND)
        return self._send_file(target, include_body)

    def _send_file(self, path: Path, include_body: bool) -> None:
        content_type = CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0]
        self._send_bytes(path.read_bytes(), content_type or "application/octet-stream", include_body)

    def _send_bytes(self, body: bytes, content_type: str, include_body: bool) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if include_body:
            self.wfile.write(body)


def _inside(root: Path, relative: str) -> Path | None:
    """`root/relative` when it resolves to a path inside `root` (no `..`, no link out), else None."""
    if not relative or "\0" in relative or "\\" in relative:
        return None
    if any(part in ("..", ".") for part in relative.split("/")):
        return None
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root) else None
