"""Building footprints from any OGR format (GPKG, GeoJSON, Shapefile, FlatGeobuf...).

Each footprint becomes one clean 2D polygon with a unique id, and every repair is
recorded on it: Z dropped, invalid rings rebuilt, sliver holes removed, multipolygons
split into one footprint per part (the largest keeps the id, the others get `<id>_2`,
`<id>_3`... and keep the source id), overlaps between footprints cut from the smaller
one. Features that cannot give a polygon are returned as rejections with a reason, so
the run reports them without stopping.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import shapely
from shapely.geometry.polygon import orient

from twin.errors import InputError
from twin.model import Footprint

ID_FIELD_CANDIDATES = ("cleabs", "id", "identifiant", "gml_id", "building_id")
MIN_AREA_M2 = 1.0
"""Holes and parts smaller than this are slivers from digitising, not courtyards or buildings."""
MIN_OVERLAP_M2 = 0.01


@dataclass(frozen=True)
class FootprintSet:
    path: str
    layer: str
    id_field: str | None
    crs: pyproj.CRS | None
    footprints: tuple[Footprint, ...]
    rejected: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = field(default=())


def read_footprints(path: str | Path, id_field: str | None = None, layer: str | None = None) -> FootprintSet:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path given to --footprints")
    layer = _choose_layer(path, layer)
    try:
        meta, fids, wkb, values = pyogrio.raw.read(path, layer=layer, return_fids=True)
    except Exception as error:
        raise InputError(f"{path}: cannot be read as a vector file ({error})") from None
    if len(fids) == 0:
        raise InputError(f"{path} (layer {layer}): the layer has no features; nothing to build")
    fields = list(meta["fields"])
    chosen_field = _choose_id_field(path, fields, id_field)
    if chosen_field is None:
        ids = [f"{layer}.{fid}" for fid in fids]
        notes = [f"{path}: no id field among {', '.join(ID_FIELD_CANDIDATES)}; ids are '<layer>.<feature id>'"]
    else:
        ids = _ids_from_field(path, chosen_field, values[fields.index(chosen_field)], fids)
        notes = []
    crs = pyproj.CRS(meta["crs"]) if meta.get("crs") else None
    if crs is not None and not crs.is_projected:
        raise InputError(
            f"{path}: footprints are in {crs.name}, not a projected CRS; reproject them to the "
            "points' CRS (e.g. ogr2ogr -t_srs EPSG:2154 out.gpkg in.gpkg)"
        )

    footprints: list[Footprint] = []
    rejected: list[tuple[str, str]] = []
    geometries = shapely.from_wkb(wkb)
    for index, (feature_id, geometry) in enumerate(zip(ids, geometries)):
        attributes = {name: _plain(values[k][index]) for k, name in enumerate(fields)}
        polygons, repair_notes = repair_footprint(geometry)
        if not polygons:
            rejected.append((feature_id, repair_notes[-1]))
            continue
        for part, polygon in enumerate(polygons, start=1):
            part_notes = list(repair_notes)
            part_id = feature_id if part == 1 else f"{feature_id}_{part}"
            part_attributes = dict(attributes)
            if len(polygons) > 1:
                part_attributes["source_id"] = feature_id
                part_notes.append(f"part {part} of {len(polygons)} of a multipolygon footprint")
            footprints.append(Footprint(part_id, polygon, part_attributes, tuple(part_notes)))
    _reject_colliding_part_ids(footprints)
    footprints = _cut_overlaps(footprints)
    return FootprintSet(
        path=str(path),
        layer=layer,
        id_field=chosen_field,
        crs=crs,
        footprints=tuple(sorted(footprints, key=lambda f: f.id)),
        rejected=tuple(sorted(rejected)),
        notes=tuple(notes),
    )


def repair_footprint(geometry: shapely.Geometry | None) -> tuple[list[shapely.Polygon], list[str]]:
    """Clean polygons (largest first) from one source geometry, with what was done to it."""
    if geometry is None or geometry.is_empty:
        return [], ["the footprint has no geometry"]
    notes: list[str] = []
    if shapely.has_z(geometry):
        geometry = shapely.force_2d(geometry)
    if geometry.geom_type not in ("Polygon", "MultiPolygon"):
        return [], [f"the footprint is a {geometry.geom_type}, not a polygon"]
    if not geometry.is_valid:
        notes.append(f"invalid geometry repaired ({shapely.is_valid_reason(geometry)})")
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    polygons = [p for p in _polygons_of(geometry) if p.area >= MIN_AREA_M2]
    if not polygons:
        return [], notes + [f"the footprint is smaller than {MIN_AREA_M2} m²"]
    polygons = sorted(polygons, key=lambda p: (-p.area, p.centroid.x, p.centroid.y))
    cleaned = []
    for polygon in polygons:
        holes = [h for h in polygon.interiors if shapely.Polygon(h).area >= MIN_AREA_M2]
        if len(holes) < len(polygon.interiors):
            notes.append(f"{len(polygon.interiors) - len(holes)} sliver hole(s) under {MIN_AREA_M2} m² removed")
        polygon = shapely.Polygon(polygon.exterior, holes)
        cleaned.append(orient(shapely.remove_repeated_points(polygon, 0.001), 1.0))
    return cleaned, notes


def _polygons_of(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    if geometry.geom_type == "Polygon":
        return [geometry]
    if hasattr(geometry, "geoms"):
        return [p for g in geometry.geoms for p in _polygons_of(g)]
    return []


def _choose_layer(path: Path, layer: str | None) -> str:
    try:
        layers = pyogrio.list_layers(path)
    except Exception as error:
        raise InputError(
            f"{path}: not a vector file GDAL can open ({error}); use GPKG, GeoJSON, Shapefile or another OGR format"
        ) from None
    names = [str(name) for name, geometry_type in layers if _may_hold_polygons(geometry_type)]
    if layer is not None:
        if layer not in [str(name) for name, _ in layers]:
            raise InputError(f"{path}: no layer named {layer!r}; layers: {', '.join(str(n) for n, _ in layers)}")
        return layer
    if len(names) == 1:
        return names[0]
    if not names:
        raise InputError(f"{path}: no polygon layer; footprints must be polygons or multipolygons")
    raise InputError(f"{path}: several polygon layers ({', '.join(names)}); choose one with --layer")


def _may_hold_polygons(geometry_type: object) -> bool:
    """Polygon layers, and layers that declare no single type (features are checked one by one)."""
    text = str(geometry_type or "")
    return "Polygon" in text or text in ("Unknown", "Unknown (any)", "Geometry", "GeometryCollection")


def _choose_id_field(path: Path, fields: list[str], id_field: str | None) -> str | None:
    if id_field is not None:
        if id_field not in fields:
            raise InputError(
                f"{path}: no field named {id_field!r} for the building ids; fields: {', '.join(fields) or 'none'}"
            )
        return id_field
    lower = {name.lower(): name for name in fields}
    return next((lower[c] for c in ID_FIELD_CANDIDATES if c in lower), None)


def _ids_from_field(path: Path, field: str, values: np.ndarray, fids: np.ndarray) -> list[str]:
    ids = []
    for fid, value in zip(fids, values):
        text = "" if value is None else str(_plain(value)).strip()
        if not text:
            raise InputError(f"{path}: feature {fid} has an empty {field!r}; every building needs an id")
        ids.append(text)
    duplicates = [value for value, count in Counter(ids).items() if count > 1]
    if duplicates:
        shown = ", ".join(sorted(duplicates)[:5])
        raise InputError(
            f"{path}: {len(duplicates)} duplicate value(s) in the id field {field!r} (e.g. {shown}); "
            "ids must be unique: fix the data or choose another field with --id-field"
        )
    return ids


def _reject_colliding_part_ids(footprints: list[Footprint]) -> None:
    counts = Counter(f.id for f in footprints)
    clashes = sorted(i for i, c in counts.items() if c > 1)
    if clashes:
        raise InputError(
            f"the ids given to the parts of multipolygon footprints clash with existing ids ({', '.join(clashes[:5])}); "
            "rename those features or choose another --id-field"
        )


def _cut_overlaps(footprints: list[Footprint]) -> list[Footprint]:
    """Removes each overlap from the smaller footprint, so that solids never intersect."""
    polygons = [f.polygon for f in footprints]
    tree = shapely.STRtree(polygons)
    pairs = tree.query(polygons, predicate="overlaps").T
    if len(pairs) == 0:
        return footprints
    result = {f.id: f for f in footprints}
    for i, j in sorted({tuple(sorted(p)) for p in pairs.tolist()}):
        a, b = result[footprints[i].id], result[footprints[j].id]
        overlap = a.polygon.intersection(b.polygon).area
        if overlap < MIN_OVERLAP_M2:
            continue
        larger, smaller = sorted((a, b), key=lambda f: (-f.polygon.area, f.id))
        trimmed = smaller.polygon.difference(larger.polygon)
        pieces = sorted(_polygons_of(trimmed), key=lambda p: -p.area)
        if not pieces or pieces[0].area < MIN_AREA_M2:
            continue
        note = f"overlapped footprint {larger.id} by {overlap:.2f} m²; the overlap was given to {larger.id}"
        if len(pieces) > 1:
            note += f" ({len(pieces) - 1} leftover piece(s) dropped)"
        result[smaller.id] = Footprint(
            smaller.id, orient(pieces[0], 1.0), smaller.attributes, smaller.notes + (note,)
        )
        result[larger.id] = Footprint(
            larger.id, larger.polygon, larger.attributes, larger.notes + (f"overlapped footprint {smaller.id} by {overlap:.2f} m²",)
        )
    return list(result.values())


def _plain(value: object) -> object:
    """numpy scalars as Python values, so attributes serialise to JSON as they are."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
