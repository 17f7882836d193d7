"""One unit of work: read the points its buildings need, reconstruct them, return them.

This is what runs on a worker (in this process, a local process pool or a Dask
cluster); it reads point files but writes nothing, and returns its result as bytes
(`twin.region.workdir.dumps`) for the caller to store.

Points are read on demand, per building, so that a building's inputs are the same
whichever unit holds it and however the area is cut into files:
1. every file overlapping a footprint's ground ring is decoded, keeping the building and
   ground points within the nearest-ground radius of the footprints;
2. buildings whose ring holds too few ground points need the nearest ground within that
   radius: files overlapping it that were not decoded yet are;
3. buildings with no ground point within that radius (rare) fall back to the coarse
   terrain around them: every file overlapping that window is decoded for its ground.
Each file is decoded once per unit (twice at most, when step 3 happens), and each
building's points are put in one canonical order (sorted by x, y, z) before
reconstruction.

A file that cannot be decoded fails the buildings that need it, with its reason; the
unit's other buildings are built.

With `building_workers` above 1 (a run with fewer units than workers), the unit's
buildings are reconstructed side by side in that many spawned processes while this one
crops the next buildings' points; each building's result is the same wherever it is made.
"""

from __future__ import annotations

import collections
import concurrent.futures
import multiprocessing
import os
import resource
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import shapely

from reconstruction.building import BuildingInputs, reconstruct_building
from reconstruction.change import RoofChange, RoofSignature, compare_roofs, roof_signature
from reconstruction.ground import MAX_TERRAIN_DISTANCE_M
from reconstruction.crop import build_grid_index, canonical_order, indices_in_polygon
from twin.config import BuildConfig, ChangeConfig
from twin.errors import InputError, TwinError
from twin.inputs.points import FilePoints, KeepMask, TerrainSums, joined, read_file
from twin.model import Building, Footprint, Status, TerrainGrid
from twin.region.units import PointFile, Reach, Unit
from twin.region.workdir import dumps, loads

_NOTHING = KeepMask(0.0, 0.0, 1.0, np.zeros((1, 1), dtype=bool))


@dataclass(frozen=True, eq=False)
class PreviousResult:
    """For `twin update`: the unit's buildings and roof signatures from the last run, and
    the extents of the point files that are new since."""

    buildings: Mapping[str, Building]
    signatures: Mapping[str, RoofSignature]
    changed_extents: tuple[tuple[float, float, float, float], ...]
    change: ChangeConfig


@dataclass(frozen=True, eq=False)
class UnitTask:
    unit: Unit
    config: BuildConfig
    previous: PreviousResult | None = None
    parallel_decoding: bool = True
    """Decode LAZ on every core: for a unit running alone, not for one worker of many."""
    building_workers: int = 1
    """Processes reconstructing the unit's buildings side by side; 1 reconstructs them here."""


@dataclass(frozen=True, eq=False)
class UnitResult:
    unit_id: str
    fingerprint: str
    packed_buildings: bytes
    """`buildings()`, pickled apart: the driver loads every result as it arrives, for its
    report, and its buildings only once, to write the outputs (0.4 s for the benchmark
    tile's thousand buildings)."""
    signatures: Mapping[str, RoofSignature]
    file_dates: Mapping[str, tuple[str, str] | None]
    """Acquisition dates of every file the unit decoded (None: not adjusted GPS time)."""
    failed_files: Mapping[str, str]
    """Files that could not be decoded, with the reason."""
    terrain_windows: tuple[tuple[float, float, float, float], ...]
    """The windows of the coarse terrain fallback, for the rare buildings that used it:
    the files within them are inputs too."""
    report: Mapping[str, Any] = field(default_factory=dict)
    """Timings, memory and counts: for the run report, never for the outputs."""

    @property
    def complete(self) -> bool:
        return not self.failed_files

    def buildings(self) -> tuple[Building, ...]:
        """Sorted by id, one per footprint of the unit."""
        return loads(self.packed_buildings)


def run_unit_bytes(payload: bytes) -> bytes:
    """The engines' entry point: a `UnitTask` in, a `UnitResult` out, both as bytes."""
    return dumps(run_unit(loads(payload)))


def run_unit(task: UnitTask, on_building: Callable[[], None] | None = None) -> UnitResult:
    started = time.perf_counter()
    _reset_peak_memory()
    unit, previous = task.unit, task.previous
    points = _UnitPoints(unit.files, task.config, task.parallel_decoding)
    building_run = _BuildingRun(task.config, task.building_workers, on_building)
    if previous is None:
        buildings, signatures = _build(unit.footprints, points, building_run)
        rebuilt = len(buildings)
    else:
        buildings, signatures, rebuilt = _update(unit.footprints, points, building_run, previous)
    ordered = tuple(sorted(buildings.values(), key=lambda b: b.id))
    counts: dict[str, int] = {}
    for building in ordered:
        counts[str(building.status)] = counts.get(str(building.status), 0) + 1
    report = {
        "unit": unit.id,
        "seconds": round(time.perf_counter() - started, 3),
        "peak_rss_mb": _peak_memory_mb(),
        "files_read": sorted(points.dates) + sorted(points.failed),
        "read_seconds": round(points.read_seconds, 3),
        "reconstruct_seconds": round(time.perf_counter() - started - points.read_seconds, 3),
        "points_decoded": points.decoded,
        "points_kept": points.kept,
        "buildings": len(ordered),
        "building_workers": task.building_workers,
        "rebuilt": rebuilt,
        "counts": counts,
        "failures": [[b.id, b.reason] for b in ordered if b.status == Status.FAILED],
        "failed_files": dict(points.failed),
    }
    return UnitResult(
        unit.id, unit.fingerprint, dumps(ordered), signatures, dict(points.dates), dict(points.failed),
        tuple(points.terrain_windows), report,
    )


def _build(
    footprints: Sequence[Footprint],
    points: "_UnitPoints",
    run: "_BuildingRun",
    select: Callable[[Footprint, RoofSignature], bool] | None = None,
) -> tuple[dict[str, Building], dict[str, RoofSignature]]:
    """Reads what `footprints` need and reconstructs them; with `select`, only those it
    keeps after seeing their roof signature (the others are left out of the result)."""
    config = run.config
    reach = Reach.of(config.ground)
    envelopes = np.array([f.polygon.bounds for f in footprints]).reshape(-1, 4)
    points.read_for(_grown(envelopes, reach.ring), keep=_grown(envelopes, reach.nearby))
    roofs, grounds = points.indexed()
    polygons = np.array([f.polygon for f in footprints], dtype=object)
    rings = shapely.difference(shapely.buffer(polygons, reach.ring, quad_segs=16), polygons)  # as Polygon.buffer
    ring_points = [grounds.inside(ring) for ring in rings]
    roof_points = [roofs.inside(f.polygon) for f in footprints]
    signatures = {f.id: roof_signature(roofs.xyz[k]) for f, k in zip(footprints, roof_points)}

    chosen = [k for k, f in enumerate(footprints) if select is None or select(f, signatures[f.id])]
    needs_nearby = [k for k in chosen if len(ring_points[k]) < config.ground.min_points]
    if needs_nearby:
        wider = _grown(envelopes[needs_nearby], reach.nearby)
        points.read_for(wider, keep=wider)
        roofs, grounds = points.indexed()
    nearby_points = {k: grounds.inside(footprints[k].polygon.buffer(reach.nearby)) for k in needs_nearby}
    needs_terrain = [k for k in needs_nearby if len(nearby_points[k]) == 0]
    centroids = {k: footprints[k].polygon.centroid for k in needs_terrain}
    if needs_terrain:
        windows = np.array([[c.x, c.y, c.x, c.y] for c in centroids.values()])
        points.read_terrain(_grown(windows, reach.terrain))

    def jobs() -> Iterator[Building | BuildingInputs]:
        for k in chosen:
            footprint = footprints[k]
            needed = [_grown(envelopes[k : k + 1], reach.ring)[0]]
            if k in nearby_points:
                needed.append(_grown(envelopes[k : k + 1], reach.nearby)[0])
            if k in centroids:
                needed.append(_grown(np.array([[centroids[k].x, centroids[k].y] * 2]), reach.terrain)[0])
            missing = points.failure_within(needed)
            if missing is not None:
                yield _failed(footprint, f"points unavailable: {missing}")
                continue
            roof = roof_points[k][_canonical(roofs.xyz, roof_points[k])]
            ring = ring_points[k][_canonical(grounds.xyz, ring_points[k])]
            nearby = nearby_points.get(k)
            nearby = ring if nearby is None else nearby[_canonical(grounds.xyz, nearby)]
            inner = grounds.inside(footprint.polygon)
            inner = inner[_canonical(grounds.xyz, inner)]
            yield BuildingInputs(
                footprint=footprint,
                roof_points=roofs.xyz[roof],
                inner_ground=grounds.xyz[inner],
                ring_ground=grounds.xyz[ring],
                nearby_ground=grounds.xyz[nearby],
                terrain=points.terrain_around(centroids[k]) if k in centroids else None,
                roof_gps_time=roofs.time_of(roof),
                in_coverage=points.covers(footprint.polygon),
            )

    buildings = {building.id: building for building in run.reconstructed(jobs())}
    return buildings, {footprints[k].id: signatures[footprints[k].id] for k in chosen}


def _update(
    footprints: Sequence[Footprint],
    points: "_UnitPoints",
    run: "_BuildingRun",
    previous: PreviousResult,
) -> tuple[dict[str, Building], dict[str, RoofSignature], int]:
    """Keeps each building of the last run unless newer points say its roof changed;
    changed ones are rebuilt from the new points and record the change. Buildings whose
    footprint is new or was redrawn since are rebuilt too."""
    current = {f.id for f in footprints}
    buildings = {i: b for i, b in previous.buildings.items() if i in current}
    signatures = {i: s for i, s in previous.signatures.items() if i in current}
    extents = shapely.box(*np.array(previous.changed_extents).reshape(-1, 4).T)
    redrawn = {f.id for f in footprints if f.id in buildings and not buildings[f.id].footprint.equals_exact(f.polygon, 0)}
    touched = [
        f for f in footprints
        if f.id not in buildings or f.id in redrawn or shapely.intersects(extents, f.polygon).any()
    ]
    if not touched:
        return buildings, signatures, 0
    changes = {}

    def changed(footprint: Footprint, signature: RoofSignature) -> bool:
        if footprint.id not in buildings or footprint.id in redrawn:
            return True  # a new or redrawn footprint: rebuilt, without a roof change
        change = compare_roofs(
            previous.signatures[footprint.id], signature, previous.change.height_threshold_m, previous.change.min_share
        )
        changes[footprint.id] = change
        return change.changed

    on_building, run = run.on_building, replace(run, on_building=None)
    rebuilt, new_signatures = _build(touched, points, run, select=changed)
    for building_id, building in rebuilt.items():
        if building_id in changes:
            building = _with_change(building, previous.buildings[building_id], changes[building_id])
        buildings[building_id] = building
        signatures[building_id] = new_signatures[building_id]
    if on_building is not None:
        for _ in footprints:
            on_building()
    return buildings, signatures, len(rebuilt)


@dataclass(frozen=True)
class _BuildingRun:
    """How a unit reconstructs its buildings: here, or in `workers` spawned processes."""

    config: BuildConfig
    workers: int = 1
    on_building: Callable[[], None] | None = None
    """Called once per building, as each is done."""

    def reconstructed(self, jobs: Iterable[Building | BuildingInputs]) -> Iterator[Building]:
        """Each job's building: inputs are reconstructed, buildings (failed ones) passed on."""
        for building in self._reconstructed(jobs):
            yield building
            if self.on_building is not None:
                self.on_building()

    def _reconstructed(self, jobs: Iterable[Building | BuildingInputs]) -> Iterator[Building]:
        if self.workers <= 1:
            for job in jobs:
                yield job if isinstance(job, Building) else reconstruct_building(job, self.config)
            return
        # Spawned, as the engines' workers are: this process holds the unit's points and
        # native libraries' threads, which forked children must not inherit.
        context = multiprocessing.get_context("spawn")
        window = BUILDINGS_IN_FLIGHT_PER_WORKER * self.workers
        in_flight: collections.deque[Building | concurrent.futures.Future] = collections.deque()
        with concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_receive_config, initargs=(dumps(self.config),)
        ) as pool:
            try:
                for job in jobs:
                    in_flight.append(job if isinstance(job, Building) else pool.submit(_reconstruct_bytes, dumps(job)))
                    while len(in_flight) >= window or (in_flight and isinstance(in_flight[0], Building)):
                        yield _outcome(in_flight.popleft())
                while in_flight:
                    yield _outcome(in_flight.popleft())
            except concurrent.futures.process.BrokenProcessPool:
                raise TwinError(
                    "a process reconstructing this unit's buildings died (out of memory?); "
                    "run again with fewer --workers, or resume the run"
                ) from None


BUILDINGS_IN_FLIGHT_PER_WORKER = 4
"""Enough queued buildings to keep each worker busy, few enough that their points stay small."""

_worker_config: BuildConfig | None = None


def _receive_config(config: bytes) -> None:
    global _worker_config
    _worker_config = loads(config)


def _reconstruct_bytes(inputs: bytes) -> bytes:
    return dumps(reconstruct_building(loads(inputs), _worker_config))


def _outcome(job: Building | concurrent.futures.Future) -> Building:
    return job if isinstance(job, Building) else loads(job.result())


def _with_change(building: Building, before: Building, change: RoofChange) -> Building:
    dates = (before.attributes.get("acquisition_date") or "unknown", building.attributes.get("acquisition_date") or "unknown")
    attributes = {
        **building.attributes,
        "roof_change": "/".join(dates),
        "roof_change_share": round(change.share, 3),
        "roof_change_height_m": round(change.height_m, 2),
    }
    return replace(building, attributes=attributes)


def _failed(footprint: Footprint, reason: str) -> Building:
    attributes = {"status": str(Status.FAILED), "reason": reason}
    return Building(footprint.id, footprint.polygon, Status.FAILED, reason, attributes)


def _grown(boxes: np.ndarray, distance: float) -> np.ndarray:
    return boxes + np.array([-distance, -distance, distance, distance])


def _canonical(xyz: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The order of `indices` that sorts their points by x, then y, then z."""
    return canonical_order(xyz[indices])


class _Indexed:
    def __init__(self, xyz: np.ndarray, gps_time: np.ndarray | None) -> None:
        self.xyz = xyz
        self.gps_time = gps_time
        self.index = build_grid_index(xyz[:, :2])

    def inside(self, region: shapely.Geometry) -> np.ndarray:
        return indices_in_polygon(self.index, self.xyz[:, :2], region)

    def time_of(self, indices: np.ndarray) -> np.ndarray | None:
        """GPS times of these points, or None unless every one of them has one."""
        if self.gps_time is None:
            return None
        times = self.gps_time[indices]
        return times if np.isfinite(times).all() else None


class _UnitPoints:
    """The points a unit decoded so far, file by file, each file at most once."""

    def __init__(self, files: Sequence[PointFile], config: BuildConfig, parallel: bool) -> None:
        self.files = tuple(files)
        self.parallel = parallel
        self.classes = config.classes
        self.boxes = shapely.box(*np.array([f.bounds for f in self.files]).reshape(-1, 4).T)
        self.dates: dict[str, tuple[str, str] | None] = {}
        self.failed: dict[str, str] = {}
        self.decoded = 0
        self.read_seconds = 0.0
        self.terrain_windows: list[tuple[float, float, float, float]] = []
        self.terrain: TerrainSums | None = None
        self._terrain_read: set[str] = set()
        self._roof: list[np.ndarray] = []
        self._roof_time: list[np.ndarray] = []
        self._ground: list[np.ndarray] = []
        self._indexed: tuple[_Indexed, _Indexed] | None = None

    @property
    def kept(self) -> int:
        return sum(len(p) for p in self._roof) + sum(len(p) for p in self._ground)

    def read_for(self, regions: np.ndarray, keep: np.ndarray) -> None:
        """Decodes the files overlapping any of the `regions` boxes not decoded yet,
        keeping their points inside the `keep` boxes."""
        todo = [f for f in self._overlapping(regions) if f.path not in self.dates and f.path not in self.failed]
        if not todo:
            return
        started = time.perf_counter()
        mask = KeepMask.of_boxes(keep)
        for file in todo:
            found = self._read(file, mask, None)
            if found is not None:
                self.dates[file.path] = found.acquisition_dates
                self._roof.append(found.roof_xyz)
                times = found.roof_gps_time
                self._roof_time.append(times if times is not None else np.full(len(found.roof_xyz), np.nan))
                self._ground.append(found.ground_xyz)
                self._indexed = None
        self.read_seconds += time.perf_counter() - started

    def read_terrain(self, windows: np.ndarray) -> None:
        """Sums the ground heights of every file overlapping the windows, decoded before
        or not: the coarse terrain is needed so rarely that decoding those files again
        then costs less than summing every file's ground on every run."""
        started = time.perf_counter()
        self.terrain_windows += [tuple(w) for w in windows.tolist()]
        if self.terrain is None:
            self.terrain = TerrainSums(_union_bounds(self.files))
        for file in self._overlapping(windows):
            if file.path not in self.failed and file.path not in self._terrain_read:
                self._terrain_read.add(file.path)
                self._read(file, _NOTHING, self.terrain)
        self.read_seconds += time.perf_counter() - started

    def _overlapping(self, regions: np.ndarray) -> list[PointFile]:
        if len(regions) == 0 or not self.files:
            return []
        wanted = shapely.intersects(self.boxes[:, None], shapely.box(*regions.T)[None, :]).any(axis=1)
        return [f for f, w in zip(self.files, wanted) if w]

    def _read(self, file: PointFile, mask: KeepMask, terrain: TerrainSums | None) -> FilePoints | None:
        try:
            found = read_file(file.path, self.classes, mask, terrain, self.parallel)
        except InputError as error:
            self.failed[file.path] = str(error)
            return None
        self.decoded += found.decoded_points
        return found

    def indexed(self) -> tuple[_Indexed, _Indexed]:
        """Building points and ground points, each with a grid index; appending files
        keeps the indices of earlier points."""
        if self._indexed is None:
            # Joined once and kept joined, so that the parts are not held twice.
            self._roof = [joined(self._roof, (0, 3))]
            self._roof_time = [joined(self._roof_time, (0,))]
            self._ground = [joined(self._ground, (0, 3))]
            self._indexed = (_Indexed(self._roof[0], self._roof_time[0]), _Indexed(self._ground[0], None))
        return self._indexed

    def failure_within(self, regions: Sequence[np.ndarray]) -> str | None:
        """The reason of the first failed file overlapping any of the regions, if any."""
        for file in self.files:
            if file.path in self.failed:
                box = shapely.box(*file.bounds)
                if any(box.intersects(shapely.box(*region)) for region in regions):
                    return self.failed[file.path]
        return None

    def covers(self, polygon: shapely.Polygon) -> bool:
        return bool(len(self.files)) and bool(shapely.intersects(self.boxes, polygon).any())

    def terrain_around(self, centroid: shapely.Point) -> TerrainGrid:
        return self.terrain.around(centroid.x, centroid.y, MAX_TERRAIN_DISTANCE_M)


def _union_bounds(files: Sequence[PointFile]) -> tuple[float, float, float, float]:
    bounds = np.array([f.bounds for f in files])
    return (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())


def _reset_peak_memory() -> None:
    """Resets the process's peak resident memory (Linux), so that each unit reports its own."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as stream:
            stream.write("5")
    except OSError:
        pass


def _peak_memory_mb() -> float:
    """The process's peak resident memory since the last reset (Linux), else since it started."""
    try:
        with open(f"/proc/{os.getpid()}/status") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
