"""GeoPackage for GIS (`buildings.gpkg`), written by GDAL through pyogrio.

- layer `buildings`: one 2D footprint per building (in the horizontal CRS, e.g.
  Lambert-93) with its id, status, reason, LoDs and every attribute as a typed column
  (numbers as integers or reals, ISO dates as dates, lists as JSON text; see
  `twin.attributes`); a building without a footprint has a null geometry.
- layer `roof_faces` (when some building has LoD 2 roofs): each roof surface of the
  building's highest LoD as a 3D polygon (in the compound CRS) with its slope and
  azimuth in degrees, its area and its area seen from above (`area_2d`) in m², computed
  from the geometry, and the surface's own attributes.

GDAL stamps GeoPackages with the current time unless told a date; a fixed one keeps
the file identical from run to run.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyogrio
import pyogrio.raw
import shapely

from exporters import register
from exporters.atomic import atomic_path
from reconstruction.geometry import surface_area, surface_normal
from twin.attributes import ValueType, typed_value
from twin.geodesy import horizontal_part
from twin.gml import lod_level
from twin.model import Building, CityModel, Surface, SurfaceKind

GPKG_FILE = "buildings.gpkg"
BUILDINGS_LAYER = "buildings"
ROOF_FACES_LAYER = "roof_faces"
FIXED_DATE = "2000-01-01T00:00:00.000Z"
FLAT_SLOPE_DEG = 0.1
"""Below this slope a roof face has no meaningful azimuth (null)."""

BASE_COLUMNS = ("building_id", "status", "reason", "lods")


@register("gpkg", f"GeoPackage for GIS: footprints with attributes, roof faces ({GPKG_FILE})")
def write_gpkg(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / GPKG_FILE
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    try:
        with atomic_path(path) as temporary:
            _write_buildings(model, temporary)
            faces = roof_faces(model.buildings)
            if faces:
                geometries = [face.pop("geometry") for face in faces]
                _write_layer(temporary, ROOF_FACES_LAYER, geometries, faces, "Polygon Z", model.crs.to_wkt(), append=True)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
    return [path]


def roof_orientation(surface: Surface) -> tuple[float, float | None]:
    """Slope (degrees from horizontal) and azimuth (degrees clockwise from north, the way
    the face looks; None for a flat face) of a planar surface."""
    normal = surface_normal(surface)
    slope = math.degrees(math.acos(max(-1.0, min(1.0, float(normal[2])))))
    if slope < FLAT_SLOPE_DEG:
        return slope, None
    return slope, math.degrees(math.atan2(float(normal[0]), float(normal[1]))) % 360.0


def roof_faces(buildings: Iterable[Building]) -> list[dict[str, Any]]:
    """One record per roof surface of each building's highest LoD, where it is LoD 2 or more."""
    faces = []
    for building in buildings:
        lods = [lod for lod in building.available_lods() if lod_level(lod) >= 2]
        if not lods:
            continue
        lod = lods[-1]
        roofs = [s for solid in building.solids(lod) for s in solid.surfaces if s.kind == SurfaceKind.ROOF]
        for number, surface in enumerate(roofs, start=1):
            slope, azimuth = roof_orientation(surface)
            record = {
                "geometry": shapely.Polygon(surface.rings[0], surface.rings[1:]),
                "building_id": building.id,
                "lod": lod,
                "face": number,
                "slope": round(slope, 2),
                "azimuth": None if azimuth is None else round(azimuth, 2),
                "area": round(surface_area(surface), 2),
                "area_2d": round(shapely.Polygon(surface.rings[0][:, :2], [r[:, :2] for r in surface.rings[1:]]).area, 2),
            }
            for name, value in surface.attributes.items():
                record.setdefault(name, value)
            faces.append(record)
    return faces


def _write_buildings(model: CityModel, path: Path) -> None:
    records = []
    for building in model.buildings:
        record: dict[str, Any] = {
            "building_id": building.id,
            "status": str(building.status),
            "reason": building.reason,
            "lods": " ".join(building.available_lods()),
        }
        for name, value in building.attributes.items():
            if name in ("status", "reason"):
                continue  # the building's own status and reason, above
            record[f"source_{name}" if name in BASE_COLUMNS else name] = value
        records.append(record)
    geometries = [None if b.footprint.is_empty else b.footprint for b in model.buildings]
    _write_layer(path, BUILDINGS_LAYER, geometries, records, "Polygon", horizontal_part(model.crs).to_wkt())


def _write_layer(path: Path, layer: str, geometries: list, records: list[dict[str, Any]], geometry_type: str,
                 crs_wkt: str, append: bool = False) -> None:
    names = list(dict.fromkeys(name for record in records for name in record))
    columns, masks = [], []
    for name in names:
        column, mask = _column([record.get(name) for record in records])
        columns.append(column)
        masks.append(mask)
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geometries], dtype=object)
    pyogrio.raw.write(
        path, wkb, columns, names, field_mask=masks, layer=layer, driver="GPKG", geometry_type=geometry_type,
        crs=crs_wkt, append=append, promote_to_multi=False,
    )


def _column(values: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """A typed column: integers, reals, dates or text, with a mask where values are absent."""
    typed = [typed_value(v) for v in values]
    kinds = Counter(t[0] for t in typed if t is not None)
    absent = np.array([t is None for t in typed])
    mask = absent if absent.any() else None
    if kinds and set(kinds) == {ValueType.INT}:
        return np.array([0 if t is None else t[1] for t in typed], dtype=np.int64), mask
    if kinds and set(kinds) <= {ValueType.INT, ValueType.DOUBLE}:
        return np.array([math.nan if t is None else float(t[1]) for t in typed], dtype=np.float64), mask
    if kinds and set(kinds) == {ValueType.DATE}:
        return np.array([None if t is None else t[1] for t in typed], dtype="datetime64[D]"), mask
    return np.array([None if t is None else str(t[1]) for t in typed], dtype=object), None
