"""CityGML 3.0 (`buildings.citygml3.gml`) and CityGML 2.0 (`buildings.citygml2.gml`).

Each building is a `Building` (with `BuildingPart`s, see `twin.gml` for how refined
LoDs map onto CityGML's levels) carrying:
- every attribute as a typed generic attribute (`twin.attributes`), and its id as `gml:name`;
- its footprint at the ground height, as `lod0MultiSurface` (3.0) or `lod0FootPrint` (2.0);
- its solids as `lod1Solid` / `lod2Solid` whose surfaces are thematic surfaces
  (`GroundSurface`, `WallSurface`, `RoofSurface`, with the surface's attributes),
  referenced from the solid by xlink. CityGML 2.0 has no LOD1 thematic surfaces, so its
  `lod1Solid` holds its polygons inline. A solid whose validity attribute lists errors
  is written as its surfaces only (3.0: thematic surfaces; 2.0: `lod1MultiSurface` or
  LOD2 thematic surfaces), and the building says so in `twin_surfaces_only`.

Coordinates are in the model's compound CRS (`srsName` its OGC URI, `srsDimension` 3),
to the millimetre. The writer streams: the XML is written element by element
(lxml's incremental `xmlfile`), so only one building is ever held as XML.

Written on lxml by hand because no maintained Python library writes CityGML 3.0
(citygml4j and citygml-tools are Java).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pyproj
import shapely
from lxml import etree
from shapely.geometry.polygon import orient

from exporters import register
from exporters.atomic import atomic_output
from twin.attributes import ValueType, typed_value, value_text
from twin.errors import TwinError
from twin.geodesy import crs_uri
from twin.gml import (
    BUILDING_LOD_ATTRIBUTE,
    CITYGML2,
    CITYGML3,
    LODS_ATTRIBUTE,
    SURFACES_ONLY_ATTRIBUTE,
    XLINK,
    XSI,
    Dialect,
    gml_id,
    lod_level,
)
from twin.model import Building, CityModel, Solid, Surface

CITYGML3_FILE = "buildings.citygml3.gml"
CITYGML2_FILE = "buildings.citygml2.gml"
SUPPORTED_LEVELS = (1, 2, 3)

Envelope = tuple[np.ndarray, np.ndarray]


@register("citygml3", f"CityGML 3.0, one file ({CITYGML3_FILE})", drops_textures=True)
def write_citygml3(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / CITYGML3_FILE
    write_citygml_file(path, CITYGML3, model.buildings, model.crs, model_envelope(model.buildings), model.metadata)
    return [path]


@register("citygml2", f"CityGML 2.0, one file ({CITYGML2_FILE})", drops_textures=True)
def write_citygml2(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / CITYGML2_FILE
    write_citygml_file(path, CITYGML2, model.buildings, model.crs, model_envelope(model.buildings), model.metadata)
    return [path]


def srs_name(crs: pyproj.CRS) -> str:
    # OGC CRS identifiers are http URIs (CityJSON's specification writes them with https).
    return crs_uri(crs).replace("https://www.opengis.net/", "http://www.opengis.net/", 1)


def write_citygml_file(
    path: Path,
    dialect: Dialect,
    buildings: Iterable[Building],
    crs: pyproj.CRS,
    envelope: Envelope | None,
    metadata: Mapping[str, Any],
) -> None:
    """Streams `buildings` (any iterable, e.g. a generator) into one CityGML file.

    `envelope` (lowest and highest corners) is the model's, written before the
    buildings; `model_envelope` computes it from a sequence of buildings.
    """
    with atomic_output(path, "wb") as stream, etree.xmlfile(stream, encoding="utf-8") as xf:
        xf.write_declaration()
        writer = _Writer(xf, dialect, srs_name(crs))
        writer.city_model(buildings, envelope, metadata)


def model_envelope(buildings: Iterable[Building]) -> Envelope | None:
    low, high = np.full(3, np.inf), np.full(3, -np.inf)
    for building in buildings:
        bounds = _building_bounds(building)
        if bounds is not None:
            low, high = np.minimum(low, bounds[0]), np.maximum(high, bounds[1])
    return (low, high) if np.all(np.isfinite(low)) else None


@dataclass(frozen=True)
class _Space:
    """A `Building` or `BuildingPart` as written: its geometry by model LoD."""

    gml_id: str
    name: str | None
    attributes: Mapping[str, Any]
    lods: Mapping[str, Solid]
    surfaces_only: frozenset[str]
    footprint: tuple[shapely.Polygon, float] | None = None
    parts: tuple["_Space", ...] = ()


def _building_space(building: Building) -> _Space:
    identifier = gml_id(building.id)
    surfaces_only = frozenset(lod for lod in building.available_lods() if _has_errors(building, lod))
    own: dict[str, Solid] = {}
    refinements: dict[str, Solid] = {}
    for lod, solid in sorted(building.lods.items()):
        _check_level(building.id, lod)
        taken = {lod_level(other) for other in own}
        (refinements if lod_level(lod) in taken else own)[lod] = solid
    parts = []
    for part in building.parts:
        levels = [lod_level(lod) for lod in part.lods]
        if len(set(levels)) != len(levels):
            raise TwinError(f"building part {part.id} holds two LoDs of one CityGML level ({', '.join(part.lods)})")
        for lod in part.lods:
            _check_level(part.id, lod)
        attributes = {**part.attributes, LODS_ATTRIBUTE: " ".join(sorted(part.lods))}
        parts.append(_Space(gml_id(part.id), part.id, attributes, dict(part.lods), surfaces_only))
    for lod, solid in refinements.items():
        parts.append(
            _Space(f"{identifier}_lod{lod}", None, {BUILDING_LOD_ATTRIBUTE: lod}, {lod: solid}, surfaces_only)
        )
    attributes = dict(building.attributes)
    if own:
        attributes[LODS_ATTRIBUTE] = " ".join(sorted(own))
    if surfaces_only:
        attributes[SURFACES_ONLY_ATTRIBUTE] = " ".join(sorted(surfaces_only))
    return _Space(identifier, building.id, attributes, own, surfaces_only, _footprint(building), tuple(parts))


def _check_level(object_id: str, lod: str) -> None:
    if lod_level(lod) not in SUPPORTED_LEVELS:
        raise TwinError(f"{object_id}: LoD {lod} cannot be written to CityGML (twin writes LoD 1 to 3)")


def _has_errors(building: Building, lod: str) -> bool:
    """Whether the building's validity attribute for `lod` (e.g. `validity_lod13`) lists errors."""
    codes = building.attributes.get(f"validity_lod{lod.replace('.', '')}")
    if isinstance(codes, str):
        return codes.strip() not in ("", "[]")
    return bool(codes)


def _footprint(building: Building) -> tuple[shapely.Polygon, float] | None:
    """The footprint at the ground height; none without a ground height (no height to put it at)."""
    h_ground = building.attributes.get("h_ground")
    if building.footprint.is_empty or not isinstance(h_ground, (int, float)) or not math.isfinite(h_ground):
        return None
    return orient(building.footprint, 1.0), float(h_ground)


def _building_bounds(building: Building) -> Envelope | None:
    points = [solid.vertices() for lod in building.available_lods() for solid in building.solids(lod)]
    footprint = _footprint(building)
    if footprint is not None:
        polygon, z = footprint
        xmin, ymin, xmax, ymax = polygon.bounds
        points.append(np.array([[xmin, ymin, z], [xmax, ymax, z]]))
    if not points:
        return None
    stacked = np.concatenate(points)
    return stacked.min(axis=0), stacked.max(axis=0)


def _coordinates(values: np.ndarray) -> str:
    return " ".join(f"{v:.3f}" for v in values.ravel().tolist())


def _closed(ring: np.ndarray) -> np.ndarray:
    return np.vstack([ring, ring[:1]])


class _Writer:
    """Writes one CityGML document through lxml's incremental writer, indented."""

    def __init__(self, xf: Any, dialect: Dialect, srs: str) -> None:
        self._xf = xf
        self._d = dialect
        self._srs = srs
        self._depth = 0
        self._v3 = dialect is CITYGML3

    # XML plumbing --------------------------------------------------------------------

    def _newline(self) -> None:
        if self._depth:  # no text outside the root element
            self._xf.write("\n" + "  " * self._depth)

    @contextlib.contextmanager
    def _element(self, tag: str, attrib: Mapping[str, str] | None = None, nsmap=None) -> Iterator[None]:
        self._newline()
        with self._xf.element(tag, dict(attrib or {}), nsmap=nsmap):
            self._depth += 1
            yield
            self._depth -= 1
            self._newline()

    def _leaf(self, tag: str, text: str, attrib: Mapping[str, str] | None = None) -> None:
        self._newline()
        with self._xf.element(tag, dict(attrib or {})):
            self._xf.write(text)

    def _empty(self, tag: str, attrib: Mapping[str, str]) -> None:
        self._newline()
        with self._xf.element(tag, dict(attrib)):
            pass

    def _core(self, name: str) -> str:
        return f"{{{self._d.core}}}{name}"

    def _bldg(self, name: str) -> str:
        return f"{{{self._d.building}}}{name}"

    def _gml(self, name: str) -> str:
        return f"{{{self._d.gml}}}{name}"

    def _gen(self, name: str) -> str:
        return f"{{{self._d.generics}}}{name}"

    def _id(self, value: str) -> dict[str, str]:
        return {self._gml("id"): value}

    # Document ------------------------------------------------------------------------

    def city_model(self, buildings: Iterable[Building], envelope: Envelope | None, metadata: Mapping[str, Any]) -> None:
        locations = " ".join(f"{ns} {url}" for ns, url in self._d.schema_locations)
        attrib = {f"{{{XSI}}}schemaLocation": locations}
        attrib.update(self._id(gml_id(f"twin-{metadata.get('identifier') or 'city-model'}")))
        with self._element(self._core("CityModel"), attrib, nsmap=self._d.nsmap):
            self._leaf(self._gml("name"), str(metadata.get("title") or "Buildings"))
            if envelope is not None:
                self._envelope(envelope)
            for building in buildings:
                with self._element(self._core("cityObjectMember")):
                    self._space(_building_space(building), envelope=_building_bounds(building))

    def _envelope(self, envelope: Envelope) -> None:
        with self._element(self._gml("boundedBy")):
            with self._element(self._gml("Envelope"), {"srsName": self._srs, "srsDimension": "3"}):
                self._leaf(self._gml("lowerCorner"), _coordinates(envelope[0]))
                self._leaf(self._gml("upperCorner"), _coordinates(envelope[1]))

    # Buildings -----------------------------------------------------------------------

    def _space(self, space: _Space, envelope: Envelope | None = None, is_part: bool = False) -> None:
        tag = self._bldg("BuildingPart" if is_part else "Building")
        with self._element(tag, self._id(space.gml_id)):
            if space.name is not None:
                self._leaf(self._gml("name"), space.name)
            if envelope is not None:
                self._envelope(envelope)
            self._generic_attributes(space.attributes)
            if self._v3:
                self._space_content_3(space)
            else:
                self._space_content_2(space)
            for part in space.parts:
                member = "buildingPart" if self._v3 else "consistsOfBuildingPart"
                with self._element(self._bldg(member)):
                    self._space(part, is_part=True)

    def _space_content_3(self, space: _Space) -> None:
        """CityGML 3.0: boundaries, then the footprint, then the solids referencing the boundaries."""
        for lod, solid in sorted(space.lods.items()):
            for index, surface in enumerate(solid.surfaces, start=1):
                with self._element(self._core("boundary")):
                    self._thematic_surface(space, lod, index, surface)
        if space.footprint is not None:
            with self._element(self._core("lod0MultiSurface")):
                self._footprint_surface(space)
        for lod, solid in sorted(space.lods.items()):
            if lod not in space.surfaces_only:
                with self._element(self._core(f"lod{lod_level(lod)}Solid")):
                    self._solid_of_references(space, lod, solid)

    def _space_content_2(self, space: _Space) -> None:
        """CityGML 2.0: footprint, LOD1 (no thematic surfaces there), then LoD 2 and 3."""
        if space.footprint is not None:
            with self._element(self._bldg("lod0FootPrint")):
                self._footprint_surface(space)
        by_level = {lod_level(lod): (lod, solid) for lod, solid in space.lods.items()}
        if 1 in by_level:
            lod, solid = by_level[1]
            if lod in space.surfaces_only:
                with self._element(self._bldg("lod1MultiSurface")):
                    with self._element(self._gml("MultiSurface"), self._id(f"{space.gml_id}_lod{lod}")):
                        for index, surface in enumerate(solid.surfaces, start=1):
                            with self._element(self._gml("surfaceMember")):
                                self._polygon(surface, f"{space.gml_id}_lod{lod}_p{index}")
            else:
                with self._element(self._bldg("lod1Solid")):
                    with self._element(self._gml("Solid"), self._id(f"{space.gml_id}_lod{lod}")):
                        with self._element(self._gml("exterior")):
                            with self._element(self._gml("CompositeSurface")):
                                for index, surface in enumerate(solid.surfaces, start=1):
                                    with self._element(self._gml("surfaceMember")):
                                        self._polygon(surface, f"{space.gml_id}_lod{lod}_p{index}")
        # The schema's order: lod2Solid, then the boundaries of every level, then lod3Solid.
        if 2 in by_level and by_level[2][0] not in space.surfaces_only:
            with self._element(self._bldg("lod2Solid")):
                self._solid_of_references(space, *by_level[2])
        for level in (2, 3):
            if level in by_level:
                lod, solid = by_level[level]
                for index, surface in enumerate(solid.surfaces, start=1):
                    with self._element(self._bldg("boundedBy")):
                        self._thematic_surface(space, lod, index, surface)
        if 3 in by_level and by_level[3][0] not in space.surfaces_only:
            with self._element(self._bldg("lod3Solid")):
                self._solid_of_references(space, *by_level[3])

    def _thematic_surface(self, space: _Space, lod: str, index: int, surface: Surface) -> None:
        namespace = self._d.construction if self._v3 else self._d.building
        with self._element(f"{{{namespace}}}{surface.kind}", self._id(f"{space.gml_id}_lod{lod}_s{index}")):
            self._generic_attributes(surface.attributes)
            property_namespace = self._d.core if self._v3 else self._d.building
            with self._element(f"{{{property_namespace}}}lod{lod_level(lod)}MultiSurface"):
                with self._element(self._gml("MultiSurface"), self._id(f"{space.gml_id}_lod{lod}_m{index}")):
                    with self._element(self._gml("surfaceMember")):
                        self._polygon(surface, f"{space.gml_id}_lod{lod}_p{index}")

    def _solid_of_references(self, space: _Space, lod: str, solid: Solid) -> None:
        with self._element(self._gml("Solid"), self._id(f"{space.gml_id}_lod{lod}")):
            with self._element(self._gml("exterior")):
                shell = "Shell" if self._v3 else "CompositeSurface"
                with self._element(self._gml(shell), self._id(f"{space.gml_id}_lod{lod}_shell")):
                    for index in range(1, len(solid.surfaces) + 1):
                        self._empty(self._gml("surfaceMember"), {f"{{{XLINK}}}href": f"#{space.gml_id}_lod{lod}_p{index}"})

    def _footprint_surface(self, space: _Space) -> None:
        polygon, z = space.footprint
        rings = [np.asarray(polygon.exterior.coords)[:-1]] + [np.asarray(r.coords)[:-1] for r in polygon.interiors]
        rings = [np.column_stack([ring[:, :2], np.full(len(ring), z)]) for ring in rings]
        with self._element(self._gml("MultiSurface"), self._id(f"{space.gml_id}_lod0")):
            with self._element(self._gml("surfaceMember")):
                self._rings(rings, f"{space.gml_id}_lod0_p1")

    def _polygon(self, surface: Surface, polygon_id: str) -> None:
        self._rings(surface.rings, polygon_id)

    def _rings(self, rings: Iterable[np.ndarray], polygon_id: str) -> None:
        with self._element(self._gml("Polygon"), self._id(polygon_id)):
            for index, ring in enumerate(rings):
                with self._element(self._gml("exterior" if index == 0 else "interior")):
                    with self._element(self._gml("LinearRing")):
                        self._leaf(self._gml("posList"), _coordinates(_closed(ring)), {"srsDimension": "3"})

    # Attributes ----------------------------------------------------------------------

    def _generic_attributes(self, attributes: Mapping[str, Any]) -> None:
        for name, value in attributes.items():
            typed = typed_value(value)
            if typed is None:
                continue
            value_type, plain = typed
            text = value_text(value_type, plain)
            if self._v3:
                with self._element(self._core("genericAttribute")):
                    with self._element(self._gen(_V3_TAGS[value_type])):
                        self._leaf(self._gen("name"), str(name))
                        self._leaf(self._gen("value"), text)
            else:
                with self._element(self._gen(_V2_TAGS[value_type]), {"name": str(name)}):
                    self._leaf(self._gen("value"), text)


_V3_TAGS = {
    ValueType.INT: "IntAttribute",
    ValueType.DOUBLE: "DoubleAttribute",
    ValueType.DATE: "DateAttribute",
    ValueType.STRING: "StringAttribute",
}
_V2_TAGS = {
    ValueType.INT: "intAttribute",
    ValueType.DOUBLE: "doubleAttribute",
    ValueType.DATE: "dateAttribute",
    ValueType.STRING: "stringAttribute",
}
