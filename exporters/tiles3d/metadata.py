"""Building attributes as 3D Metadata: one schema for the whole model, one property table per tile.

The schema's `building` class has a property per attribute found on any building, typed
from the values it holds (numbers as FLOAT64 or INT32, text as STRING, flags as BOOLEAN,
lists as variable-length arrays), plus `id`, the building's id. Missing values (None,
NaN) are stored as the property's `noData` value, which readers such as CesiumJS report
as absent. Property ids must be identifiers, so other characters become `_`; the
property's `name` keeps the attribute's own name.

The binary layout of a property table (EXT_structural_metadata, 3D Metadata's property
tables) is written by hand: no maintained Python library writes it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from twin.model import Building

SCHEMA_ID = "twin"
BUILDING_CLASS = "building"
ID_PROPERTY = "id"
FLOAT_NO_DATA = float(np.finfo(np.float64).min)
INT_NO_DATA = int(np.iinfo(np.int32).min)
STRING_NO_DATA = ""

AddView = Callable[[bytes, int], int]
"""Adds bytes to the tile's buffer at the given alignment and returns the buffer view's index."""


@dataclass(frozen=True)
class Property:
    key: str
    attribute: str | None  # None: the building's id
    type: str  # STRING, SCALAR or BOOLEAN
    component_type: str | None  # FLOAT64 or INT32 for SCALAR
    array: bool
    has_missing: bool

    def definition(self) -> dict[str, Any]:
        definition: dict[str, Any] = {"name": self.attribute or "id", "type": self.type}
        if self.component_type:
            definition["componentType"] = self.component_type
        if self.array:
            definition["array"] = True
        if self.attribute is None:
            definition["description"] = "The building's id"
            definition["required"] = True
        elif self.has_missing and not self.array:
            definition["noData"] = _no_data(self)
        return definition

    def value(self, building: Building) -> Any:
        if self.attribute is None:
            return building.id
        return _plain(building.attributes.get(self.attribute))


def building_properties(buildings: Sequence[Building]) -> tuple[Property, ...]:
    """The properties of the `building` class, from every attribute of `buildings`, in first-seen order."""
    columns: dict[str, list[Any]] = {}
    for building in buildings:
        for name in building.attributes:
            columns.setdefault(name, [])
    for name, values in columns.items():
        values.extend(_plain(b.attributes.get(name)) for b in buildings)
    properties = [Property(ID_PROPERTY, None, "STRING", None, False, False)]
    keys = {ID_PROPERTY}
    for name, values in columns.items():
        key = _unique_key(name, keys)
        keys.add(key)
        properties.append(_typed(key, name, values))
    return tuple(properties)


def metadata_schema(properties: Iterable[Property], extra_classes: dict[str, Any] | None = None) -> dict[str, Any]:
    classes = {
        BUILDING_CLASS: {
            "name": "Building",
            "description": "A building of the twin, with its attributes; each tile's features are buildings",
            "properties": {p.key: p.definition() for p in properties},
        },
        **(extra_classes or {}),
    }
    return {"id": SCHEMA_ID, "name": "twin buildings", "classes": classes}


def property_table(properties: Sequence[Property], buildings: Sequence[Building], add_view: AddView) -> dict[str, Any]:
    """The property table of `buildings` (feature i is buildings[i]), its columns added with `add_view`."""
    columns = {}
    for prop in properties:
        values = [prop.value(b) for b in buildings]
        columns[prop.key] = _encode(prop, values, add_view)
    return {"class": BUILDING_CLASS, "count": len(buildings), "properties": columns}


def _plain(value: Any) -> Any:
    """A JSON-like value: numpy scalars unwrapped, NaN as None, tuples as lists, objects as text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    return str(value)


def _kind(values: list[Any]) -> str:
    """FLOAT64, INT32, BOOLEAN or STRING: the narrowest type holding every (non-None) value."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOLEAN"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present) and present:
        if all(INT_NO_DATA < v <= np.iinfo(np.int32).max for v in present):
            return "INT32"
        return "FLOAT64"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "FLOAT64"
    return "STRING"


def _typed(key: str, name: str, values: list[Any]) -> Property:
    has_missing = any(v is None for v in values)
    if any(isinstance(v, list) for v in values):
        elements = [e for v in values if v is not None for e in (v if isinstance(v, list) else [v])]
        kind = _kind(elements)
        if kind == "BOOLEAN" or any(e is None for e in elements):
            kind = "STRING"  # no bitstream arrays, no missing elements: such lists are shown as text
        return _property(key, name, kind, array=True, has_missing=has_missing)
    kind = _kind(values)
    if kind == "BOOLEAN" and has_missing:
        kind = "STRING"  # BOOLEAN properties cannot have noData
    return _property(key, name, kind, array=False, has_missing=has_missing)


def _property(key: str, name: str, kind: str, array: bool, has_missing: bool) -> Property:
    if kind in ("FLOAT64", "INT32"):
        return Property(key, name, "SCALAR", kind, array, has_missing)
    return Property(key, name, kind, None, array, has_missing)


def _no_data(prop: Property) -> Any:
    return {"FLOAT64": FLOAT_NO_DATA, "INT32": INT_NO_DATA}.get(prop.component_type or "", STRING_NO_DATA)


def _unique_key(name: str, taken: set[str]) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = re.sub(r"[^A-Za-z0-9_]", "_", ascii_name) or "attribute"
    if key[0].isdigit():
        key = f"_{key}"
    candidate, suffix = key, 2
    while candidate in taken:
        candidate, suffix = f"{key}_{suffix}", suffix + 1
    return candidate


def _encode(prop: Property, values: list[Any], add_view: AddView) -> dict[str, Any]:
    if prop.array:
        arrays = [[] if v is None else (v if isinstance(v, list) else [v]) for v in values]
        offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.uint32)
        elements = [e for a in arrays for e in a]
        column = _encode_scalars(prop, elements, add_view)
        column.update(arrayOffsets=add_view(offsets.tobytes(), 4), arrayOffsetType="UINT32")
        return column
    return _encode_scalars(prop, values, add_view)


def _encode_scalars(prop: Property, values: list[Any], add_view: AddView) -> dict[str, Any]:
    if prop.type == "STRING":
        encoded = [(STRING_NO_DATA if v is None else _text(v)).encode("utf-8") for v in values]
        offsets = np.cumsum([0] + [len(e) for e in encoded]).astype(np.uint32)
        return {
            "values": add_view(b"".join(encoded), 8),
            "stringOffsets": add_view(offsets.tobytes(), 4),
            "stringOffsetType": "UINT32",
        }
    if prop.type == "BOOLEAN":
        bits = np.packbits(np.array([bool(v) for v in values], dtype=bool), bitorder="little")
        return {"values": add_view(bits.tobytes(), 8)}
    dtype = np.float64 if prop.component_type == "FLOAT64" else np.int32
    no_data = _no_data(prop)
    array = np.array([no_data if v is None else v for v in values], dtype=dtype)
    return {"values": add_view(array.tobytes(), 8)}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
