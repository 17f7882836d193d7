"""CityJSON (1.1, 2.0) and CityJSONSeq buildings into twin's model.

Reads `Building` and `BuildingPart` objects with their attributes and their Solid,
MultiSurface and CompositeSurface geometries (one per LoD; LoD 0 surfaces become the
footprint), with the semantic surfaces' types and attributes. Surfaces without
semantics get their kind from their normal. A CityJSONSeq is read line by line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from twin.errors import InputError
from twin.inputs.citymodels import footprint_of, kind_from_normal, make_building, parse_crs
from twin.model import Building, BuildingPart, CityModel, Solid, Surface, SurfaceKind

_KINDS = {kind.value: kind for kind in SurfaceKind}
_SURFACE_GEOMETRIES = ("Solid", "MultiSurface", "CompositeSurface", "MultiSolid", "CompositeSolid")


def read_cityjson(path: str | Path, crs: str | None = None) -> CityModel:
    path = Path(path)
    try:
        if path.suffix.lower() == ".jsonl":
            header, buildings = _read_sequence(path)
        else:
            with open(path, encoding="utf-8") as stream:
                document = json.load(stream)
            _check_header(document, path)
            header = document
            buildings = list(_buildings(document, _vertices(document, document), path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: not valid JSON ({error})") from None
    metadata = header.get("metadata") or {}
    reference = metadata.get("referenceSystem")
    if crs is None and reference is None:
        raise InputError(f"{path}: no metadata.referenceSystem; name the CRS with crs=... (e.g. EPSG:5698)")
    model_crs = parse_crs(crs or reference, str(path))
    model_metadata = {"title": metadata.get("title"), "source_file": path.name, "crs": reference}
    for key, name in (("identifier", "identifier"), ("referenceDate", "reference_date")):
        if metadata.get(key):
            model_metadata[name] = metadata[key]
    return CityModel(tuple(sorted(buildings, key=lambda b: b.id)), model_crs, model_metadata)


def _check_header(document: Any, path: Path) -> None:
    if not isinstance(document, dict) or document.get("type") not in ("CityJSON", "CityJSONFeature"):
        raise InputError(f"{path}: not a CityJSON document (no \"type\": \"CityJSON\")")
    if document.get("type") == "CityJSON" and str(document.get("version", "")) not in ("1.1", "2.0"):
        raise InputError(f"{path}: CityJSON version {document.get('version')} is not read; upgrade it with cjio")


def _read_sequence(path: Path) -> tuple[dict, list[Building]]:
    buildings: list[Building] = []
    with open(path, encoding="utf-8") as stream:
        header = json.loads(stream.readline() or "null")
        _check_header(header, path)
        for number, line in enumerate(stream, start=2):
            if not line.strip():
                continue
            feature = json.loads(line)
            if not isinstance(feature, dict) or feature.get("type") != "CityJSONFeature":
                raise InputError(f"{path}, line {number}: not a CityJSONFeature")
            buildings.extend(_buildings(feature, _vertices(feature, header), path))
    return header, buildings


def _vertices(holder: dict, header: dict) -> np.ndarray:
    vertices = np.asarray(holder.get("vertices") or [], dtype=float).reshape(-1, 3)
    transform = header.get("transform")
    if transform:
        vertices = vertices * np.asarray(transform["scale"]) + np.asarray(transform["translate"])
    return vertices


def _buildings(document: dict, vertices: np.ndarray, path: Path) -> Iterator[Building]:
    objects = document.get("CityObjects") or {}
    for object_id, city_object in objects.items():
        if city_object.get("type") != "Building":
            continue
        lods, footprint = _geometries(city_object, vertices, object_id, path)
        parts = []
        for child_id in city_object.get("children") or []:
            child = objects.get(child_id)
            if child is None or child.get("type") != "BuildingPart":
                continue
            part_lods, _ = _geometries(child, vertices, child_id, path)
            parts.append(BuildingPart(child_id, part_lods, dict(child.get("attributes") or {})))
        yield make_building(object_id, dict(city_object.get("attributes") or {}), lods, tuple(parts), footprint)


def _geometries(city_object: dict, vertices: np.ndarray, object_id: str, path: Path):
    lods: dict[str, Solid] = {}
    footprint = None
    for geometry in city_object.get("geometry") or []:
        if geometry.get("type") not in _SURFACE_GEOMETRIES:
            continue
        lod = str(geometry.get("lod"))
        try:
            surfaces = list(_surfaces(geometry, vertices))
        except (IndexError, TypeError, ValueError) as error:
            raise InputError(f"{path}: object {object_id}, LoD {lod}: malformed geometry ({error})") from None
        if not surfaces:
            continue
        if lod in ("0", "0.0"):
            footprint = footprint_of([Solid(tuple(surfaces))]) if footprint is None else footprint
        else:
            lods[lod] = Solid(tuple(surfaces))
    return lods, footprint


def _surfaces(geometry: dict, vertices: np.ndarray) -> Iterator[Surface]:
    """Every surface of a geometry with its semantics, whatever the nesting of its type."""
    kind = geometry["type"]
    boundaries = geometry.get("boundaries") or []
    semantics = geometry.get("semantics") or {}
    semantic_surfaces = semantics.get("surfaces") or []
    values = semantics.get("values")
    if kind in ("MultiSurface", "CompositeSurface"):
        shells, value_shells = [boundaries], [values]
    elif kind == "Solid":
        shells, value_shells = boundaries[:1], (values or [None])[:1]  # inner shells are voids
    else:  # MultiSolid, CompositeSolid: every solid's outer shell
        shells = [solid[0] for solid in boundaries]
        value_shells = [solid_values[0] if solid_values else None for solid_values in (values or [None] * len(shells))]
    for shell, shell_values in zip(shells, value_shells):
        for index, surface in enumerate(shell):
            rings = tuple(vertices[np.asarray(ring, dtype=int)] for ring in surface if len(ring) >= 3)
            if not rings:
                continue
            semantic = None
            if shell_values is not None and shell_values[index] is not None:
                semantic = semantic_surfaces[shell_values[index]]
            yield _surface(rings, semantic)


def _surface(rings: tuple[np.ndarray, ...], semantic: dict | None) -> Surface:
    if semantic is None:
        return Surface(rings, kind_from_normal(rings))
    kind = _KINDS.get(semantic.get("type")) or kind_from_normal(rings)
    attributes = {k: v for k, v in semantic.items() if k not in ("type", "parent", "children")}
    return Surface(rings, kind, attributes)

