"""Comparison of two city models, for round-trip tests: ids, LoDs, geometry, attributes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from twin.model import CityModel

TOLERANCE_M = 0.001


def comparable(value: Any) -> Any:
    """A value as CityGML can carry it: tuples as lists, non-finite floats absent."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, tuple):
        return [comparable(v) for v in value]
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


def present(attributes) -> dict[str, Any]:
    return {
        k: comparable(v)
        for k, v in attributes.items()
        if v is not None and not (isinstance(v, float) and not math.isfinite(v))
    }


def differences(expected: CityModel, actual: CityModel, footprints: bool = True) -> list[str]:
    """Everything that differs; an empty list when the models agree within 1 mm."""
    found = []
    expected_by_id = {b.id: b for b in expected.buildings}
    actual_by_id = {b.id: b for b in actual.buildings}
    if expected_by_id.keys() != actual_by_id.keys():
        return [f"ids differ: {sorted(expected_by_id.keys() ^ actual_by_id.keys())[:10]}"]
    for identifier, old in expected_by_id.items():
        new = actual_by_id[identifier]
        if present(old.attributes) != present(new.attributes):
            keys = {k for k in present(old.attributes).keys() | present(new.attributes).keys()
                    if present(old.attributes).get(k) != present(new.attributes).get(k)}
            found.append(f"{identifier}: attributes differ in {sorted(keys)}")
        if sorted(old.lods) != sorted(new.lods) or old.available_lods() != new.available_lods():
            found.append(f"{identifier}: LoDs {sorted(old.lods)}/{old.available_lods()} became "
                         f"{sorted(new.lods)}/{new.available_lods()}")
            continue
        if [p.id for p in old.parts] != [p.id for p in new.parts]:
            found.append(f"{identifier}: parts {[p.id for p in old.parts]} became {[p.id for p in new.parts]}")
            continue
        for old_part, new_part in zip(old.parts, new.parts):
            if present(old_part.attributes) != present(new_part.attributes):
                found.append(f"{old_part.id}: attributes differ")
        if (old.status, old.reason) != (new.status, new.reason):
            found.append(f"{identifier}: status {old.status}/{old.reason} became {new.status}/{new.reason}")
        for lod in old.available_lods():
            for old_solid, new_solid in zip(old.solids(lod), new.solids(lod), strict=True):
                if len(old_solid.surfaces) != len(new_solid.surfaces):
                    found.append(f"{identifier} LoD {lod}: surface count differs")
                    continue
                for a, b in zip(old_solid.surfaces, new_solid.surfaces):
                    if a.kind != b.kind or present(a.attributes) != present(b.attributes):
                        found.append(f"{identifier} LoD {lod}: surface kind or attributes differ")
                    if [r.shape for r in a.rings] != [r.shape for r in b.rings]:
                        found.append(f"{identifier} LoD {lod}: ring sizes differ")
                    elif max(np.abs(r - s).max() for r, s in zip(a.rings, b.rings)) > TOLERANCE_M:
                        found.append(f"{identifier} LoD {lod}: vertices moved by more than 1 mm")
        if footprints and old.footprint.symmetric_difference(new.footprint).area > old.footprint.length * TOLERANCE_M:
            found.append(f"{identifier}: footprint differs")
    return found
