"""Commune boundaries (or any administrative units) with their INSEE codes.

A building belongs to the commune that contains its footprint's centroid (for a
footprint whose centroid falls outside it, such as a U-shape, its representative
point, which is always inside), so every building has at most one commune.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pyproj
import shapely

from twin.errors import InputError
from twin.model import Commune

CODE_FIELD_CANDIDATES = ("code_insee", "insee_com", "insee", "code_com", "code")
NAME_FIELD_CANDIDATES = ("nom", "nom_com", "name", "nom_officiel")


@dataclass(frozen=True, eq=False)
class CommuneSet:
    path: str
    code_field: str
    crs: pyproj.CRS | None
    communes: tuple[Commune, ...]

    def assign(self, footprints: list[shapely.Polygon]) -> list[str | None]:
        """The code of the commune holding each footprint's centroid, or None."""
        anchors = [
            f.centroid if f.contains(f.centroid) else f.representative_point() for f in footprints
        ]
        tree = shapely.STRtree([c.polygon for c in self.communes])
        found = tree.query(anchors, predicate="within")
        codes: list[str | None] = [None] * len(footprints)
        for footprint_index, commune_index in sorted(zip(*found.tolist())):
            if codes[footprint_index] is None:  # a point on a shared border goes to the first commune
                codes[footprint_index] = self.communes[commune_index].code
        return codes


def read_communes(path: str | Path, code_field: str | None = None) -> CommuneSet:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path given to --communes")
    try:
        meta, _, wkb, values = pyogrio.raw.read(path)
    except Exception as error:
        raise InputError(f"{path}: cannot be read as a vector file ({error})") from None
    fields = list(meta["fields"])
    lower = {name.lower(): name for name in fields}
    if code_field is None:
        code_field = next((lower[c] for c in CODE_FIELD_CANDIDATES if c in lower), None)
        if code_field is None:
            raise InputError(
                f"{path}: no commune code field among {', '.join(CODE_FIELD_CANDIDATES)}; "
                f"name it with --commune-field (fields: {', '.join(fields) or 'none'})"
            )
    elif code_field not in fields:
        raise InputError(f"{path}: no field named {code_field!r}; fields: {', '.join(fields) or 'none'}")
    name_field = next((lower[c] for c in NAME_FIELD_CANDIDATES if c in lower), None)
    codes = values[fields.index(code_field)]
    names = values[fields.index(name_field)] if name_field else [""] * len(codes)
    communes = []
    for code, name, geometry in zip(codes, names, shapely.from_wkb(wkb)):
        text = "" if code is None else str(code.item() if isinstance(code, np.generic) else code).strip()
        if not text:
            raise InputError(f"{path}: a commune has an empty {code_field!r}; every commune needs its code")
        if geometry is None or geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{path}: commune {text} has no polygon geometry")
        communes.append(Commune(text, str(name or ""), shapely.make_valid(shapely.force_2d(geometry))))
    duplicates = sorted({c.code for c in communes if sum(o.code == c.code for o in communes) > 1})
    if duplicates:
        raise InputError(f"{path}: commune codes appear twice ({', '.join(duplicates[:5])}); merge those polygons")
    crs = pyproj.CRS(meta["crs"]) if meta.get("crs") else None
    return CommuneSet(str(path), code_field, crs, tuple(sorted(communes, key=lambda c: c.code)))
