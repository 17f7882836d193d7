"""Attribute values as typed scalars for formats without lists or nulls (CityGML, GeoPackage).

CityJSON keeps an attribute's JSON value as it is; CityGML generic attributes and
GeoPackage columns hold one typed scalar each. The mapping, shared by the writers and
undone by the readers (`decode_text`):

- int -> integer, float -> double (non-finite floats are absent), bool -> the text
  `true` / `false`;
- a string holding an ISO date (YYYY-MM-DD) -> date; any other string -> string;
- lists and mappings (validity codes, footprint notes...) -> their JSON text, e.g. `[203, 302]`;
- None -> absent (neither format has a null generic attribute).
"""

from __future__ import annotations

import datetime
import enum
import json
import math
import re
from typing import Any, Mapping

import numpy as np

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ValueType(enum.StrEnum):
    INT = "int"
    DOUBLE = "double"
    DATE = "date"
    STRING = "string"


def typed_value(value: Any) -> tuple[ValueType, Any] | None:
    """(type, Python value of that type) for one attribute value; None when absent."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    if isinstance(value, bool):
        return ValueType.STRING, "true" if value else "false"
    if isinstance(value, int):
        return ValueType.INT, value
    if isinstance(value, float):
        return (ValueType.DOUBLE, value) if math.isfinite(value) else None
    if isinstance(value, str):
        return (ValueType.DATE, value) if is_iso_date(value) else (ValueType.STRING, value)
    if isinstance(value, (list, tuple, Mapping)):
        return ValueType.STRING, json.dumps(json_value(value), ensure_ascii=False)
    return ValueType.STRING, str(value)


def value_text(value_type: ValueType, value: Any) -> str:
    """The XML text of a typed value (shortest text that reads back to the same double)."""
    return repr(value) if value_type is ValueType.DOUBLE else str(value)


def decode_text(text: str) -> Any:
    """A string attribute back to its value: JSON lists, mappings and booleans are decoded."""
    stripped = text.strip()
    if stripped in ("true", "false") or stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return text
    return text


def is_iso_date(text: str) -> bool:
    if not _ISO_DATE.fullmatch(text):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def json_value(value: Any) -> Any:
    """An attribute value as plain JSON: numpy scalars unwrapped, non-finite floats null,
    anything else unknown as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
