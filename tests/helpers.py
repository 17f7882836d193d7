"""Independent checks of outputs, for the tests: official schemas and a third-party mesh library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
