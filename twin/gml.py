"""How twin lays out its buildings in CityGML, shared by the writer and the reader.

CityGML has integer LoDs (lod1Solid, lod2Solid); twin's model has refined ones (1.2,
1.3, 2.2). Each LoD goes where the model puts it: a LoD of the building on the
`Building`, a LoD of its parts on `BuildingPart`s. Where the building itself holds two
LoDs of one CityGML level (LOD1.2 and LOD1.3 of a building that LOD1.3 does not split),
the lowest stays on the `Building` and each other one goes into a `BuildingPart` of
its own (`<building id>_lod1.3`) marked with the generic attribute `twin_building_lod`.
So LOD1.2 is always the building's `lod1Solid` and LOD1.3 always sits in
`BuildingPart`s, in CityGML 2.0 and 3.0 alike.

Generic attributes twin adds, and its reader removes again:
- `twin_lods`: the model LoDs of a `Building` or `BuildingPart`, e.g. `1.2 2.2`;
- `twin_building_lod`: on such a `BuildingPart`, the building's LoD it carries;
- `twin_surfaces_only`: the LoDs written as surfaces without a solid, because the
  building's validity attribute for that LoD (`validity_lod13`...) lists errors.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

LODS_ATTRIBUTE = "twin_lods"
BUILDING_LOD_ATTRIBUTE = "twin_building_lod"
SURFACES_ONLY_ATTRIBUTE = "twin_surfaces_only"
RESERVED_ATTRIBUTES = frozenset({LODS_ATTRIBUTE, BUILDING_LOD_ATTRIBUTE, SURFACES_ONLY_ATTRIBUTE})

XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
SCHEMAS = "http://schemas.opengis.net"


@dataclass(frozen=True)
class Dialect:
    """The namespaces and schema locations of one CityGML version."""

    version: str
    core: str
    building: str
    construction: str | None
    generics: str
    gml: str
    schema_locations: tuple[tuple[str, str], ...]

    @property
    def nsmap(self) -> dict[str | None, str]:
        namespaces = {None: self.core, "bldg": self.building, "gen": self.generics, "gml": self.gml,
                      "xlink": XLINK, "xsi": XSI}
        if self.construction:
            namespaces["con"] = self.construction
        return namespaces


CITYGML3 = Dialect(
    version="3.0",
    core="http://www.opengis.net/citygml/3.0",
    building="http://www.opengis.net/citygml/building/3.0",
    construction="http://www.opengis.net/citygml/construction/3.0",
    generics="http://www.opengis.net/citygml/generics/3.0",
    gml="http://www.opengis.net/gml/3.2",
    schema_locations=(
        ("http://www.opengis.net/citygml/3.0", f"{SCHEMAS}/citygml/3.0/core.xsd"),
        ("http://www.opengis.net/citygml/construction/3.0", f"{SCHEMAS}/citygml/3.0/construction.xsd"),
        ("http://www.opengis.net/citygml/building/3.0", f"{SCHEMAS}/citygml/3.0/building.xsd"),
        ("http://www.opengis.net/citygml/generics/3.0", f"{SCHEMAS}/citygml/3.0/generics.xsd"),
    ),
)

CITYGML2 = Dialect(
    version="2.0",
    core="http://www.opengis.net/citygml/2.0",
    building="http://www.opengis.net/citygml/building/2.0",
    construction=None,
    generics="http://www.opengis.net/citygml/generics/2.0",
    gml="http://www.opengis.net/gml",
    schema_locations=(
        ("http://www.opengis.net/citygml/building/2.0", f"{SCHEMAS}/citygml/building/2.0/building.xsd"),
        ("http://www.opengis.net/citygml/generics/2.0", f"{SCHEMAS}/citygml/generics/2.0/generics.xsd"),
    ),
)

DIALECTS = {d.core: d for d in (CITYGML3, CITYGML2)}

_NOT_NCNAME = re.compile(r"[^A-Za-z0-9._-]")
_NCNAME_START = re.compile(r"[A-Za-z_]")


def gml_id(identifier: str) -> str:
    """A valid, stable XML id (NCName) for a building id.

    Ids that already are NCNames are kept as they are. Others get their unsafe
    characters replaced, an `id_` prefix where they start with a digit, and a short
    hash of the original so that two ids differing only in unsafe characters stay apart.
    """
    safe = _NOT_NCNAME.sub("_", identifier)
    if not _NCNAME_START.match(safe):
        safe = f"id_{safe}"
    if safe != identifier:
        safe = f"{safe}_{hashlib.sha1(identifier.encode()).hexdigest()[:8]}"
    return safe


def lod_level(lod: str) -> int:
    """The CityGML LoD of a model LoD: "1.3" -> 1."""
    return int(lod.split(".")[0])
