"""CityJSON 2.0 (`buildings.city.json`) and CityJSONSeq (`buildings.city.jsonl`).

Vertices are integers with a millimetre `transform`, deduplicated so that surfaces of a
solid share vertex indices (which is what makes the solid closed for readers). Each
building is a `Building` with one `Solid` per LoD and `BuildingPart` children for
LoDs that split it into parts. The CityJSONSeq writer streams one `CityJSONFeature`
per building, each with its own vertex list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from exporters import register
from exporters.atomic import atomic_output
from twin.attributes import json_value
from twin.geodesy import crs_uri
from twin.model import Building, CityModel, Solid

SCALE = 0.001
CITYJSON_FILE = "buildings.city.json"
CITYJSONSEQ_FILE = "buildings.city.jsonl"


@register("cityjson", "CityJSON 2.0, one file (buildings.city.json)")
def write_cityjson(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / CITYJSON_FILE
    write_cityjson_file(model, path)
    return [path]


def write_cityjson_file(model: CityModel, path: Path) -> None:
    with atomic_output(path) as stream:
        json.dump(cityjson_document(model), stream, separators=(",", ":"), ensure_ascii=False)


def cityjson_document(model: CityModel) -> dict[str, Any]:
    translate = _translate(model)
    vertex_index = _VertexIndex(translate)
    city_objects: dict[str, Any] = {}
    for building in model.buildings:
        city_objects.update(_city_objects(building, vertex_index))
    return {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [SCALE] * 3, "translate": translate},
        "metadata": _metadata(model),
        "CityObjects": city_objects,
        "vertices": vertex_index.vertices(),
    }


@register("cityjsonseq", "CityJSONSeq, one building per line (buildings.city.jsonl)")
def write_cityjsonseq(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / CITYJSONSEQ_FILE
    with atomic_output(path) as stream:
        for line in cityjsonseq_lines(model):
            stream.write(line)
            stream.write("\n")
    return [path]


def cityjsonseq_lines(model: CityModel) -> Iterator[str]:
    translate = _translate(model)
    header = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [SCALE] * 3, "translate": translate},
        "metadata": _metadata(model),
        "CityObjects": {},
        "vertices": [],
    }
    yield json.dumps(header, separators=(",", ":"), ensure_ascii=False)
    for building in model.buildings:
        vertex_index = _VertexIndex(translate)
        feature = {
            "type": "CityJSONFeature",
            "id": building.id,
            "CityObjects": _city_objects(building, vertex_index),
            "vertices": vertex_index.vertices(),
        }
        yield json.dumps(feature, separators=(",", ":"), ensure_ascii=False)


def _translate(model: CityModel) -> list[float]:
    """The lowest corner of the data, on the millimetre grid, so integers stay small."""
    corners = [s.vertices().min(axis=0) for b in model.buildings for lod in b.available_lods() for s in b.solids(lod)]
    if not corners:
        return [0.0, 0.0, 0.0]
    low = np.floor(np.min(corners, axis=0))
    return [float(v) for v in low]


def _metadata(model: CityModel) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "referenceSystem": crs_uri(model.crs),
        "title": model.metadata.get("title", "Buildings"),
    }
    if model.metadata.get("identifier"):
        metadata["identifier"] = model.metadata["identifier"]
    if model.metadata.get("reference_date"):
        metadata["referenceDate"] = model.metadata["reference_date"]
    extent = _extent(model.buildings)
    if extent is not None:
        metadata["geographicalExtent"] = extent
    return metadata


def _extent(buildings: Iterable[Building]) -> list[float] | None:
    points = [s.vertices() for b in buildings for lod in b.available_lods() for s in b.solids(lod)]
    if not points:
        return None
    stacked = np.concatenate(points)
    return [round(float(v), 3) for v in (*stacked.min(axis=0), *stacked.max(axis=0))]


class _VertexIndex:
    """Integer vertices on the transform's grid, each stored once, in first-use order."""

    def __init__(self, translate: list[float]) -> None:
        self._translate = np.asarray(translate)
        self._index: dict[tuple[int, int, int], int] = {}

    def ring(self, coordinates: np.ndarray) -> list[int]:
        keys = np.rint((coordinates - self._translate) / SCALE).astype(np.int64)
        return [self._index.setdefault(key, len(self._index)) for key in map(tuple, keys.tolist())]

    def vertices(self) -> list[list[int]]:
        return [list(key) for key in self._index]


def _city_objects(building: Building, vertex_index: _VertexIndex) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    building_object: dict[str, Any] = {"type": "Building", "attributes": _attributes(building.attributes)}
    geometry = [_solid_geometry(solid, lod, vertex_index) for lod, solid in sorted(building.lods.items())]
    if geometry:
        building_object["geometry"] = geometry
    extent = _extent([building])
    if extent is not None:
        building_object["geographicalExtent"] = extent
    if building.parts:
        building_object["children"] = [part.id for part in building.parts]
    objects[building.id] = building_object
    for part in building.parts:
        objects[part.id] = {
            "type": "BuildingPart",
            "parents": [building.id],
            "attributes": _attributes(part.attributes),
            "geometry": [_solid_geometry(solid, lod, vertex_index) for lod, solid in sorted(part.lods.items())],
        }
    return objects


def _solid_geometry(solid: Solid, lod: str, vertex_index: _VertexIndex) -> dict[str, Any]:
    semantic_objects: list[dict[str, Any]] = []
    semantic_ids: dict[str, int] = {}
    values, shell = [], []
    for surface in solid.surfaces:
        semantic = {"type": str(surface.kind), **_attributes(surface.attributes)}
        key = json.dumps(semantic, sort_keys=True)
        if key not in semantic_ids:
            semantic_ids[key] = len(semantic_objects)
            semantic_objects.append(semantic)
        values.append(semantic_ids[key])
        shell.append([vertex_index.ring(ring) for ring in surface.rings])
    return {
        "type": "Solid",
        "lod": lod,
        "boundaries": [shell],
        "semantics": {"surfaces": semantic_objects, "values": [values]},
    }


def _attributes(attributes: Any) -> dict[str, Any]:
    return {name: json_value(value) for name, value in attributes.items()}
