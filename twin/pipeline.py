"""The run: inputs -> model -> reconstruction per building, unit by unit -> exporters.

`build` is the Python entry point behind `twin build`; it returns the `CityModel`, so a
notebook gets the same buildings the CLI writes. The footprints are planned into units
of work (`twin.region`), which run here, in local processes or on a Dask cluster, and
whose results are kept in a work folder; the outputs are then assembled from every
unit's buildings, sorted by id, by the registered exporters. `update` runs a finished
build again with newer points for part of its area.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping, Sequence

import shapely

import exporters
from reconstruction.outlines import building_outlines
from reconstruction.shared_walls import shared_wall_areas
from twin.config import BuildConfig, ChangeConfig
from twin.errors import InputError
from twin.geodesy import crs_uri, horizontal_part
from twin.imagery.camera import FrameCamera
from twin.imagery.images import ImagesOnDemand
from twin.imagery.readers import load_cameras
from twin.inputs.communes import CommuneSet, read_communes
from twin.inputs.footprints import FootprintSet, read_footprints
from twin.inputs.points import PointSource, joined, open_sources, read_file
from twin.model import Building, CityModel, Footprint, Status
from twin.region.engines import Execution, run_units
from twin.region.unit_run import PreviousResult, UnitResult, UnitTask
from twin.region.units import PointFile, Reach, Unit, plan_units
from twin.region.workdir import WorkDir, loads, remove_leftover_temporaries
from twin.report import write_run_records

DEFAULT_FORMATS = ("cityjson",)
NO_COMMUNE = "no-commune"
log = logging.getLogger("twin")
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

    def units_planned(self, total: int, to_run: int) -> None:
        """The run is cut into `total` units, of which `to_run` were not finished before."""

    def unit_done(self, report: Mapping[str, Any]) -> None:
        """A unit of work finished, was skipped (done by an earlier run) or failed;
        `report` is its entry in the run report (`status`, `unit`, timings, counts...)."""


@dataclass(frozen=True, eq=False)
class _Update:
    """What `update` passes to `build`: the roof change rule and the extents of the
    point files that are new since the last run."""

    change: ChangeConfig
    changed_extents: tuple[tuple[float, float, float, float], ...]


def build(
    points: Sequence[str | Path],
    footprints: str | Path | None = None,
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
    execution: Execution = Execution(),
    per_commune: bool = False,
    images: str | Path | None = None,
    image_interior: str | Path | None = None,
    _update: _Update | None = None,
) -> CityModel:
    """Builds LOD1.2, LOD1.3 and LOD2.2 buildings; writes `formats` into `out_dir` when given.

    Without `footprints`, building outlines are derived from the building points.

    With `communes` (an OGR file of commune polygons), each building gets the `commune`
    attribute: the code of the commune holding its footprint's centroid; with
    `per_commune`, the outputs are written per commune too, in `out_dir/<code>/`.
    Buildings outside every commune keep an empty commune (`outside_communes="unassigned"`)
    or stop the run before anything is written (`"refuse"`).

    The run is cut into units (`execution`): with `execution.work_dir`, finished units
    are kept there and a run started again skips them.

    With `images` (a camera file in a form `twin.imagery.readers.load_cameras` reads, with
    `image_interior` for the forms that do not hold the interior orientation), the roof and
    wall surfaces get textures cut from the images that see them best (`config.textures`);
    the metadata's `textures` records the counts and the images used.
    """
    if outside_communes not in OUTSIDE_COMMUNES:
        raise ValueError(f"outside_communes must be one of {', '.join(OUTSIDE_COMMUNES)}")
    progress = progress or Progress()
    chosen_exporters = [exporters.get(name) for name in dict.fromkeys(formats)]
    if out_dir is not None:
        out_dir = _prepare_out_dir(Path(out_dir))

    sources, model_crs, notes = open_sources(points, crs, vertical_crs)
    if footprints is None:
        footprint_set = _derived_footprints(sources, config)
        notes += list(footprint_set.notes)
    else:
        footprint_set = read_footprints(footprints, id_field=id_field, layer=layer)
        notes = list(footprint_set.notes) + notes + _check_crs(footprint_set.path, footprint_set.crs, model_crs)
    commune_set = read_communes(communes, commune_field) if communes is not None else None
    if commune_set is not None:
        notes += _check_crs(commune_set.path, commune_set.crs, model_crs)
        if outside_communes == "refuse":
            _refuse_outside_communes(commune_set, footprint_set)
    for exporter in chosen_exporters:
        if exporter.check is not None:
            notes += exporter.check(model_crs, config)
    if per_commune and commune_set is None:
        raise InputError("per-commune outputs need the commune polygons: pass --communes")
    imagery = _Imagery.open(Path(images), model_crs, image_interior) if images is not None else None
    if imagery is not None:
        notes += imagery.notes
    untextured = [e.name for e in chosen_exporters if e.drops_textures]
    if imagery is not None and untextured:
        notes.append(f"{', '.join(untextured)} carry no textures; CityJSON (atlases) and 3D Tiles do")

    coverage = shapely.union_all([s.footprint() for s in sources])
    covered = [f for f in footprint_set.footprints if f.polygon.intersects(coverage)]
    if footprint_set.footprints and not covered:
        raise InputError(
            f"none of the {len(footprint_set.footprints)} footprints of {footprint_set.path} overlaps the point files "
            f"(points cover {_bounds_text(coverage)}, footprints cover "
            f"{_bounds_text(shapely.union_all([f.polygon for f in footprint_set.footprints]))}); "
            "check that both are in the same CRS and the same area"
        )
    parameters = _parameters(config, crs, vertical_crs, footprint_set.id_field)
    # Texturing runs after the units: its parameters do not make finished units stale.
    unit_parameters = {k: v for k, v in parameters.items() if k != "textures"}
    identity = {"software": software_version(), "parameters": unit_parameters, "crs": model_crs.to_wkt()}
    files = [PointFile.of(s) for s in sources]
    units = plan_units(footprint_set.footprints, files, execution.unit_size_m, Reach.of(config.ground), identity)
    spec = {
        "points": [s.path for s in sources],
        "files": [f.__dict__ for f in files],
        "footprints": str(footprints) if footprints is not None else None,
        "out_dir": str(out_dir) if out_dir is not None else None,
        "formats": list(dict.fromkeys(formats)),
        "options": {"crs": crs, "vertical_crs": vertical_crs, "id_field": id_field, "layer": layer,
                    "communes": str(communes) if communes is not None else None, "commune_field": commune_field,
                    "per_commune": per_commune, "images": str(images) if images is not None else None,
                    "image_interior": str(image_interior) if image_interior is not None else None},
        "parameters": config.to_dict(),
        "unit_size_m": execution.unit_size_m,
    }
    with _work_folder(execution.work_dir) as work:
        results = _run_units(units, config, work, execution, spec, progress, _update)
        buildings, file_dates = _assemble(units, results, work)
    buildings += [_rejected(feature_id, reason) for feature_id, reason in footprint_set.rejected]
    buildings.sort(key=lambda b: b.id)
    buildings = with_shared_walls(buildings)
    sources = [replace(s, acquisition_dates=file_dates.get(s.path)) for s in sources]
    if commune_set is not None:
        codes = commune_set.assign([b.footprint for b in buildings])
        buildings = [replace(b, attributes={**b.attributes, "commune": code}) for b, code in zip(buildings, codes)]
        notes += _commune_notes(commune_set, buildings)

    texturing = None
    if imagery is not None:
        # Imported here: texturing loads open3d and OpenCV, over half a second at the start
        # of every run, most of which have no images.
        from reconstruction.texturing import texture_buildings

        progress.stage("textures", len(buildings))
        buildings, report = texture_buildings(buildings, imagery.cameras, imagery.images, config.textures)
        progress.advance(len(buildings))
        texturing = {"cameras": imagery.path, **report.to_dict()}
    metadata = _metadata(footprint_set, sources, model_crs, config, notes, buildings, crs, vertical_crs)
    if texturing is not None:
        metadata["textures"] = texturing
    if commune_set is not None:
        metadata["inputs"]["communes"] = {
            "path": commune_set.path,
            "code_field": commune_set.code_field,
            "names": {c.code: c.name for c in commune_set.communes},
        }
    model = CityModel(tuple(buildings), model_crs, metadata, commune_set.communes if commune_set else ())
    if out_dir is not None:
        for part, folder in _output_sets(model, out_dir, per_commune):
            for exporter in chosen_exporters:
                exporter.export(part, folder, config)
            write_run_records(part, folder)
        if per_commune:
            write_run_records(model, out_dir)
    return model


def update(
    work_dir: str | Path,
    points: Sequence[str | Path],
    out_dir: str | Path | None = None,
    change: ChangeConfig = ChangeConfig(),
    progress: Progress | None = None,
    execution: Execution = Execution(),
) -> CityModel:
    """Runs the last build of `work_dir` again with newer point files for part of its
    area: buildings whose roof changed are rebuilt from the new points and record the
    change (`roof_change`: both dates); the others are kept as they were.

    Each new file replaces the files of the last run it covers for the most part (same
    tile, newer acquisition); the other files stay.
    """
    work_dir = Path(work_dir)
    manifest = WorkDir(work_dir).read_manifest() if work_dir.is_dir() else None
    if manifest is None:
        raise InputError(f"{work_dir}: no earlier run here (no manifest.json); give the --work-dir of a twin build")
    spec = manifest["spec"]
    options = spec["options"]
    new_sources, _, _ = open_sources(points, options["crs"], options["vertical_crs"])
    new_paths = [s.path for s in new_sources]
    new_boxes = [s.footprint() for s in new_sources]
    replaced = [
        f for f in spec["files"]
        if f["path"] not in new_paths and _covered_share(shapely.box(*f["bounds"]), new_boxes) > 0.5
    ]
    kept = [p for p in spec["points"] if p not in new_paths and p not in {f["path"] for f in replaced}]
    extents = tuple(tuple(box.bounds) for box in new_boxes) + tuple(tuple(f["bounds"]) for f in replaced)
    return build(
        points=kept + new_paths,
        footprints=spec["footprints"],
        out_dir=out_dir if out_dir is not None else spec["out_dir"],
        formats=spec["formats"],
        config=_config_from(spec["parameters"]),
        crs=options["crs"],
        vertical_crs=options["vertical_crs"],
        id_field=options["id_field"],
        layer=options["layer"],
        communes=options["communes"],
        commune_field=options["commune_field"],
        per_commune=options["per_commune"],
        images=options.get("images"),
        image_interior=options.get("image_interior"),
        progress=progress,
        execution=replace(execution, work_dir=work_dir, unit_size_m=spec["unit_size_m"]),
        _update=_Update(change, extents),
    )


@dataclass(frozen=True)
class _Imagery:
    """The cameras of a camera file and their images, each read when texturing asks for it."""

    path: str
    cameras: tuple[FrameCamera, ...]
    images: ImagesOnDemand
    notes: list[str]

    @staticmethod
    def open(path: Path, model_crs, interior: Path | None = None) -> "_Imagery":
        """Reads the camera file (forms that convert, OpenSfM and lat/lon tables, into the
        points' CRS) and checks, before the long part of the run, that the cameras are in the
        points' CRS, heights included, and that every image exists."""
        cameras = load_cameras(path, interior=interior, into_crs=model_crs)
        notes = set()
        model_vertical = model_crs.sub_crs_list[1] if model_crs.is_compound else None
        for camera in cameras:
            if camera.crs is not None and not horizontal_part(camera.crs).to_2d().equals(horizontal_part(model_crs).to_2d()):
                raise InputError(
                    f"{path}: the cameras are in {camera.crs.name} but the points are in "
                    f"{horizontal_part(model_crs).name}; give the camera centres in the points' CRS"
                )
            # Camera heights in another datum than the buildings' (ellipsoidal against NGF-IGN69,
            # some 44 m apart) would cut every patch from the wrong place.
            if camera.crs is None or model_vertical is None:
                continue
            if camera.crs.is_compound:
                if not camera.crs.sub_crs_list[1].equals(model_vertical):
                    raise InputError(
                        f"{path}: the camera heights are in {camera.crs.sub_crs_list[1].name} but the points' are in "
                        f"{model_vertical.name}; give the camera centres with {model_vertical.name} heights"
                    )
            elif len(camera.crs.axis_info) == 3:
                raise InputError(
                    f"{path}: the camera heights are ellipsoidal but the points' are in {model_vertical.name}; "
                    f"give the camera centres with {model_vertical.name} heights"
                )
            else:
                notes.add(f"{path}: the cameras' CRS names no vertical datum; their heights are taken as {model_vertical.name}")
        # Texturing asks for each image once, camera after camera: one in memory at a time.
        return _Imagery(str(path), tuple(cameras), ImagesOnDemand(cameras, path, keep=1), sorted(notes))


def _run_units(
    units: Sequence[Unit],
    config: BuildConfig,
    work: WorkDir,
    execution: Execution,
    spec: dict[str, Any],
    progress: Progress,
    update: _Update | None = None,
) -> dict[str, str | None]:
    """Runs the units not finished yet; returns, per unit, None when its result is stored
    or the reason it failed. Writes the manifest first and the run report last."""
    started = time.perf_counter()
    work.write_manifest(
        {
            "spec": spec,
            "units": [
                {"id": u.id, "fingerprint": u.fingerprint, "buildings": len(u.footprints),
                 "files": [f.path for f in u.files]}
                for u in units
            ],
        }
    )
    by_id = {u.id: u for u in units}
    todo = [u for u in units if not _is_finished(work, u)]
    outcome: dict[str, str | None] = {u.id: None for u in units}
    reports: dict[str, dict[str, Any]] = {}
    progress.units_planned(len(units), len(todo))
    progress.stage("buildings", sum(len(u.footprints) for u in units))
    for unit in units:
        if unit not in todo:
            reports[unit.id] = {"unit": unit.id, "status": "skipped", "buildings": len(unit.footprints)}
            progress.advance(len(unit.footprints))
            progress.unit_done(reports[unit.id])
    local = execution.scheduler is None
    # Workers beyond the number of units reconstruct the units' buildings side by side; a
    # single unit then runs in this process, as with one worker, its buildings spread out.
    building_workers = max(1, execution.workers // max(1, len(todo))) if local else 1
    engine = replace(execution, workers=1) if local and len(todo) <= 1 else execution
    in_process = local and engine.workers == 1

    def tasks():
        for unit in todo:
            previous = _previous_result(work, unit, update)
            yield unit.id, UnitTask(unit, config, previous, parallel_decoding=in_process, building_workers=building_workers)

    def done(unit_id: str, payload: bytes | None, error: str | None) -> None:
        unit = by_id[unit_id]
        if payload is None:
            outcome[unit_id] = error
            reports[unit_id] = {"unit": unit_id, "status": "failed", "error": error, "buildings": len(unit.footprints)}
            log.warning("unit %s failed: %s", unit_id, error)
        else:
            result: UnitResult = loads(payload)
            windows = [list(w) for w in result.terrain_windows]
            terrain_files = [f.identity() for f in unit.files_within(windows)]
            work.store(unit_id, unit.fingerprint, result.complete, payload,
                       {"terrain_windows": windows, "terrain_files": terrain_files})
            reports[unit_id] = {**result.report, "status": "done" if result.complete else "failed"}
            for building_id, reason in result.report["failures"]:
                log.info("unit %s: building %s failed: %s", unit_id, building_id, reason)
            for path, reason in result.failed_files.items():
                log.warning("unit %s: %s", unit_id, reason)
        if not in_process or payload is None:
            progress.advance(len(unit.footprints))
        progress.unit_done(reports[unit_id])

    run_units(tasks(), engine, done, on_building=progress.advance if in_process else None)
    work.write_report(_run_report(units, reports, execution, time.perf_counter() - started))
    return outcome


def _is_finished(work: WorkDir, unit: Unit) -> bool:
    """Whether the unit's stored result is complete and its inputs unchanged, the files
    its terrain fallback used included."""
    header = work.header(unit.id)
    if header is None or header["fingerprint"] != unit.fingerprint or not header["complete"]:
        return False
    return [f.identity() for f in unit.files_within(header["terrain_windows"])] == header["terrain_files"]


def _previous_result(work: WorkDir, unit: Unit, update: _Update | None) -> PreviousResult | None:
    if update is None or work.header(unit.id) is None:
        return None
    previous: UnitResult = work.load(unit.id)
    return PreviousResult({b.id: b for b in previous.buildings()}, previous.signatures, update.changed_extents, update.change)


def _assemble(
    units: Sequence[Unit], outcome: Mapping[str, str | None], work: WorkDir
) -> tuple[list[Building], dict[str, tuple[str, str] | None]]:
    """Every unit's buildings (a unit that failed outright gives failed buildings with its
    reason), and the acquisition dates of every file a unit decoded."""
    buildings: list[Building] = []
    file_dates: dict[str, tuple[str, str] | None] = {}
    for unit in units:
        header = work.header(unit.id)
        if outcome[unit.id] is not None or header is None or header["fingerprint"] != unit.fingerprint:
            reason = f"unit {unit.id} failed: {outcome[unit.id]}"
            buildings += [_failed_building(f.id, f.polygon, reason) for f in unit.footprints]
            continue
        result: UnitResult = work.load(unit.id)
        buildings += result.buildings()
        file_dates.update(result.file_dates)
    return buildings, file_dates


def _output_sets(model: CityModel, out_dir: Path, per_commune: bool):
    """The whole model into `out_dir`, or with `per_commune` each commune's buildings into
    `out_dir/<code>/` (and those outside every commune into `out_dir/no-commune/`)."""
    if not per_commune:
        yield model, out_dir
        return
    groups: dict[str, list[Building]] = {}
    for building in model.buildings:
        groups.setdefault(building.attributes.get("commune") or NO_COMMUNE, []).append(building)
    communes = {c.code: c for c in model.communes}
    for code in sorted(groups):
        metadata = {**model.metadata, "commune": code, "building_count": len(groups[code])}
        commune = (communes[code],) if code in communes else ()
        part = CityModel(tuple(groups[code]), model.crs, metadata, commune)
        yield part, _prepare_out_dir(out_dir / code)


def _rejected(feature_id: str, reason: str) -> Building:
    return _failed_building(feature_id, shapely.Polygon(), reason)


def _failed_building(building_id: str, footprint: shapely.Polygon, reason: str) -> Building:
    return Building(
        building_id, footprint, Status.FAILED, reason, {"status": str(Status.FAILED), "reason": reason}
    )


def _work_folder(work_dir: Path | None):
    """The run's work folder: the given one (kept, to resume), or a temporary one."""
    if work_dir is not None:
        return contextlib.nullcontext(WorkDir(Path(work_dir)))
    return _temporary_work_folder()


@contextlib.contextmanager
def _temporary_work_folder():
    with tempfile.TemporaryDirectory(prefix="twin-work-") as folder:
        yield WorkDir(Path(folder))


def _run_report(units: Sequence[Unit], reports: Mapping[str, Mapping[str, Any]], execution: Execution, seconds: float):
    entries = [reports[u.id] for u in units]
    ran = [e for e in entries if e["status"] != "skipped" and "seconds" in e]
    decoded = sum(e.get("points_decoded", 0) for e in ran)
    rebuilt = sum(e.get("rebuilt", 0) for e in ran)
    return {
        "engine": execution.describe(),
        "unit_size_m": execution.unit_size_m,
        "wall_seconds": round(seconds, 3),
        "units": {status: sum(e["status"] == status for e in entries) for status in ("done", "skipped", "failed")},
        "buildings_reconstructed": rebuilt,
        "points_decoded": decoded,
        "buildings_per_s": round(rebuilt / seconds, 2) if seconds > 0 else None,
        "points_per_s": round(decoded / seconds) if seconds > 0 else None,
        "peak_rss_mb": max((e.get("peak_rss_mb", 0) for e in ran), default=None),
        "per_unit": entries,
    }


def _covered_share(box: shapely.Polygon, covering: Sequence[shapely.Polygon]) -> float:
    if box.area == 0:
        return 1.0 if any(c.covers(box) for c in covering) else 0.0
    return shapely.union_all(covering).intersection(box).area / box.area


def _config_from(parameters: Mapping[str, Any]) -> BuildConfig:
    """The BuildConfig a manifest recorded (lists back to tuples)."""
    defaults = BuildConfig()
    values = {}
    for name, value in parameters.items():
        step = getattr(defaults, name)
        values[name] = type(step)(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
    return BuildConfig(**values)


def _parameters(config: BuildConfig, crs: str | None, vertical_crs: str | None, id_field: str | None) -> dict[str, Any]:
    return {**config.to_dict(), "crs": crs, "vertical_crs": vertical_crs, "id_field": id_field}


DERIVED_FOOTPRINTS = "(derived from the building points)"


def _derived_footprints(sources: Sequence[PointSource], config: BuildConfig) -> FootprintSet:
    """Footprints outlined from the building points, for runs without a footprint file.

    Outlining needs every building point of the run at once, so this mode holds them all
    in memory: it suits a commune's tiles, not a region (give footprints there)."""
    building = joined([read_file(s.path, config.classes, None).roof_xyz for s in sources], (0, 3))
    outlines = building_outlines(building, config.outlines)
    note = "derived from the building points (no footprint file)"
    return FootprintSet(
        path=DERIVED_FOOTPRINTS,
        layer="",
        id_field=None,
        crs=None,
        footprints=tuple(Footprint(id_, polygon, {}, (note,)) for id_, polygon in outlines),
        notes=(f"no footprints given: {len(outlines)} building outlines {note}",),
    )


def with_shared_walls(buildings: list[Building]) -> list[Building]:
    """Adds the LOD2.2 wall areas shared with neighbours, and the outer (not shared) rest."""
    shared = shared_wall_areas(buildings)
    result = []
    for building in buildings:
        if "area_wall" not in building.attributes:
            result.append(building)
            continue
        area = shared.get(building.id, 0.0)
        attributes = {
            **building.attributes,
            "area_wall_shared": area,
            "area_wall_outer": round(building.attributes["area_wall"] - area, 2),
        }
        result.append(replace(building, attributes=attributes))
    return result


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
        remove_leftover_temporaries(out_dir)  # of outputs a killed run was writing
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
    parameters = _parameters(config, crs, vertical_crs, footprint_set.id_field)
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
