"""The input points as a 3D Tiles 1.1 point cloud (`pointcloud/tileset.json`), through py3dtiles.

The layer is the point files the model was built from (`model.metadata["inputs"]["points"]`),
converted by py3dtiles, which streams files of any size out of core, to glTF point
content in earth-centred coordinates at the same ellipsoidal heights as the buildings: the
same geoid check (`twin.heights`) runs first, and py3dtiles is given the model's compound
CRS for every file, so that a LAS header naming only Lambert-93 cannot drop the geoid.
`twin serve` shows it beside the buildings' regional root.

py3dtiles runs in a child Python process: its worker processes are forked, and a parent
that has already decompressed LAZ with lazrs' thread pool (as a build has) leaves them
deadlocked. Its output is then made deterministic (a fixed seed for the preview's random
sample; the tileset's creation time replaced by the run's provenance and metadata) and
corrected where py3dtiles 12 departs from glTF: its points are written in the tiles' z-up
axes, so each node gets the rotation that puts them in glTF's y-up axes (which 3D Tiles
turns back to z-up), and the positions' min/max, rounded off by py3dtiles, are recomputed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pygltflib
import pyproj

from exporters import register
from exporters.atomic import atomic_folder
from twin.config import BuildConfig
from twin.errors import TwinError
from twin.geodesy import crs_uri
from twin.heights import PROJ_DATA_ENV, HeightTransform, proj_data_dirs
from twin.model import CityModel

POINTCLOUD_DIR = "pointcloud"
TILESET_FILE = "tileset.json"
SEED = 20240417
POINTCLOUD_SCHEMA = {
    "id": "twin_pointcloud",
    "classes": {
        "pointcloud": {
            "name": "Point cloud",
            "description": "The input point files as a point cloud layer",
            "properties": {
                "sources": {"type": "STRING", "array": True, "description": "Names of the point files"},
                "points": {"type": "SCALAR", "componentType": "UINT64", "description": "Points in the files"},
                "sourceCrs": {"type": "STRING", "description": "CRS of the source coordinates and altitudes"},
                "geoidGrids": {"type": "STRING", "array": True},
                "approximateHeights": {"type": "BOOLEAN"},
            },
        }
    },
}


def check_heights(crs: pyproj.CRS, config: BuildConfig) -> list[str]:
    return list(HeightTransform.for_crs(crs, config.tiles.allow_approximate_heights).notes)


@register(
    "pointcloud-tiles",
    "the input points as a 3D Tiles 1.1 point cloud (pointcloud/tileset.json), through py3dtiles",
    uses_config=True,
    check=check_heights,
)
def write_pointcloud_tiles(model: CityModel, out_dir: Path, config: BuildConfig) -> list[Path]:
    heights = HeightTransform.for_crs(model.crs, config.tiles.allow_approximate_heights)
    sources = model.metadata.get("inputs", {}).get("points", [])
    if not sources:
        raise TwinError("the model records no point files, so there is no point cloud to convert")
    target = out_dir / POINTCLOUD_DIR
    with atomic_folder(target) as folder:
        request = {
            "points": [str(Path(s["path"]).resolve()) for s in sources],
            "crs": model.crs.to_wkt(),
            "out": str(folder),
            "allow_approximate_heights": config.tiles.allow_approximate_heights,
        }
        environment = {**os.environ, PROJ_DATA_ENV: os.pathsep.join(proj_data_dirs())}
        result = subprocess.run(
            [sys.executable, "-m", "exporters.pointcloud_tiles", json.dumps(request)],
            capture_output=True, text=True, env=environment, cwd=Path(__file__).resolve().parents[1],
        )
        if result.returncode != 0:
            detail = [line for line in result.stderr.splitlines() if line.strip()][-1:] or ["no message"]
            raise TwinError(f"py3dtiles could not convert the points into a point cloud layer: {detail[0]}")
        for path in sorted(folder.rglob("*.glb")):
            _to_gltf_axes(path)
        tileset_path = folder / TILESET_FILE
        tileset = json.loads(tileset_path.read_text())
        tileset["asset"] = {"version": "1.1", "tilesetVersion": str(model.metadata.get("identifier") or "0")}
        tileset["schema"] = POINTCLOUD_SCHEMA
        tileset["metadata"] = {"class": "pointcloud", "properties": {
            "sources": [Path(s["path"]).name for s in sources],
            "points": int(sum(s.get("point_count", 0) for s in sources)),
            "sourceCrs": crs_uri(model.crs),
            "geoidGrids": list(heights.grids),
            "approximateHeights": heights.approximate,
        }}
        tileset_path.write_text(json.dumps(tileset, separators=(",", ":")), encoding="utf-8")
        written = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return [target / p for p in written]


Z_UP_TO_Y_UP = [-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]  # -90 degrees about x: (x, y, z) -> (x, z, -y)


def _to_gltf_axes(path: Path) -> None:
    document = pygltflib.GLTF2().load_binary(str(path))
    blob = document.binary_blob()
    for node in document.nodes:
        if node.mesh is not None and node.matrix is None and node.rotation is None:
            node.rotation = Z_UP_TO_Y_UP
    for mesh in document.meshes:
        for primitive in mesh.primitives:
            accessor = document.accessors[primitive.attributes.POSITION]
            view = document.bufferViews[accessor.bufferView]
            assert accessor.componentType == pygltflib.FLOAT and view.byteStride in (None, 12), "py3dtiles' layout changed"
            start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
            positions = np.frombuffer(blob, np.float32, accessor.count * 3, start).reshape(-1, 3)
            accessor.min, accessor.max = positions.min(axis=0).tolist(), positions.max(axis=0).tolist()
    path.write_bytes(b"".join(document.save_to_bytes()))


def _convert(request: dict[str, Any]) -> None:
    """In the child process: py3dtiles' conversion, with one worker for a deterministic output."""
    import laspy
    import numpy as np
    from py3dtiles.constants import SpecVersion
    from py3dtiles.convert import convert

    crs = pyproj.CRS(request["crs"])
    HeightTransform.for_crs(crs, request["allow_approximate_heights"])  # the same grids as the buildings
    coloured = True
    for path in request["points"]:
        with laspy.open(path) as reader:  # the header only: no decompression before py3dtiles forks
            coloured &= "red" in reader.header.point_format.dimension_names
    np.random.seed(SEED)  # py3dtiles samples the preview tile's points with numpy's global generator
    convert(
        request["points"],
        outfolder=request["out"],
        overwrite=True,
        jobs=1,
        crs_in=crs,
        force_crs_in=True,
        crs_out=pyproj.CRS("EPSG:4978"),
        pyproj_always_xy=True,
        spec_version=SpecVersion.V1_1,
        rgb=coloured,
        color_scale=1.0,  # LAS colours are 16-bit; also spares py3dtiles a decompressing check
        verbose=0,
    )


if __name__ == "__main__":
    _convert(json.loads(sys.argv[1]))
