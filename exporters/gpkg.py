"""GeoPackage for GIS (`buildings.gpkg`), written by GDAL through pyogrio.

- layer `buildings`: one 2D footprint per building (in the horizontal CRS, e.g.
  Lambert-93) with its id, status, reason, LoDs and every attribute as a typed column
  (numbers as integers or reals, ISO dates as dates, lists as JSON text; see
  `twin.attributes`); a building without a footprint has a null geometry.
- layer `roof_faces` (when some building has LoD 2 roofs): each roof surface of the
  building's highest LoD as a 3D polygon (in the compound CRS) with its slope and
  azimuth in degrees, its area and its area seen from above (`area_2d`) in m², computed
  from the geometry, and the surface's own attributes.

- table `layer_styles`: QGIS's default styles for both layers (buildings coloured by
  height above ground, roof faces by slope), which QGIS applies when the layer opens.

GDAL stamps GeoPackages with the current time unless told a date; a fixed one keeps
the file identical from run to run.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from xml.sax.saxutils import quoteattr
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
            _write_qgis_styles(temporary, [BUILDINGS_LAYER] + ([ROOF_FACES_LAYER] if faces else []))
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


HEIGHT_CLASSES = ((0, 6, "255,255,204"), (6, 10, "161,218,180"), (10, 15, "65,182,196"), (15, 25, "44,127,184"), (25, 1000, "37,52,148"))
"""Building height above ground (m) classes and their colours: houses, small and large
apartment blocks, towers."""
SLOPE_CLASSES = ((0, 5, "189,189,189"), (5, 20, "254,217,118"), (20, 35, "253,141,60"), (35, 90, "189,0,38"))
"""Roof slope (degrees) classes: flat, low pitch, common pitch, steep."""
STYLED_ATTRIBUTE = {BUILDINGS_LAYER: ("height_lod12", HEIGHT_CLASSES, "m"), ROOF_FACES_LAYER: ("slope", SLOPE_CLASSES, "°")}


def _write_qgis_styles(path: Path, layers: list[str]) -> None:
    """QGIS's `layer_styles` table, laid out as QGIS itself writes it, so QGIS applies the styles
    by default (GDAL has no API for it, hence SQL on the GeoPackage's SQLite database)."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute(
                "CREATE TABLE layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), "
                "f_table_schema TEXT(256), f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), "
                "styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), "
                "update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"
            )
            for layer in layers:
                attribute, classes, unit = STYLED_ATTRIBUTE[layer]
                (geometry_column,) = connection.execute(
                    "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
                ).fetchone()
                connection.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName, "
                    "styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '', ?)",
                    (layer, geometry_column, f"{layer} by {attribute}", _graduated_qml(attribute, classes, unit),
                     f"twin default: {layer} coloured by {attribute}", FIXED_DATE),
                )
            connection.execute(
                "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles', '', ?)",
                (FIXED_DATE,),
            )
    finally:
        connection.close()


def _graduated_qml(attribute: str, classes: tuple[tuple[float, float, str], ...], unit: str) -> str:
    """A QGIS style (QML) colouring polygons by ranges of a numeric attribute."""
    ranges = "".join(
        f'<range lower="{low}" upper="{high}" symbol="{n}" label={quoteattr(f"{low} – {high} {unit}" if high < 1000 else f"> {low} {unit}")} render="true"/>'
        for n, (low, high, _) in enumerate(classes)
    )
    symbols = "".join(
        f'<symbol type="fill" name="{n}" alpha="1" clip_to_extent="1" force_rhr="0">'
        '<layer class="SimpleFill" enabled="1" pass="0" locked="0"><Option type="Map">'
        f'<Option name="color" value="{colour},255" type="QString"/>'
        '<Option name="outline_color" value="90,90,90,255" type="QString"/>'
        '<Option name="outline_width" value="0.2" type="QString"/>'
        '<Option name="outline_width_unit" value="MM" type="QString"/>'
        '<Option name="style" value="solid" type="QString"/>'
        "</Option></layer></symbol>"
        for n, (_, _, colour) in enumerate(classes)
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
        '<qgis version="3.34.0" styleCategories="Symbology">'
        f'<renderer-v2 type="graduatedSymbol" attr={quoteattr(attribute)} graduatedMethod="GraduatedColor" '
        'symbollevels="0" enableorderby="0" forceraster="0">'
        f"<ranges>{ranges}</ranges><symbols>{symbols}</symbols>"
        "</renderer-v2></qgis>"
    )
