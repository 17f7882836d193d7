"""Existing 3D city models back into twin's model: CityGML 3.0/2.0, CityJSON, CityJSONSeq.

`read_city_model` picks the reader by the file's name; `read_build_output` reads the
folder of a `twin build` run (its buildings and its metadata.json). What every reader
shares lives here: surface kinds from normals where a file has no semantics, footprints
from the geometry where a file has none, and statuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyproj
import shapely

from reconstruction.geometry import surface_normal
from twin.errors import InputError
from twin.model import Building, BuildingPart, CityModel, Solid, Status, Surface, SurfaceKind

WALL_NORMAL_Z = 0.1
"""Surfaces without semantics whose normal is within this of horizontal are walls."""

BUILD_OUTPUT_FILES = (
    "buildings.citygml3.gml",
    "buildings.city.json",
    "buildings.city.jsonl",
    "buildings.citygml2.gml",
)
"""What `read_build_output` looks for, best first: CityGML 3.0 also carries footprints."""


def read_city_model(path: str | Path, crs: str | None = None) -> CityModel:
    """Reads a CityGML (.gml, .xml), CityJSON (.json) or CityJSONSeq (.jsonl) file.

    `crs` names the CRS when the file does not (or names one pyproj does not know).
    """
    from twin.inputs.citygml import read_citygml
    from twin.inputs.cityjson import read_cityjson

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in (".gml", ".xml"):
        return read_citygml(path, crs)
    if path.suffix.lower() in (".json", ".jsonl"):
        return read_cityjson(path, crs)
    raise InputError(f"{path}: unknown city model format; give a CityGML (.gml) or CityJSON (.json, .jsonl) file")


def read_build_output(folder: str | Path) -> tuple[CityModel, Path]:
    """The buildings of a `twin build` output folder, with its metadata.json; and the file read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder; give the --out folder of a twin build run")
    path = next((folder / name for name in BUILD_OUTPUT_FILES if (folder / name).is_file()), None)
    if path is None:
        raise InputError(
            f"{folder}: no buildings file ({', '.join(BUILD_OUTPUT_FILES)}); give the --out folder of a twin build run"
        )
    model = read_city_model(path)
    metadata_path = folder / "metadata.json"
    if metadata_path.is_file():
        try:
            run_metadata = json.loads(metadata_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{metadata_path}: not valid JSON ({error}); re-run twin build") from None
        model = CityModel(model.buildings, model.crs, {**model.metadata, **run_metadata}, model.communes)
    return model, path


def parse_crs(name: str, source: str) -> pyproj.CRS:
    try:
        return pyproj.CRS(name)
    except pyproj.exceptions.CRSError:
        raise InputError(f"{source}: unknown CRS {name!r}; name it with crs=... (e.g. EPSG:5698)") from None


def kind_from_normal(rings: tuple[np.ndarray, ...]) -> SurfaceKind:
    """The kind of a surface without semantics: walls stand, roofs face up, grounds down."""
    normal = surface_normal(Surface(rings, SurfaceKind.WALL))
    if abs(normal[2]) < WALL_NORMAL_Z:
        return SurfaceKind.WALL
    return SurfaceKind.ROOF if normal[2] > 0 else SurfaceKind.GROUND


def footprint_of(solids: list[Solid]) -> shapely.Polygon:
    """A footprint from the geometry: the outline of the ground surfaces (or, without any,
    of every non-vertical surface) seen from above; the largest polygon if several."""
    surfaces = [s for solid in solids for s in solid.surfaces]
    grounds = [s for s in surfaces if s.kind == SurfaceKind.GROUND] or surfaces
    polygons = []
    for surface in grounds:
        polygon = shapely.Polygon(surface.rings[0][:, :2], [ring[:, :2] for ring in surface.rings[1:]])
        polygon = shapely.make_valid(polygon)
        if polygon.area > 0:
            polygons.append(polygon)
    if not polygons:
        return shapely.Polygon()
    union = shapely.union_all(polygons)
    parts = [p for p in shapely.get_parts(union) if isinstance(p, shapely.Polygon)]
    return max(parts, key=lambda p: p.area) if parts else shapely.Polygon()


def make_building(
    identifier: str,
    attributes: Mapping[str, Any],
    lods: Mapping[str, Solid],
    parts: tuple[BuildingPart, ...],
    footprint: shapely.Polygon | None,
) -> Building:
    """A building as read from a file: its status and reason from its attributes when twin
    wrote them, else `built` as delivered."""
    all_lods = sorted({*lods, *(lod for part in parts for lod in part.lods)})
    if footprint is None or footprint.is_empty:
        footprint = footprint_of(_solids_at(all_lods[0], lods, parts)) if all_lods else shapely.Polygon()
    try:
        status = Status(attributes.get("status"))
    except ValueError:
        status = Status.BUILT
    reason = attributes.get("reason")
    return Building(identifier, footprint, status, reason if isinstance(reason, str) else "", attributes, lods, parts)


def _solids_at(lod: str, lods: Mapping[str, Solid], parts: tuple[BuildingPart, ...]) -> list[Solid]:
    if lod in lods:
        return [lods[lod]]
    return [part.lods[lod] for part in parts if lod in part.lods]
