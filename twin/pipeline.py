"""The run: inputs -> model -> reconstruction per building -> exporters.

`build` is the Python entry point behind `twin build`; it returns the `CityModel`, so a
notebook gets the same buildings the CLI writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import shapely

import exporters
from reconstruction.building import BuildingInputs, reconstruct_building
from reconstruction.crop import build_grid_index, indices_in_polygon
from twin.config import BuildConfig
from twin.errors import InputError
from twin.geodesy import crs_uri, horizontal_part
from twin.inputs.communes import CommuneSet, read_communes
from twin.inputs.footprints import FootprintSet, read_footprints
from twin.inputs.points import KeepMask, open_sources, read_points
from twin.model import Building, CityModel, PointCloud, Status, TerrainGrid
from twin.report import write_run_records

DEFAULT_FORMATS = ("cityjson",)
OUTSIDE_COMMUNES = ("unassigned", "refuse")


def software_version() -> str:
    try:
        return version("twin")
    except PackageNotFoundError:
        return "unknown"


class Progress:
    """Callbacks a caller may give to follow a run; the default does nothing."""

    def stage(self, name: str, total: int) -> None:
        """A new stage starts, with `total` units of work (points or buildings)."""

    def advance(self, amount: int = 1) -> None:
        """`amount` more units of the current stage are done."""


def build(
    points: Sequence[str | Path],
    footprints: str | Path,
    out_dir: str | Path | None = None,
    formats: Sequence[str] = DEFAULT_FORMATS,
    config: BuildConfig = BuildConfig(),
    crs: str | None = None,
    vertical_crs: str | None = None,
    id_field: str | None = None,
    layer: str | None = None,
    communes: str | Path | None = None,
    commune_field: str | None = None,
    outside_communes: str = "unassigned",
    progress: Progress | None = None,
) -> CityModel:
    """Builds LOD1.2 and LOD1.3 buildings; writes `formats` into `out_dir` when given.

    With `communes` (an OGR file of commune polygons), each building gets the `commune`
    attribute: the code of the commune holding its footprint's centroid. Buildings outside
    every commune keep an empty commune (`outside_communes="unassigned"`) or stop the run
    before anything is written (`"refuse"`).
    """
    if outside_communes not in OUTSIDE_COMMUNES:
        raise ValueError(f"outside_communes must be one of {', '.join(OUTSIDE_COMMUNES)}")
    progress = progress or Progress()
    chosen_exporters = [exporters.get(name) for name in dict.fromkeys(formats)]
    if out_dir is not None:
        out_dir = _prepare_out_dir(Path(out_dir))

    footprint_set = read_footprints(footprints, id_field=id_field, layer=layer)
    sources, model_crs, notes = open_sources(points, crs, vertical_crs)
    notes = list(footprint_set.notes) + notes
    notes += _check_crs(footprint_set.path, footprint_set.crs, model_crs)
    commune_set = read_communes(communes, commune_field) if communes is not None else None
    if commune_set is not None:
        notes += _check_crs(commune_set.path, commune_set.crs, model_crs)
        if outside_communes == "refuse":
            _refuse_outside_communes(commune_set, footprint_set)
    for exporter in chosen_exporters:
        if exporter.check is not None:
            notes += exporter.check(model_crs, config)

    coverage = shapely.union_all([s.footprint() for s in sources])
    covered = [f for f in footprint_set.footprints if f.polygon.intersects(coverage)]
    if footprint_set.footprints and not covered:
        raise InputError(
            f"none of the {len(footprint_set.footprints)} footprints of {footprint_set.path} overlaps the point files "
            f"(points cover {_bounds_text(coverage)}, footprints cover "
            f"{_bounds_text(shapely.union_all([f.polygon for f in footprint_set.footprints]))}); "
            "check that both are in the same CRS and the same area"
        )
    reach = max(config.ground.ring_width_m, config.ground.nearest_radius_m)
    keep = KeepMask.around(shapely.union_all([f.polygon.envelope.buffer(reach) for f in covered])) if covered else None
    progress.stage("reading points", sum(s.point_count for s in sources))
    cloud, terrain, sources = read_points(sources, model_crs, config.classes, keep, progress.advance)

    progress.stage("reconstructing buildings", len(footprint_set.footprints) + len(footprint_set.rejected))
    buildings = list(_reconstruct_all(footprint_set, cloud, terrain, coverage, config, progress))
    buildings.sort(key=lambda b: b.id)
    if commune_set is not None:
        codes = commune_set.assign([b.footprint for b in buildings])
        buildings = [replace(b, attributes={**b.attributes, "commune": code}) for b, code in zip(buildings, codes)]
        notes += _commune_notes(commune_set, buildings)

    metadata = _metadata(footprint_set, sources, model_crs, config, notes, buildings, crs, vertical_crs)
    if commune_set is not None:
        metadata["inputs"]["communes"] = {"path": commune_set.path, "code_field": commune_set.code_field}
    model = CityModel(tuple(buildings), model_crs, metadata, commune_set.communes if commune_set else ())
    if out_dir is not None:
        for exporter in chosen_exporters:
            exporter.export(model, out_dir, config)
        write_run_records(model, out_dir)
    return model


def _reconstruct_all(
    footprint_set: FootprintSet,
    cloud: PointCloud,
    terrain: TerrainGrid,
    coverage: shapely.Geometry,
    config: BuildConfig,
    progress: Progress,
):
    is_building = np.isin(cloud.classification, config.classes.building)
    is_ground = np.isin(cloud.classification, config.classes.ground)
    roof_xyz, ground_xyz = cloud.xyz[is_building], cloud.xyz[is_ground]
    roof_time = cloud.gps_time[is_building] if cloud.gps_time is not None else None
    roof_index = build_grid_index(roof_xyz[:, :2])
    ground_index = build_grid_index(ground_xyz[:, :2])
    ground = config.ground
    for footprint in footprint_set.footprints:
        polygon = footprint.polygon
        roof = indices_in_polygon(roof_index, roof_xyz[:, :2], polygon)
        ring_region = polygon.buffer(ground.ring_width_m).difference(polygon)
        ring_xyz = ground_xyz[indices_in_polygon(ground_index, ground_xyz[:, :2], ring_region)]
        nearby_xyz = ring_xyz
        if len(ring_xyz) < ground.min_points:  # only the fallback needs the wider search
            wider = polygon.buffer(ground.nearest_radius_m)
            nearby_xyz = ground_xyz[indices_in_polygon(ground_index, ground_xyz[:, :2], wider)]
        inputs = BuildingInputs(
            footprint=footprint,
            roof_points=roof_xyz[roof],
            ring_ground=ring_xyz,
            nearby_ground=nearby_xyz,
            terrain=terrain,
            roof_gps_time=roof_time[roof] if roof_time is not None else None,
            in_coverage=polygon.intersects(coverage),
        )
        yield reconstruct_building(inputs, config)
        progress.advance()
    for feature_id, reason in footprint_set.rejected:
        yield Building(
            feature_id,
            shapely.Polygon(),
            Status.FAILED,
            reason,
            {"status": str(Status.FAILED), "reason": reason},
        )
        progress.advance()


def _refuse_outside_communes(commune_set: CommuneSet, footprint_set: FootprintSet) -> None:
    codes = commune_set.assign([f.polygon for f in footprint_set.footprints])
    outside = [f.id for f, code in zip(footprint_set.footprints, codes) if code is None]
    if outside:
        raise InputError(
            f"{footprint_set.path}: {len(outside)} footprints lie outside every commune of {commune_set.path} "
            f"({', '.join(outside[:5])}{'...' if len(outside) > 5 else ''}); extend the commune file, remove them, "
            "or pass --outside-communes unassigned to keep them without a commune"
        )


def _commune_notes(commune_set: CommuneSet, buildings: list[Building]) -> list[str]:
    outside = [b.id for b in buildings if b.attributes["commune"] is None and not b.footprint.is_empty]
    held = {b.attributes["commune"] for b in buildings}
    notes = [
        f"commune {c.code} ({c.name or 'no name'}) of {commune_set.path} holds no building"
        for c in commune_set.communes
        if c.code not in held
    ]
    if outside:
        notes.append(
            f"{len(outside)} buildings lie outside every commune of {commune_set.path} "
            f"({', '.join(outside[:5])}{'...' if len(outside) > 5 else ''}); their commune is empty"
        )
    return notes


def _prepare_out_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".twin-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise InputError(f"{out_dir}: cannot write the outputs there ({error.strerror}); choose another --out") from None
    return out_dir


def _check_crs(path: str, crs, model_crs) -> list[str]:
    """A vector input must be in the points' horizontal CRS; without a CRS it is taken to be."""
    points_horizontal = horizontal_part(model_crs)
    if crs is None:
        return [f"{path}: no CRS; taken to be the points' {points_horizontal.name}"]
    if not horizontal_part(crs).equals(points_horizontal):
        raise InputError(
            f"{path} is in {crs.name} but the points are in {points_horizontal.name}; "
            f"reproject it (e.g. ogr2ogr -t_srs EPSG:{points_horizontal.to_epsg()} out.gpkg {Path(path).name})"
        )
    return []


def _bounds_text(geometry: shapely.Geometry) -> str:
    xmin, ymin, xmax, ymax = geometry.bounds
    return f"x {xmin:.0f}..{xmax:.0f}, y {ymin:.0f}..{ymax:.0f}"


def _metadata(
    footprint_set: FootprintSet,
    sources,
    model_crs,
    config: BuildConfig,
    notes: list[str],
    buildings: list[Building],
    crs: str | None,
    vertical_crs: str | None,
) -> dict[str, Any]:
    dates = sorted(d for s in sources if s.acquisition_dates for d in s.acquisition_dates)
    parameters = {**config.to_dict(), "crs": crs, "vertical_crs": vertical_crs, "id_field": footprint_set.id_field}
    inputs = {
        "points": [s.__dict__ for s in sources],
        "footprints": {
            "path": footprint_set.path,
            "layer": footprint_set.layer,
            "id_field": footprint_set.id_field,
            "crs": footprint_set.crs.to_string() if footprint_set.crs else None,
            "feature_count": len(footprint_set.footprints) + len(footprint_set.rejected),
        },
    }
    identity = json.dumps({"inputs": inputs, "parameters": parameters}, sort_keys=True, default=str)
    point_names = ", ".join(Path(s.path).name for s in sources)
    return {
        "title": f"Buildings LOD1.2/LOD1.3 from {point_names} and {Path(footprint_set.path).name} (twin {software_version()})",
        "identifier": hashlib.sha256(identity.encode()).hexdigest()[:16],
        "reference_date": dates[-1] if dates else None,
        "software": {"name": "twin", "version": software_version()},
        "crs": crs_uri(model_crs),
        "inputs": inputs,
        "parameters": parameters,
        "notes": sorted(set(notes)),
        "building_count": len(buildings),
    }
