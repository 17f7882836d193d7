"""Independent checks of outputs, for the tests: official schemas and a third-party mesh library."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import meshopt
import numpy as np
import pygltflib
import trimesh
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource

from reconstruction.triangulate import triangulate_solid, triangulate_surface
from twin.model import Solid, Surface, SurfaceKind


def cityjson_validators(schema_dir: Path) -> tuple[Draft7Validator, Draft7Validator]:
    """Validators for a CityJSON file and for one CityJSONFeature, with every $ref resolved offline."""
    resources = []
    schemas = {}
    for path in sorted(schema_dir.glob("*.schema.json")):
        if ".min." in path.name:
            continue
        contents = json.loads(path.read_text())
        schemas[path.name] = contents
        resources.append((contents["$id"], Resource.from_contents(contents)))
    registry = Registry().with_resources(resources)
    checker = Draft7Validator.FORMAT_CHECKER
    return (
        Draft7Validator(schemas["cityjson.schema.json"], registry=registry, format_checker=checker),
        Draft7Validator(schemas["cityjsonfeature.schema.json"], registry=registry, format_checker=checker),
    )


def schema_errors(validator: Draft7Validator, document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(document)]


def assert_closed_outward(solid: Solid, label: str = "") -> None:
    """trimesh's view of the solid: watertight, consistently wound, positive volume."""
    vertices, triangles = triangulate_solid(solid)
    mesh = trimesh.Trimesh(vertices=vertices, faces=triangles, process=False)
    assert mesh.is_watertight, f"{label}: not watertight"
    assert mesh.is_winding_consistent, f"{label}: inconsistent winding"
    assert mesh.volume > 0, f"{label}: inward-oriented (volume {mesh.volume:.3f})"


def cityjson_solids(document: dict) -> dict[tuple[str, str], np.ndarray]:
    """Every Solid of a CityJSON document as real coordinates: {(object id, lod): boundaries}."""
    scale = np.array(document["transform"]["scale"])
    translate = np.array(document["transform"]["translate"])
    vertices = np.array(document["vertices"]) * scale + translate
    found = {}
    for object_id, city_object in document["CityObjects"].items():
        for geometry in city_object.get("geometry", []):
            if geometry["type"] == "Solid":
                found[(object_id, geometry["lod"])] = (geometry["boundaries"], vertices)
    return found


def mesh_of_cityjson_solid(boundaries, vertices: np.ndarray) -> trimesh.Trimesh:
    """A trimesh of a CityJSON Solid on the file's own vertex indices, so that closure is
    judged on the file's topology: each surface is triangulated in its plane and its
    triangles are mapped back to the indices the file uses."""
    triangles = []
    for rings in boundaries[0]:
        surface = Surface(tuple(vertices[ring] for ring in rings), SurfaceKind.WALL)
        _, local = triangulate_surface(surface)
        indices = np.concatenate([np.asarray(ring) for ring in rings])
        triangles.append(indices[local])
    return trimesh.Trimesh(vertices=vertices, faces=np.concatenate(triangles), process=False)


TILES_SCHEMA_BASE = "https://schemas.3d-tiles.test/"


def tiles_validator(schema_dir: Path, name: str = "tileset.schema.json") -> Draft202012Validator:
    """A validator for one of the official 3D Tiles 1.1 JSON schemas (`name`, a path relative to
    `schema_dir`), with every `$ref` resolved offline. The official files give bare file names
    as `$id` and resolve references against their own folders, so each file is registered under
    a URI that keeps its folder."""
    resources = []
    for path in sorted(schema_dir.rglob("*.schema.json")):
        contents = json.loads(path.read_text())
        uri = TILES_SCHEMA_BASE + path.relative_to(schema_dir).as_posix()
        contents["$id"] = uri
        resources.append((uri, Resource.from_contents(contents)))
    registry = Registry().with_resources(resources)
    schema = registry.contents(TILES_SCHEMA_BASE + name)
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


# --- 3D Tiles and glTF, read back with pygltflib and meshoptimizer's decoder --------------------

COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
TYPE_SIZES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def load_glb(path: Path) -> tuple[pygltflib.GLTF2, list[bytes]]:
    """The glTF document of a .glb (read by pygltflib) and the bytes of each buffer view,
    EXT_meshopt_compression views decoded by meshoptimizer."""
    document = pygltflib.GLTF2().load_binary(str(path))
    blob = document.binary_blob()
    views = []
    for view in document.bufferViews:
        compressed = (view.extensions or {}).get("EXT_meshopt_compression")
        if compressed:
            start = compressed.get("byteOffset", 0)
            data = blob[start:start + compressed["byteLength"]]
            decoded = meshopt.decode_gltf_buffer(data, compressed["count"], compressed["byteStride"], compressed["mode"])
            views.append(np.ascontiguousarray(decoded).tobytes())
        else:
            assert view.buffer == 0, f"{path}: buffer view outside the GLB's binary chunk"
            start = view.byteOffset or 0
            views.append(blob[start:start + view.byteLength])
    return document, views


def accessor_values(document: pygltflib.GLTF2, views: list[bytes], index: int) -> np.ndarray:
    accessor = document.accessors[index]
    view = document.bufferViews[accessor.bufferView]
    dtype = np.dtype(COMPONENT_DTYPES[accessor.componentType])
    width = TYPE_SIZES[accessor.type]
    stride = view.byteStride or dtype.itemsize * width
    data = np.frombuffer(views[accessor.bufferView], dtype=np.uint8)[accessor.byteOffset or 0:]
    rows = np.lib.stride_tricks.as_strided(data, shape=(accessor.count, dtype.itemsize * width), strides=(stride, 1))
    values = np.ascontiguousarray(rows).view(dtype).reshape(accessor.count, width)
    if accessor.normalized:
        values = np.maximum(values / np.iinfo(dtype).max, -1.0)
    return values


def node_matrix(node: pygltflib.Node) -> np.ndarray:
    """The 4x4 matrix of a glTF node: its matrix, or translation x rotation x scale."""
    if node.matrix:
        return np.array(node.matrix, dtype=np.float64).reshape(4, 4).T
    x, y, z, w = node.rotation or [0.0, 0.0, 0.0, 1.0]
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.array(node.scale or [1.0, 1.0, 1.0])
    matrix[:3, 3] = node.translation or [0.0, 0.0, 0.0]
    return matrix


Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def glb_ecef_vertices(
    document: pygltflib.GLTF2, views: list[bytes], tile_transform: np.ndarray | None = None
) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """Per primitive of the scene's first node: (positions in the tileset's frame, ECEF unless the
    tiles have transforms, triangles or None, feature ids or None), as 3D Tiles places glTF content:
    tile transform x (y-up to z-up) x node matrix x position."""
    node = document.nodes[document.scenes[document.scene].nodes[0]]
    matrix = (tile_transform if tile_transform is not None else np.eye(4)) @ Y_UP_TO_Z_UP @ node_matrix(node)
    found = []
    for primitive in document.meshes[node.mesh].primitives:
        positions = accessor_values(document, views, primitive.attributes.POSITION).astype(np.float64)
        placed = (matrix @ np.column_stack([positions, np.ones(len(positions))]).T).T[:, :3]
        triangles = accessor_values(document, views, primitive.indices).reshape(-1, 3) if primitive.indices is not None else None
        feature_attribute = getattr(primitive.attributes, "_FEATURE_ID_0", None)
        features = accessor_values(document, views, feature_attribute)[:, 0] if feature_attribute is not None else None
        found.append((placed, triangles, features))
    return found


def property_table_rows(document: pygltflib.GLTF2, views: list[bytes], schema: dict) -> list[dict]:
    """Each feature's properties, decoded from the EXT_structural_metadata property table."""
    table = document.extensions["EXT_structural_metadata"]["propertyTables"][0]
    definitions = schema["classes"][table["class"]]["properties"]
    count = table["count"]
    rows = [{} for _ in range(count)]
    for key, column in table["properties"].items():
        definition = definitions[key]
        data = views[column["values"]]
        offsets = np.frombuffer(views[column["arrayOffsets"]], np.uint32) if "arrayOffsets" in column else None
        if definition["type"] == "STRING":
            string_offsets = np.frombuffer(views[column["stringOffsets"]], np.uint32)
            elements = [data[a:b].decode() for a, b in zip(string_offsets[:-1], string_offsets[1:])]
        elif definition["type"] == "BOOLEAN":
            bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
            elements = [bool(b) for b in bits[: (offsets[-1] if offsets is not None else count)]]
        else:
            dtype = {"FLOAT64": np.float64, "INT32": np.int32}[definition["componentType"]]
            elements = np.frombuffer(data, dtype).tolist()
        for i in range(count):
            if offsets is not None:
                value = elements[offsets[i]:offsets[i + 1]]
            else:
                value = elements[i]
                if "noData" in definition and value == definition["noData"]:
                    value = None
            rows[i][key] = value
    return rows


def plain_glb(document: pygltflib.GLTF2, views: list[bytes]) -> bytes:
    """The same glTF with every buffer view stored plainly in one buffer (meshopt data decoded), so that
    the Khronos validator, which cannot decode EXT_meshopt_compression, checks the decoded geometry."""
    plain = pygltflib.GLTF2.from_json(document.to_json())
    blob = bytearray()
    for view, data in zip(plain.bufferViews, views):
        blob += b"\0" * (-len(blob) % 8)
        view.buffer, view.byteOffset, view.byteLength = 0, len(blob), len(data)
        if view.extensions:
            view.extensions.pop("EXT_meshopt_compression", None)
        blob += data
    plain.buffers = [pygltflib.Buffer(byteLength=len(blob))]
    plain.extensionsUsed = [e for e in plain.extensionsUsed if e != "EXT_meshopt_compression"]
    plain.extensionsRequired = [e for e in plain.extensionsRequired if e != "EXT_meshopt_compression"]
    plain.set_binary_blob(bytes(blob))
    return b"".join(plain.save_to_bytes())


def walk_tiles(tileset_path: Path):
    """Every tile of a tileset and of the external tilesets it references:
    (folder of its tileset, tile, parent tile or None), parents first."""
    tileset = json.loads(tileset_path.read_text())
    stack = [(tileset_path.parent, tileset["root"], None)]
    while stack:
        folder, tile, parent = stack.pop()
        yield folder, tile, parent
        uri = tile.get("content", {}).get("uri", "")
        if uri.endswith(".json"):
            external = folder / uri
            stack.append((external.parent, json.loads(external.read_text())["root"], tile))
        stack.extend((folder, child, tile) for child in tile.get("children", []))


def run_node(script: str, *args: str, timeout: float = 600) -> dict:
    """Runs one of tests/js/*.mjs with Node.js and returns the JSON it prints."""
    root = Path(__file__).resolve().parents[1]
    assert (root / "node_modules").is_dir(), "node_modules is missing: run ./setup.sh (it runs npm ci)"
    result = subprocess.run(
        ["node", str(root / "tests/js" / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=root,
    )
    assert result.returncode == 0, f"{script} failed: {result.stderr[-3000:]}"
    return json.loads(result.stdout)
