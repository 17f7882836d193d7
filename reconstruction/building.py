"""One building from its cropped points: the chain of steps, with a status and reason.

`reconstruct_building` never raises for a bad building: whatever goes wrong becomes the
building's status and reason, so one building never sinks a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reconstruction import ground as ground_step
from reconstruction.extrude import ExtrusionError, extrude_flat
from reconstruction.geometry import solid_volume
from reconstruction.heightfield import rasterize
from reconstruction.lod1 import lod13_parts, roof_heights
from reconstruction.orientation import dominant_angle
from reconstruction.validate import validate_parts, validate_solid
from twin.config import BuildConfig
from twin.gpstime import gps_date
from twin.model import Building, BuildingPart, Footprint, Status, TerrainGrid

MIN_ROOF_CLEARANCE_M = 0.5
"""A roof must stand at least this far above the ground to make a building."""


@dataclass(frozen=True, eq=False)
class BuildingInputs:
    """Everything one building needs, already cropped from the run's data."""

    footprint: Footprint
    roof_points: np.ndarray
    """(n, 3) building-class points inside the footprint."""
    ring_ground: np.ndarray
    """(m, 3) ground points within the ground ring around the footprint."""
    nearby_ground: np.ndarray
    """(k, 3) ground points within the nearest-ground search radius, needed only when the
    ring has too few (otherwise the ring's points)."""
    terrain: TerrainGrid | None
    roof_gps_time: np.ndarray | None = None
    """Adjusted standard GPS time of the roof points, when the input carries it."""
    in_coverage: bool = True
    """Whether the footprint lies where the point files have data at all."""


def reconstruct_building(inputs: BuildingInputs, config: BuildConfig) -> Building:
    footprint = inputs.footprint
    base = {
        "footprint_area": round(footprint.polygon.area, 3),
        "point_count": int(len(inputs.roof_points)),
        "point_density": round(len(inputs.roof_points) / footprint.polygon.area, 2),
    }
    if footprint.notes:
        base["footprint_notes"] = list(footprint.notes)
    if not inputs.in_coverage:
        return _without_geometry(footprint, Status.NO_POINTS, "the footprint lies outside the point files' extent", base)
    if len(inputs.roof_points) < config.lod1.min_roof_points:
        return _without_geometry(
            footprint,
            Status.NO_POINTS,
            f"{len(inputs.roof_points)} building point(s) inside the footprint "
            f"({len(inputs.ring_ground)} ground points around): the building is missing from the scan, "
            "misclassified, or demolished",
            base,
        )
    try:
        return _reconstruct(inputs, config, base)
    except (ExtrusionError, ValueError, ArithmeticError) as error:
        return _without_geometry(footprint, Status.FAILED, f"reconstruction failed: {error}", base)


def _reconstruct(inputs: BuildingInputs, config: BuildConfig, attributes: dict[str, Any]) -> Building:
    footprint = inputs.footprint
    polygon = footprint.polygon
    ground = ground_step.estimate_ground(
        polygon, inputs.ring_ground, inputs.nearby_ground, inputs.terrain, footprint.attributes, config.ground
    )
    if ground is None:
        return _without_geometry(
            footprint,
            Status.FAILED,
            f"no ground height: no ground point within {config.ground.nearest_radius_m:g} m, no tile terrain "
            "and no ground altitude attribute",
            attributes,
        )
    attributes["h_ground"] = round(ground.height, 3)
    attributes["ground_method"] = ground.method

    field = rasterize(inputs.roof_points, polygon, config.lod1.cell_size_m, dominant_angle(polygon))
    roof = roof_heights(field, config.lod1)
    if roof is None:
        return _without_geometry(footprint, Status.NO_POINTS, "no roof cell inside the footprint", attributes)
    attributes.update(
        h_roof_min=round(roof.min, 3),
        h_roof_50p=round(roof.p50, 3),
        h_roof_70p=round(roof.p70, 3),
        h_roof_max=round(roof.max, 3),
        nodata_fraction=round(roof.nodata_fraction, 3),
    )
    date = _acquisition_date(inputs.roof_gps_time)
    if date is not None:
        attributes["acquisition_date"] = date
    if roof.lod1 < ground.height + MIN_ROOF_CLEARANCE_M:
        return _without_geometry(
            footprint,
            Status.FAILED,
            f"the roof ({roof.lod1:.2f} m) is not above the ground ({ground.height:.2f} m): "
            "check the classification of the points",
            attributes,
        )

    lod12 = extrude_flat(polygon, ground.height, roof.lod1)
    parts = lod13_parts(field, polygon, config.lod1)
    for part in parts:
        if part.height < ground.height + MIN_ROOF_CLEARANCE_M:
            raise ExtrusionError(f"a LOD1.3 part's roof ({part.height:.2f} m) is not above the ground")
    lod13_solids = [extrude_flat(part.polygon, ground.height, part.height) for part in parts]

    attributes.update(
        height_lod12=round(roof.lod1 - ground.height, 3),
        volume_lod12=round(solid_volume(lod12), 3),
        volume_lod13=round(sum(solid_volume(s) for s in lod13_solids), 3),
        lod13_part_count=len(parts),
        validity_lod12=validate_solid(lod12),
        validity_lod13=validate_parts(lod13_solids),
    )
    if ground.method in ground_step.PRIMARY_METHODS:
        status, reason = Status.BUILT, f"ground from {ground.method} ({ground.detail})"
    else:
        status, reason = Status.FALLBACK, f"ground from {ground.method}: {ground.detail}"
    attributes["status"], attributes["reason"] = str(status), reason

    lods = {"1.2": lod12}
    building_parts: tuple[BuildingPart, ...] = ()
    if len(parts) == 1:
        lods["1.3"] = lod13_solids[0]
    else:
        building_parts = tuple(
            BuildingPart(
                f"{footprint.id}-part{k}",
                {"1.3": solid},
                {"h_roof": round(part.height, 3), "area": round(part.polygon.area, 3)},
            )
            for k, (part, solid) in enumerate(zip(parts, lod13_solids), start=1)
        )
    return Building(footprint.id, polygon, status, reason, _with_source(footprint, attributes), lods, building_parts)


def _without_geometry(footprint: Footprint, status: Status, reason: str, attributes: dict[str, Any]) -> Building:
    attributes = {**attributes, "status": str(status), "reason": reason}
    return Building(footprint.id, footprint.polygon, status, reason, _with_source(footprint, attributes))


def _with_source(footprint: Footprint, attributes: dict[str, Any]) -> dict[str, Any]:
    """The footprint's own attributes, then ours; a clashing source name gets a `source_` prefix."""
    merged: dict[str, Any] = {}
    for name, value in footprint.attributes.items():
        if value is None:
            continue
        merged[f"source_{name}" if name in attributes else name] = value
    merged.update(attributes)
    return merged


def _acquisition_date(gps_time: np.ndarray | None) -> str | None:
    if gps_time is None or len(gps_time) == 0:
        return None
    return gps_date(float(np.median(gps_time)))
