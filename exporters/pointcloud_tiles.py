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
from exporters.tiles3d import check_heights
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
                "coloured": {"type": "BOOLEAN", "description": "Whether the points carry their RGB colours"},
            },
        }
    },
}


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
            _valid_gltf(path)
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
            "coloured": any(p.attributes.COLOR_0 is not None for p in _primitives(folder)),
        }}
        tileset_path.write_text(json.dumps(tileset, separators=(",", ":")), encoding="utf-8")
        written = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return [target / p for p in written]


def _primitives(folder: Path):
    for path in sorted(folder.rglob("*.glb")):
        for mesh in pygltflib.GLTF2().load_binary(str(path)).meshes:
            yield from mesh.primitives


Z_UP_TO_Y_UP = [-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5)]  # -90 degrees about x: (x, y, z) -> (x, z, -y)


def _valid_gltf(path: Path) -> None:
    """Rewrites one of py3dtiles' point glTFs as valid glTF: the node turned to y-up axes, positions'
    min/max recomputed, and colours (py3dtiles: unaligned, unnormalized bytes) as normalized RGBA bytes."""
    document = pygltflib.GLTF2().load_binary(str(path))
    blob = document.binary_blob()
    binary = bytearray()
    accessors, views, primitives = [], [], []

    def add(array: np.ndarray, component: int, kind: str, normalized: bool) -> int:
        views.append(pygltflib.BufferView(buffer=0, byteOffset=len(binary), byteLength=array.nbytes, target=pygltflib.ARRAY_BUFFER))
        binary.extend(array.tobytes())
        accessor = pygltflib.Accessor(
            bufferView=len(views) - 1, componentType=component, count=len(array), type=kind, normalized=normalized or None
        )
        if kind == pygltflib.VEC3 and component == pygltflib.FLOAT:
            accessor.min, accessor.max = array.min(axis=0).tolist(), array.max(axis=0).tolist()
        accessors.append(accessor)
        return len(accessors) - 1

    for primitive in document.meshes[0].primitives:
        positions = _read(document, blob, primitive.attributes.POSITION, np.float32)
        attributes = pygltflib.Attributes(POSITION=add(positions, pygltflib.FLOAT, pygltflib.VEC3, False))
        if primitive.attributes.COLOR_0 is not None:
            rgb = _read(document, blob, primitive.attributes.COLOR_0, np.uint8)
            rgba = np.column_stack([rgb, np.full(len(rgb), 255, np.uint8)])
            attributes.COLOR_0 = add(rgba, pygltflib.UNSIGNED_BYTE, pygltflib.VEC4, True)
        primitives.append(pygltflib.Primitive(attributes=attributes, mode=pygltflib.POINTS, material=primitive.material))
    fixed = pygltflib.GLTF2(
        asset=pygltflib.Asset(version="2.0", generator="py3dtiles, axes and colours adjusted by twin"),
        scene=0, scenes=[pygltflib.Scene(nodes=[0])],
        nodes=[pygltflib.Node(mesh=0, rotation=Z_UP_TO_Y_UP)],
        meshes=[pygltflib.Mesh(primitives=primitives)],
        materials=document.materials, accessors=accessors, bufferViews=views,
        buffers=[pygltflib.Buffer(byteLength=len(binary))],
    )
    fixed.set_binary_blob(bytes(binary))
    path.write_bytes(b"".join(fixed.save_to_bytes()))


def _read(document: pygltflib.GLTF2, blob: bytes, index: int, dtype) -> np.ndarray:
    accessor = document.accessors[index]
    view = document.bufferViews[accessor.bufferView]
    if np.dtype(dtype) != np.dtype({pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_BYTE: np.uint8}[accessor.componentType]) \
            or accessor.type != pygltflib.VEC3 or view.byteStride not in (None, 3 * np.dtype(dtype).itemsize):
        raise TwinError(f"{document.asset.generator} wrote points in a layout twin does not know; please report it")
    start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
    return np.frombuffer(blob, dtype, accessor.count * 3, start).reshape(-1, 3)


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
