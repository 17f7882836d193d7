"""CityGML 3.0 and 2.0 buildings into twin's model, one building at a time.

Reads `Building`s with their `BuildingPart`s, generic attributes (and other simple
attributes such as `measuredHeight`), solids and multi-surfaces at LoD 1 and 2 with
their thematic surfaces, and footprints (`lod0MultiSurface`, `lod0FootPrint`);
surfaces are found through xlinks, composite and orientable surfaces. What twin
itself wrote comes back as it was (see `twin.gml`): ids, refined LoDs, attributes.

Parsing is safe against hostile files: no DTD is loaded, no entity expanded, nothing
fetched from the network, and a document with a DTD is refused (CityGML needs none).
Elements are dropped once their building is read, so memory stays flat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyproj
import shapely
from lxml import etree

from twin.attributes import decode_text
from twin.errors import InputError
from twin.geodesy import compound
from twin.gml import (
    BUILDING_LOD_ATTRIBUTE,
    DIALECTS,
    LODS_ATTRIBUTE,
    RESERVED_ATTRIBUTES,
    XLINK,
    Dialect,
    gml_id,
    lod_level,
)
from twin.inputs.citymodels import kind_from_normal, make_building, parse_crs
from twin.model import Building, BuildingPart, CityModel, Solid, Surface, SurfaceKind

_HREF = f"{{{XLINK}}}href"
_POLYGON_LIKE = ("Polygon", "PolygonPatch", "Triangle")
_KINDS = {kind.value: kind for kind in SurfaceKind}
_STRUCTURAL = {
    "boundary", "boundedBy", "buildingPart", "consistsOfBuildingPart", "genericAttribute", "address",
    "externalReference", "appearance", "outerBuildingInstallation", "interiorBuildingInstallation",
    "buildingInstallation", "buildingRoom", "interiorRoom", "buildingConstructiveElement",
    "buildingFurniture", "buildingSubdivision", "relatedTo", "generalizesTo", "dynamizer",
}


def read_citygml(path: str | Path, crs: str | None = None) -> CityModel:
    path = Path(path)
    reader = _Reader(path)
    buildings = list(reader.buildings())
    chosen_crs = parse_crs(crs, str(path)) if crs else reader.crs()
    metadata = {"title": reader.title, "source_file": path.name, "crs": reader.srs_name}
    if reader.identifier:
        metadata["identifier"] = reader.identifier
    return CityModel(tuple(sorted(buildings, key=lambda b: b.id)), chosen_crs, metadata)


def crs_from_srs_name(name: str, source: str) -> pyproj.CRS:
    """A CRS from an srsName, including OGC compound-CRS URLs (crs-compound?1=...&2=...)."""
    if "crs-compound?" in name:
        parts = [part.split("=", 1)[1] for part in name.split("?", 1)[1].split("&") if "=" in part]
        if len(parts) == 2:
            return compound(parse_crs(parts[0], source), parse_crs(parts[1], source))
    return parse_crs(name, source)


def _local(tag: Any) -> str:
    return etree.QName(tag).localname if isinstance(tag, str) else ""


class _Reader:
    def __init__(self, path: Path) -> None:
        self._path = path
        self.srs_name: str | None = None
        self.title: str | None = None
        self.identifier: str | None = None
        self._d: Dialect | None = None

    def crs(self) -> pyproj.CRS:
        if self.srs_name is None:
            raise InputError(f"{self._path}: no srsName anywhere; name the CRS with crs=... (e.g. EPSG:5698)")
        return crs_from_srs_name(self.srs_name, str(self._path))

    def buildings(self) -> Iterator[Building]:
        try:
            events = etree.iterparse(
                str(self._path), events=("start", "end"), resolve_entities=False, no_network=True, load_dtd=False,
                remove_comments=True,
            )
            root = None
            count = 0
            for event, element in events:
                if root is None:
                    root = element
                    self._start(root, events)
                    continue
                if event != "end":
                    continue
                if self.srs_name is None and element.get("srsName"):
                    self.srs_name = element.get("srsName")
                if element.tag == self._bldg("Building"):
                    count += 1
                    yield self._building(element, f"building{count}")
                    self._drop(element)
                elif element.tag == self._gml("name") and element.getparent() is root and self.title is None:
                    self.title = element.text
        except etree.XMLSyntaxError as error:
            raise InputError(f"{self._path}: not well-formed XML ({error})") from None

    def _start(self, root: etree._Element, events: Any) -> None:
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None:
            raise InputError(f"{self._path}: the document declares a DTD; CityGML needs none, so it is refused for safety")
        namespace = etree.QName(root).namespace
        if namespace not in DIALECTS or _local(root.tag) != "CityModel":
            raise InputError(
                f"{self._path}: not a CityGML 2.0 or 3.0 CityModel (root {root.tag}); convert it with citygml-tools"
            )
        self._d = DIALECTS[namespace]
        root_id = root.get(self._gml("id")) or ""
        if root_id.startswith("twin-"):
            self.identifier = root_id.removeprefix("twin-")

    @staticmethod
    def _drop(element: etree._Element) -> None:
        """Frees a read building and everything before it in the document."""
        element.clear(keep_tail=True)
        ancestor = element
        while ancestor.getparent() is not None:
            parent = ancestor.getparent()
            while ancestor.getprevious() is not None:
                del parent[0]
            ancestor = parent

    # Names -------------------------------------------------------------------------

    def _gml(self, name: str) -> str:
        return f"{{{self._d.gml}}}{name}"

    def _bldg(self, name: str) -> str:
        return f"{{{self._d.building}}}{name}"

    def _is_v3(self) -> bool:
        return self._d.version == "3.0"

    def _property_namespace(self) -> str:
        """The namespace of lodXSolid, lodXMultiSurface... (core in 3.0, building in 2.0)."""
        return self._d.core if self._is_v3() else self._d.building

    # Buildings ---------------------------------------------------------------------

    def _building(self, element: etree._Element, fallback_id: str) -> Building:
        index = {el.get(self._gml("id")): el for el in element.iter() if isinstance(el.tag, str) and el.get(self._gml("id"))}
        identifier, attributes, lods, footprint, part_elements = self._space(element, index, fallback_id)
        parts = []
        for number, part_element in enumerate(part_elements, start=1):
            part_id, part_attributes, part_lods, _, _ = self._space(part_element, index, f"{identifier}-part{number}")
            carried = part_attributes.pop(BUILDING_LOD_ATTRIBUTE, None)
            if carried is not None:
                lods.update({str(carried): solid for solid in part_lods.values()})
            else:
                parts.append(BuildingPart(part_id, part_lods, _without_reserved(part_attributes)))
        return make_building(
            identifier, _without_reserved(attributes), lods, tuple(parts), footprint
        )

    def _space(self, element: etree._Element, index: dict, fallback_id: str):
        own_id = element.get(self._gml("id"))
        name = None
        attributes: dict[str, Any] = {}
        thematic: dict[int, list[Surface]] = {}
        kinds: dict[str, tuple[SurfaceKind, dict[str, Any]]] = {}
        geometry: dict[int, etree._Element] = {}
        multi_surfaces: dict[int, etree._Element] = {}
        footprint_elements = []
        part_elements = []
        boundary_tag = "boundary" if self._is_v3() else "boundedBy"
        part_tag = "buildingPart" if self._is_v3() else "consistsOfBuildingPart"
        for child in element:
            if not isinstance(child.tag, str):
                continue
            local = _local(child.tag)
            namespace = etree.QName(child).namespace
            if child.tag == self._gml("name") and name is None:
                name = child.text
            elif local == "genericAttribute" and namespace == self._d.core:
                for attribute in child:
                    if isinstance(attribute.tag, str):
                        attributes.update(self._generic_attribute(attribute))
            elif namespace == self._d.generics:
                attributes.update(self._generic_attribute(child))
            elif local == boundary_tag and namespace in (self._d.core, self._d.building):
                for surface_element in child:
                    self._thematic_surface(surface_element, index, thematic, kinds)
            elif local in ("lod0MultiSurface", "lod0FootPrint"):
                footprint_elements.append(child)
            elif local.startswith("lod") and local.endswith("Solid") and namespace == self._property_namespace():
                geometry[int(local[3])] = child
            elif local.startswith("lod") and local.endswith("MultiSurface") and namespace == self._property_namespace():
                multi_surfaces[int(local[3])] = child
            elif local == part_tag:
                part_elements.extend(c for c in child if _local(c.tag) == "BuildingPart")
            elif local not in _STRUCTURAL and len(child) == 0 and child.text and child.text.strip():
                attributes.setdefault(local, _simple_value(child.text))
        identifier = _identifier(own_id, name, fallback_id)
        refined = _refined_lods(attributes.get(LODS_ATTRIBUTE))
        carried = attributes.get(BUILDING_LOD_ATTRIBUTE)
        lods: dict[str, Solid] = {}
        for level in sorted({*geometry, *multi_surfaces, *thematic}):
            if level == 0:
                continue
            if level in geometry:
                surfaces = self._surfaces_of(geometry[level], index, kinds)
            elif level in multi_surfaces:
                surfaces = self._surfaces_of(multi_surfaces[level], index, kinds)
            else:
                surfaces = thematic[level]
            if surfaces:
                lod = str(carried) if carried is not None else refined.get(level, str(level))
                lods[lod] = Solid(tuple(surfaces))
        footprint = self._footprint(footprint_elements, index)
        return identifier, attributes, lods, footprint, part_elements

    def _thematic_surface(self, element, index, thematic, kinds) -> None:
        kind_name = _local(element.tag)
        attributes: dict[str, Any] = {}
        children = [child for child in element if isinstance(child.tag, str)]
        for child in children:
            local = _local(child.tag)
            if local == "genericAttribute":
                for attribute in child:
                    attributes.update(self._generic_attribute(attribute))
            elif etree.QName(child).namespace == self._d.generics:
                attributes.update(self._generic_attribute(child))
        for child in children:
            local = _local(child.tag)
            if local.startswith("lod") and local.endswith("MultiSurface") and local[3].isdigit():
                level = int(local[3])
                for rings, polygon_id in self._polygons(child, index):
                    kind = _KINDS.get(kind_name) or kind_from_normal(rings)
                    thematic.setdefault(level, []).append(Surface(rings, kind, attributes))
                    if polygon_id:
                        kinds[polygon_id] = (kind, attributes)

    def _surfaces_of(self, element, index, kinds) -> list[Surface]:
        surfaces = []
        for rings, polygon_id in self._polygons(element, index):
            kind, attributes = kinds.get(polygon_id, (None, {}))
            surfaces.append(Surface(rings, kind or kind_from_normal(rings), attributes))
        return surfaces

    def _footprint(self, elements, index) -> shapely.Polygon | None:
        polygons = [
            shapely.make_valid(shapely.Polygon(rings[0][:, :2], [r[:, :2] for r in rings[1:]]))
            for element in elements
            for rings, _ in self._polygons(element, index)
        ]
        polygons = [p for p in polygons if p.area > 0]
        if not polygons:
            return None
        union = shapely.union_all(polygons)
        parts = [p for p in shapely.get_parts(union) if isinstance(p, shapely.Polygon)]
        return max(parts, key=lambda p: p.area) if parts else None

    # Geometry ----------------------------------------------------------------------

    def _polygons(self, element, index, flipped: bool = False, depth: int = 0):
        """(rings, gml:id) of every polygon under `element`, following xlinks."""
        if depth > 50:
            raise InputError(f"{self._path}: geometry nested too deeply (or xlinks in a loop)")
        local = _local(element.tag)
        if local in _POLYGON_LIKE:
            rings = self._rings(element)
            if rings:
                yield (tuple(r[::-1] for r in rings) if flipped else rings), element.get(self._gml("id"))
            return
        href = element.get(_HREF)
        if href:
            target = index.get(href.lstrip("#"))
            if target is None:
                raise InputError(f"{self._path}: the xlink {href} points at no element of its building")
            yield from self._polygons(target, index, flipped, depth + 1)
            return
        if local == "OrientableSurface" and element.get("orientation") == "-":
            flipped = not flipped
        for child in element:
            if not isinstance(child.tag, str):
                continue
            if local == "Solid" and _local(child.tag) != "exterior":
                continue  # a solid's inner shells (voids) are no part of a building's outer shell
            yield from self._polygons(child, index, flipped, depth + 1)

    def _rings(self, polygon) -> tuple[np.ndarray, ...]:
        rings = []
        for boundary in polygon:
            local = _local(boundary.tag)
            if local not in ("exterior", "interior"):
                continue
            for ring in boundary:
                coordinates = self._ring_coordinates(ring)
                if coordinates is not None:
                    rings.append(coordinates)
        return tuple(rings)

    def _ring_coordinates(self, ring) -> np.ndarray | None:
        try:
            return self._parse_ring(ring)
        except ValueError:
            raise InputError(f"{self._path}: a ring's coordinates are not numbers (line {ring.sourceline})") from None

    def _parse_ring(self, ring) -> np.ndarray | None:
        pos_list = ring.find(self._gml("posList"))
        if pos_list is not None:
            dimension = int(pos_list.get("srsDimension") or _inherited_dimension(ring) or 3)
            values = np.array((pos_list.text or "").split(), dtype=float)
        else:
            positions = ring.findall(self._gml("pos"))
            if not positions:
                return None
            rows = [np.array((p.text or "").split(), dtype=float) for p in positions]
            dimension = len(rows[0])
            values = np.concatenate(rows)
        if dimension not in (2, 3) or len(values) % dimension:
            raise InputError(f"{self._path}: a ring's coordinates do not come in {dimension}s (line {ring.sourceline})")
        points = values.reshape(-1, dimension)
        if dimension == 2:
            points = np.column_stack([points, np.zeros(len(points))])
        if len(points) > 1 and np.array_equal(points[0], points[-1]):
            points = points[:-1]
        return points if len(points) >= 3 else None

    # Attributes --------------------------------------------------------------------

    def _generic_attribute(self, element) -> dict[str, Any]:
        kind = _local(element.tag).lower()
        if self._is_v3():
            name_element = element.find(f"{{{self._d.generics}}}name")
            name = name_element.text if name_element is not None else None
        else:
            name = element.get("name")
        if not name:
            return {}
        if kind == "genericattributeset":
            members: dict[str, Any] = {}
            for child in element:
                if _local(child.tag) == "genericAttribute":
                    for attribute in child:
                        members.update(self._generic_attribute(attribute))
                elif etree.QName(child).namespace == self._d.generics and _local(child.tag) not in ("name", "codeSpace"):
                    members.update(self._generic_attribute(child))
            return {name: members}
        value_element = element.find(f"{{{self._d.generics}}}value")
        text = value_element.text if value_element is not None and value_element.text is not None else ""
        try:
            if kind == "intattribute":
                return {name: int(text)}
            if kind in ("doubleattribute", "measureattribute"):
                return {name: float(text)}
        except ValueError:
            raise InputError(f"{self._path}: attribute {name!r} is not a number ({text!r})") from None
        if kind == "dateattribute":
            return {name: text.strip()}
        return {name: decode_text(text)}


def _inherited_dimension(element) -> str | None:
    while element is not None:
        if element.get("srsDimension"):
            return element.get("srsDimension")
        element = element.getparent()
    return None


def _identifier(own_id: str | None, name: str | None, fallback: str) -> str:
    """The id twin wrote as gml:name when the gml:id is its NCName form, else the gml:id."""
    if name is not None and own_id is not None and gml_id(name) == own_id:
        return name
    return own_id or name or fallback


def _refined_lods(value: Any) -> dict[int, str]:
    if not isinstance(value, str):
        return {}
    return {lod_level(lod): lod for lod in value.split()}


def _without_reserved(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k not in RESERVED_ATTRIBUTES}


def _simple_value(text: str) -> Any:
    stripped = text.strip()
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return stripped
