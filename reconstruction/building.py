"""One building from its cropped points: the chain of steps, with a status and reason.

`reconstruct_building` never raises for a bad building: whatever goes wrong becomes the
building's status and reason, so one building never sinks a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reconstruction import ground as ground_step
from reconstruction import quality
from reconstruction.extrude import ExtrusionError, Plane, RoofFace, extrude_flat
from reconstruction.geometry import solid_volume
from reconstruction.heightfield import rasterize
from reconstruction.lod1 import lod13_parts, roof_heights
from reconstruction.lod2 import Lod2Failure, reconstruct_lod2
from reconstruction.orientation import dominant_angle
from reconstruction.validate import validate_parts, validate_solid
from twin.config import BuildConfig
from twin.gpstime import gps_date
from twin.model import Building, BuildingPart, Footprint, Solid, Status, SurfaceKind, TerrainGrid

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
    inner_ground: np.ndarray = field(default_factory=lambda: np.empty((0, 3)))
    """(j, 3) ground points inside the footprint (seen through courtyards and gaps)."""


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
    except Exception as error:  # any failure stays this building's: the run goes on
        return _without_geometry(
            footprint, Status.FAILED, f"reconstruction failed: {type(error).__name__}: {error}", base
        )


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

    heightfield = rasterize(inputs.roof_points, polygon, config.lod1.cell_size_m, dominant_angle(polygon))
    roof = roof_heights(heightfield, config.lod1)
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
    parts = lod13_parts(heightfield, polygon, config.lod1)
    for part in parts:
        if part.height < ground.height + MIN_ROOF_CLEARANCE_M:
            raise ExtrusionError(f"a LOD1.3 part's roof ({part.height:.2f} m) is not above the ground")
    lod13_solids = [extrude_flat(part.polygon, ground.height, part.height) for part in parts]
    lod22, lod22_faces, lod2_failure = _lod22(inputs, ground.height, heightfield, roof, lod12, config)
    validity_lod12 = validate_solid(lod12)
    rmse_lod12, rmse_lod13 = quality.prism_rmses(
        inputs.roof_points,
        [[(polygon, ground.height, roof.lod1)], [(part.polygon, ground.height, part.height) for part in parts]],
    )

    attributes.update(
        height_lod12=round(roof.lod1 - ground.height, 3),
        volume_lod12=round(solid_volume(lod12), 3),
        volume_lod13=round(sum(solid_volume(s) for s in lod13_solids), 3),
        volume_lod22=round(solid_volume(lod22), 3),
        lod13_part_count=len(parts),
        validity_lod12=validity_lod12,
        validity_lod13=validate_parts(lod13_solids),
        # LOD2.2 reconstruction returns only solids that pass the same validation.
        validity_lod22=validity_lod12 if lod2_failure else [],
        rmse_lod12=_rounded(rmse_lod12),
        rmse_lod13=_rounded(rmse_lod13),
        rmse_lod22=_rounded(quality.rmse(inputs.roof_points, [lod22])),
    )
    attributes.update(_roof_attributes(lod22, lod22_faces, lod2_failure, ground.height))

    reasons = []
    if ground.method not in ground_step.PRIMARY_METHODS:
        reasons.append(f"ground from {ground.method}: {ground.detail}")
    if lod2_failure is not None:
        reasons.append(f"LOD2.2 is a LOD1.2 block: {lod2_failure}")
    if reasons:
        status, reason = Status.FALLBACK, "; ".join(reasons)
    else:
        status, reason = Status.BUILT, f"ground from {ground.method} ({ground.detail})"
    attributes["status"], attributes["reason"] = str(status), reason
    attributes["quality"] = quality.quality_flag(
        str(status),
        not (attributes["validity_lod12"] or attributes["validity_lod13"] or attributes["validity_lod22"]),
        attributes["rmse_lod22"],
        roof.nodata_fraction,
    )

    lods = {"1.2": lod12, "2.2": lod22}
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


def _lod22(inputs: BuildingInputs, ground_z: float, heightfield, roof, lod12: Solid, config: BuildConfig):
    """The LOD2.2 solid and its roof faces, or the LOD1.2 block and the reason it stands in."""
    try:
        result = reconstruct_lod2(
            inputs.roof_points, inputs.inner_ground, inputs.footprint.polygon, ground_z, heightfield,
            roof.nodata_fraction, config.lod2,
        )
        return result.solid, list(result.faces), None
    except Lod2Failure as failure:
        return lod12, [RoofFace(inputs.footprint.polygon, Plane.horizontal(roof.lod1))], str(failure)


def _roof_attributes(solid: Solid, faces: list[RoofFace], failure: str | None, ground_z: float) -> dict[str, Any]:
    roofs = [s for s in solid.surfaces if s.kind == SurfaceKind.ROOF]
    roof_z = np.concatenate([ring[:, 2] for s in roofs for ring in s.rings])
    sloped_z = [ring[:, 2] for s in roofs for ring in s.rings if s.attributes.get("slope", 0) >= quality.HORIZONTAL_DEG]
    eave = float(np.min(np.concatenate(sloped_z))) if sloped_z else float(np.max(roof_z))
    ridge = float(np.max(roof_z))
    areas = quality.surface_areas(solid)
    return {
        "roof_type": "could not detect" if failure else quality.roof_type(faces),
        "roof_plane_count": 0 if failure else len({id(f.plane) for f in faces}),
        "h_ridge": round(ridge, 3),
        "area_ground": round(areas.ground, 2),
        "area_roof_flat": round(areas.flat_roof, 2),
        "area_roof_sloped": round(areas.sloped_roof, 2),
        "area_wall": round(areas.wall, 2),
        "storeys": quality.storeys(ground_z, eave, ridge),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


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
