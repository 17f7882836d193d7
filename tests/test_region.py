"""Runs cut into units: the same outputs whatever the engine and however the area is cut
into tiles and units; resuming after SIGKILL; updates with newer points; unreadable tiles."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import laspy
import numpy as np
import pyogrio
import pytest
import shapely

import twin
from exporters.atomic import is_temporary
from tests.conftest import ROOT
from twin.region.engines import Execution

OUTPUT_FILES = ("buildings.city.json", "buildings.city.jsonl", "summary.json", "metadata.json")
TILE_M = 100.0
RAISED = ("B03", "B17", "B33")


def split_into_tiles(source: Path, folder: Path, size: float) -> list[Path]:
    """The sample scan cut into tiles of `size` metres on the grid of the units."""
    folder.mkdir(parents=True, exist_ok=True)
    las = laspy.read(source)
    cells = np.floor(np.column_stack([las.x, las.y]) / size).astype(np.int64)
    paths = []
    for i, j in sorted(set(map(tuple, cells.tolist()))):
        tile = laspy.LasData(copy.deepcopy(las.header))
        tile.points = las.points[(cells[:, 0] == i) & (cells[:, 1] == j)]
        path = folder / f"tile_{i}_{j}.laz"
        tile.write(path)
        paths.append(path)
    return paths


def build_args(points, out, *extra):
    return ["build", "--points", *points, "--footprints", ROOT / "sample_data/footprints.gpkg", "--out", out,
            "--format", "cityjson", "--format", "cityjsonseq", *extra]


def twin_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "twin", *map(str, args)], capture_output=True, text=True, **kwargs)


def outputs(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in OUTPUT_FILES}


def features(folder: Path) -> dict[str, str]:
    lines = (folder / "buildings.city.jsonl").read_text().splitlines()[1:]
    return {json.loads(line)["id"]: line for line in lines}


def _content(feature_line: str) -> tuple:
    feature = json.loads(feature_line)
    building = feature["CityObjects"][feature["id"]]
    return building["attributes"], building.get("geographicalExtent")


@pytest.fixture(scope="module")
def tiles(tmp_path_factory, sample_dir):
    paths = split_into_tiles(sample_dir / "lidar.laz", tmp_path_factory.mktemp("tiles"), TILE_M)
    assert len(paths) >= 4
    return paths


@pytest.fixture(scope="module")
def reference(tiles, tmp_path_factory, sample_dir):
    """The tiles built in this process, one unit per tile."""
    out = tmp_path_factory.mktemp("reference")
    twin.build(points=tiles, footprints=sample_dir / "footprints.gpkg", out_dir=out, formats=("cityjson", "cityjsonseq"),
               execution=Execution(unit_size_m=TILE_M))
    return out


def test_a_building_is_the_same_however_the_area_is_cut(reference, sample_build, tiles):
    _, whole = sample_build  # the single file, in one unit
    assert features(reference) == features(whole)
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["counts"]["built"] == 34
    # some buildings straddle tile edges, so they were read from several files
    footprints = [b.footprint for b in sample_build[0].buildings]
    edges = [shapely.LineString([(x, 6860000), (x, 6861000)]) for x in (668300, 668400)]
    assert sum(any(f.intersects(e) for e in edges) for f in footprints) >= 3


def test_engines_give_byte_identical_outputs(reference, tiles, tmp_path, sample_dir):
    from distributed import LocalCluster

    pool = tmp_path / "pool"
    twin.build(points=tiles, footprints=sample_dir / "footprints.gpkg", out_dir=pool, formats=("cityjson", "cityjsonseq"),
               execution=Execution(workers=2, unit_size_m=TILE_M))
    assert outputs(pool) == outputs(reference)

    dask = tmp_path / "dask"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        twin.build(points=tiles, footprints=sample_dir / "footprints.gpkg", out_dir=dask,
                   formats=("cityjson", "cityjsonseq"),
                   execution=Execution(scheduler=cluster.scheduler_address, unit_size_m=TILE_M))
    assert outputs(dask) == outputs(reference)


def _die_on_first_unit(marker: str) -> None:
    """Installed on Dask workers: the first unit to start kills its worker process."""
    import twin.region.unit_run as unit_run

    original = unit_run.run_unit_bytes

    def run_unit_bytes(payload: bytes) -> bytes:
        try:
            os.rename(marker, marker + ".taken")  # atomic: only one worker gets it
        except FileNotFoundError:
            return original(payload)
        os._exit(1)

    unit_run.run_unit_bytes = run_unit_bytes


def test_workers_beyond_the_units_reconstruct_their_buildings_with_byte_identical_outputs(reference, tiles, tmp_path, sample_dir):
    out, work = tmp_path / "one-unit", tmp_path / "work"
    twin.build(points=tiles, footprints=sample_dir / "footprints.gpkg", out_dir=out, formats=("cityjson", "cityjsonseq"),
               execution=Execution(workers=2, unit_size_m=5000.0, work_dir=work))
    (unit,) = json.loads((work / "report.json").read_text())["per_unit"]
    assert unit["building_workers"] == 2 and unit["buildings"] == 34
    assert outputs(out) == outputs(reference)


def test_a_lost_dask_worker_is_replaced_and_its_unit_run_again(reference, tiles, tmp_path, sample_dir):
    from distributed import Client, LocalCluster

    marker = tmp_path / "kill-once"
    marker.write_text("")
    out = tmp_path / "out"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster.scheduler_address) as client:
            client.run(_die_on_first_unit, str(marker))
            twin.build(points=tiles, footprints=sample_dir / "footprints.gpkg", out_dir=out,
                       formats=("cityjson", "cityjsonseq"),
                       execution=Execution(scheduler=cluster.scheduler_address, unit_size_m=TILE_M))
    assert (tmp_path / "kill-once.taken").exists()  # a worker did die
    assert outputs(out) == outputs(reference)


def finished_units(work: Path) -> list[Path]:
    """Stored unit results, not the temporaries of writes in progress."""
    return [p for p in (work / "units").glob("*.unit") if not is_temporary(p)] if (work / "units").is_dir() else []


def test_a_run_killed_with_sigkill_resumes_without_loss_or_duplicates(reference, tiles, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    args = build_args(tiles, out, "--work-dir", work, "--unit-size", 50)
    process = subprocess.Popen([sys.executable, "-m", "twin", *map(str, args)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not finished_units(work) and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    manifest = json.loads((work / "manifest.json").read_text())
    finished = len(finished_units(work))
    assert 1 <= finished < len(manifest["units"]), "the run was not killed mid-way"
    assert not [p for p in out.iterdir() if not p.name.startswith(".")]  # no output presented as done

    resumed = twin_cli(*args, "--verbose")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{finished} of {len(manifest['units'])} units were finished by an earlier run" in resumed.stderr
    report = json.loads((work / "report.json").read_text())
    assert report["units"] == {"done": len(manifest["units"]) - finished, "skipped": finished, "failed": 0}
    assert outputs(out) == outputs(reference)  # and 50 m units give what 100 m units gave
    leftovers = [p for p in [*out.iterdir(), *work.iterdir(), *(work / "units").iterdir()] if is_temporary(p)]
    assert not leftovers


def test_a_unit_result_of_another_format_is_run_again_not_read(reference, tiles, tmp_path, sample_dir):
    work, out = tmp_path / "work", tmp_path / "out"

    def build():
        twin.build(points=tiles, footprints=sample_dir / "footprints.gpkg", out_dir=out,
                   formats=("cityjson", "cityjsonseq"), execution=Execution(work_dir=work, unit_size_m=TILE_M))
        return json.loads((work / "report.json").read_text())["units"]

    units = build()
    stored = sorted(finished_units(work))[0]
    header = json.loads(stored.read_bytes().partition(b"\n")[0])
    # As an older twin stored it: a result this one cannot read.
    stored.write_bytes(json.dumps({**header, "format": 1}).encode() + b"\n" + b"an older pickle")
    assert build() == {"done": 1, "skipped": units["done"] - 1, "failed": 0}
    assert outputs(out) == outputs(reference)


def test_update_rebuilds_and_flags_only_the_changed_roofs(tmp_path, sample_dir):
    work, before, after = tmp_path / "work", tmp_path / "before", tmp_path / "after"
    first = twin_cli(*build_args([sample_dir / "lidar.laz"], before, "--work-dir", work, "--unit-size", TILE_M))
    assert first.returncode == 0, first.stderr

    newer = tmp_path / "lidar_2025.laz"
    las = laspy.read(sample_dir / "lidar.laz")
    meta, _, wkb, fields = pyogrio.raw.read(sample_dir / "footprints.gpkg")
    ids = list(fields[list(meta["fields"]).index("id")])
    raised = shapely.union_all([g for i, g in zip(ids, shapely.from_wkb(wkb)) if i in RAISED])
    roof = np.isin(las.classification, [6, 67]) & shapely.contains_xy(raised, las.x, las.y)
    las.z = np.asarray(las.z) + np.where(roof, 3.0, 0.0)  # three roofs raised by a storey
    las.gps_time = np.asarray(las.gps_time) + 365 * 86400.0  # scanned a year later
    las.write(newer)

    result = twin_cli("update", "--work-dir", work, "--points", newer, "--out", after)
    assert result.returncode == 0, result.stderr
    assert "3 building(s) with a changed roof" in result.stderr
    old, new = features(before), features(after)
    assert old.keys() == new.keys()
    changed = {i for i in new if new[i] != old[i]}
    assert changed == set(RAISED)
    for building_id in RAISED:
        attributes = json.loads(new[building_id])["CityObjects"][building_id]["attributes"]
        previous = json.loads(old[building_id])["CityObjects"][building_id]["attributes"]
        assert attributes["roof_change"] == "2024-04-17/2025-04-17"
        assert attributes["roof_change_share"] > 0.9
        assert attributes["roof_change_height_m"] == pytest.approx(3.0, abs=0.05)
        assert attributes["h_roof_70p"] == pytest.approx(previous["h_roof_70p"] + 3.0, abs=0.05)
        assert attributes["acquisition_date"] == "2025-04-17"
    report = json.loads((work / "report.json").read_text())
    assert sum(u.get("rebuilt", 0) for u in report["per_unit"]) == len(RAISED)
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["spec"]["points"] == [str(newer)]  # the newer file replaced the old one


def test_an_unreadable_tile_fails_the_buildings_that_need_it_and_the_rest_completes(reference, tiles, tmp_path):
    folder = tmp_path / "tiles"
    shutil.copytree(tiles[0].parent, folder)
    broken = max(folder.glob("*.laz"), key=lambda p: p.stat().st_size)
    whole = broken.read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])
    work, out = tmp_path / "work", tmp_path / "out"
    args = build_args(sorted(folder.glob("*.laz")), out, "--work-dir", work, "--unit-size", TILE_M)

    result = twin_cli(*args)
    assert result.returncode == 1, result.stderr
    assert f"{broken}: the point data cannot be decoded" in result.stderr and "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    failed = {b["id"] for b in summary["buildings"] if b["status"] == "failed"}
    assert failed and all(
        str(broken) in b["reason"] for b in summary["buildings"] if b["status"] == "failed"
    )
    expected = features(reference)
    built = {i: line for i, line in features(out).items() if i not in failed}
    # The same buildings (vertices differ only by the file's translation: failed ones have none)
    assert len(built) >= 10 and all(_content(expected[i]) == _content(line) for i, line in built.items())

    broken.write_bytes(whole)  # the tile downloaded again
    again = twin_cli(*args)
    assert again.returncode == 0, again.stderr
    report = json.loads((work / "report.json").read_text())
    assert report["units"]["skipped"] >= 1 and report["units"]["failed"] == 0
    assert features(out) == expected


def test_plan_estimates_the_units_a_run_makes(tiles, tmp_path, sample_dir):
    from twin.config import BuildConfig
    from twin.inputs.communes import read_communes
    from twin.inputs.footprints import read_footprints
    from twin.inputs.points import open_sources
    from twin.region.plan import plan_region, read_tile_index
    from twin.region.units import PointFile, Reach, plan_units

    rates = {"read_points_per_s": 1e6, "buildings_per_s": 50.0, "rss_mb_per_million_points": 100.0}
    index = read_tile_index([tiles[0].parent], density=20.0)
    assert sorted(t.name for t in index) == sorted(map(str, tiles))
    footprint_set = read_footprints(sample_dir / "footprints.gpkg")
    polygons = [f.polygon for f in footprint_set.footprints]
    communes = read_communes(sample_dir / "communes.gpkg")
    one = plan_region(index, TILE_M, 1, polygons, communes=communes, throughput=rates)
    two = plan_region(index, TILE_M, 2, polygons, communes=communes, throughput=rates)

    sources, _, _ = open_sources(tiles, None, None)
    run_units = plan_units(footprint_set.footprints, [PointFile.of(s) for s in sources], TILE_M, Reach.of(BuildConfig().ground), {})
    assert {u.id: u.buildings for u in one.units} == {u.id: len(u.footprints) for u in run_units}
    for unit in one.units:
        assert unit.seconds == pytest.approx(unit.decoded_points / 1e6 + unit.buildings / 50.0)
        assert unit.decoded_points > 0 and unit.memory_mb == pytest.approx(100.0 * unit.decoded_points / 1e6)
    assert one.wall_seconds == pytest.approx(sum(u.seconds for u in one.units))
    assert max(u.seconds for u in two.units) <= two.wall_seconds < one.wall_seconds
    assert sum(row["buildings"] for row in one.communes) == len(polygons)
    assert sum(row["points"] for row in one.communes) == pytest.approx(sum(t.points for t in index), rel=0.01)


def test_plan_command_reads_a_vector_tile_index(tmp_path, sample_dir):
    tiles = [shapely.box(x, y, x + TILE_M, y + TILE_M) for x in (668100, 668200, 668300, 668400) for y in (6860200, 6860300, 6860400)]
    index = tmp_path / "index.gpkg"
    pyogrio.raw.write(index, geometry=np.array([shapely.to_wkb(t) for t in tiles], dtype=object), field_data=[],
                      fields=[], driver="GPKG", crs="EPSG:2154", geometry_type="Polygon")
    result = twin_cli("plan", "--tiles", index, "--footprints", sample_dir / "footprints.gpkg", "--communes",
                      sample_dir / "communes.gpkg", "--unit-size", TILE_M, "--workers", 2, "--list", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "12 tiles, 2.4 M points" in result.stdout  # 20 points/m² by default
    assert "668200_6860300" in result.stdout and "77083" in result.stdout and "93051" in result.stdout
    assert "with 2 worker(s): about" in result.stdout and "rates measured by benchmarks/regional_tile.py" in result.stdout
    assert "fewer units than workers" not in result.stdout
    one_unit = twin_cli("plan", "--tiles", index, "--unit-size", 5000, "--workers", 2, cwd=ROOT)
    assert one_unit.returncode == 0, one_unit.stderr
    assert "fewer units than workers: the spare workers reconstruct" in one_unit.stdout


def test_the_terrain_fallback_does_not_depend_on_the_cut(tmp_path):
    from tests.test_inputs import write_footprints, write_laz

    rng = np.random.default_rng(5)
    x0, y0 = 668000.0, 6860000.0
    roof = np.column_stack([x0 + rng.uniform(1, 9, 500), y0 + rng.uniform(1, 9, 500), np.full(500, 60.0)])
    # ground only 60 to 150 m away, on a slope: the nearest-ground search (30 m) finds none
    angle, distance = rng.uniform(0, 2 * np.pi, 4000), rng.uniform(60, 150, 4000)
    gx, gy = x0 + 5 + distance * np.cos(angle), y0 + 5 + distance * np.sin(angle)
    ground = np.column_stack([gx, gy, 50 + 0.01 * (gx - x0)])
    xyz, classes = np.vstack([roof, ground]), np.r_[np.full(500, 6), np.full(4000, 2)]
    whole = write_laz(tmp_path / "whole.laz", xyz, classes)
    east = xyz[:, 0] >= x0 + 40
    halves = [write_laz(tmp_path / "west.laz", xyz[~east], classes[~east]),
              write_laz(tmp_path / "east.laz", xyz[east], classes[east])]
    footprints = write_footprints(tmp_path / "f.gpkg", [shapely.box(x0, y0, x0 + 10, y0 + 10)], ["a"])
    (one,) = twin.build(points=[whole], footprints=footprints, execution=Execution(unit_size_m=1000)).buildings
    (two,) = twin.build(points=halves, footprints=footprints, execution=Execution(unit_size_m=50)).buildings
    assert one.attributes["ground_method"] == "tile terrain" and one.status == "fallback"
    assert one.attributes == two.attributes
    assert 50.5 < one.attributes["h_ground"] < 51.6


def test_roof_comparison_flags_a_share_of_cells_moved_beyond_the_threshold():
    from reconstruction.change import compare_roofs, roof_signature

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 10, (2000, 2)) + (668000, 6860000)
    before = roof_signature(np.column_stack([xy, 60 + rng.normal(0, 0.03, 2000)]))
    noisy = roof_signature(np.column_stack([xy, 60 + rng.normal(0, 0.03, 2000)]))
    dormer = np.where(xy[:, 0] < 668001, 2.0, 0.0)  # a tenth of the roof raised by 2 m
    extended = roof_signature(np.column_stack([xy, 60 + dormer]))
    raised = roof_signature(np.column_stack([xy, 63.0 + 0 * xy[:, 0]]))
    assert len(before) == 100
    assert not compare_roofs(before, noisy, 1.0, 0.1).changed
    change = compare_roofs(before, extended, 1.0, 0.1)
    assert change.changed and change.share == pytest.approx(0.1) and change.height_m == pytest.approx(2.0, abs=0.1)
    assert not compare_roofs(before, extended, 1.0, 0.2).changed
    assert compare_roofs(before, raised, 1.0, 0.1).share == 1.0
    empty = roof_signature(np.empty((0, 3)))
    assert compare_roofs(before, empty, 1.0, 0.1).changed and compare_roofs(empty, raised, 1.0, 0.1).changed
    assert not compare_roofs(empty, empty, 1.0, 0.1).changed


@pytest.mark.parametrize("seed", range(20))
def test_canonical_order_is_lexicographic_with_equal_points_by_index(seed):
    """Against `np.lexsort`, on crops where x repeats a few times, a few dozen times (a
    run sorted the long way) and where whole points repeat."""
    from reconstruction.crop import canonical_order

    rng = np.random.default_rng(seed)
    points = np.round(rng.random((3000, 3)) * rng.choice([[30, 30, 8], [0.3, 30, 8], [2, 0.2, 0.1]]), 2)
    points = np.vstack([points, points[rng.integers(0, 3000, 300)]]) + [652000.0, 6862000.0, 40.0]
    assert np.array_equal(canonical_order(points), np.lexsort((points[:, 2], points[:, 1], points[:, 0])))


@pytest.mark.parametrize("seed", range(10))
def test_grid_index_sorts_the_points_by_cell_stably(seed):
    from reconstruction.crop import build_grid_index

    rng = np.random.default_rng(seed)
    xy = np.round(rng.uniform(0, rng.uniform(0.5, 95, 2), (4000, 2)), 2) + [652000.0, 6862000.0]
    xy[:40] = np.round(xy[:40] / 10) * 10  # on cell edges
    cell = float(rng.choice([0.3, 10.0]))
    index = build_grid_index(xy, cell)
    column = np.floor((xy[:, 0] - xy[:, 0].min()) / cell).astype(np.int64)
    row = np.floor((xy[:, 1] - xy[:, 1].min()) / cell).astype(np.int64)
    number = column * (row.max() + 1) + row
    assert index.ny == row.max() + 1
    assert np.array_equal(index.order, np.argsort(number, kind="stable"))
    assert np.array_equal(index.cell_starts, np.r_[0, np.cumsum(np.bincount(number))])


@pytest.mark.parametrize("seed", range(20))
def test_grid_index_crops_are_the_points_inside(seed):
    """Crops through the grid index equal a scan of all points, for regions across cell
    edges, the cloud's edges and beyond it."""
    from reconstruction.crop import build_grid_index, indices_in_polygon

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 95, (5000, 2)) + [652000.0, 6862000.0]
    xy[:50] = np.round(xy[:50] / 10) * 10  # on cell edges
    index = build_grid_index(xy)
    for _ in range(20):
        centre = rng.uniform(-20, 115, 2) + [652000.0, 6862000.0]
        region = shapely.Point(centre).buffer(rng.uniform(0.5, 40), quad_segs=3)
        expected = np.flatnonzero(shapely.contains_xy(region, xy[:, 0], xy[:, 1]))
        assert np.array_equal(indices_in_polygon(index, xy, region), expected)


def test_solids_come_back_whole_from_the_work_folder_pickles():
    from twin.model import Solid, Surface, SurfaceKind
    from twin.region.workdir import dumps, loads

    square = np.array([[0.0, 0.0, 10.0], [4.0, 0.0, 10.0], [4.0, 4.0, 10.0], [0.0, 4.0, 10.0]])
    hole = np.array([[1.0, 1.0, 10.0], [1.0, 2.0, 10.0], [2.0, 2.0, 10.0]])
    wall = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [4.0, 0.0, 10.0], [0.0, 0.0, 10.0]]) + 652000.123
    solid = Solid((
        Surface((square, hole), SurfaceKind.ROOF, {"slope": 0.0, "plane": [1, 2]}),
        Surface((wall,), SurfaceKind.WALL),
        Surface((square[::-1] - [0, 0, 10],), SurfaceKind.GROUND, {"area": 16.0}),
    ))
    for original in (solid, Solid(())):
        copy = loads(dumps({"lods": {"2.2": original}}))["lods"]["2.2"]
        assert len(copy.surfaces) == len(original.surfaces)
        for before, after in zip(original.surfaces, copy.surfaces):
            assert after.kind is before.kind and after.attributes == before.attributes
            assert type(after.attributes) is type(before.attributes)
            assert len(after.rings) == len(before.rings)
            for ring_before, ring_after in zip(before.rings, after.rings):
                assert ring_after.dtype == ring_before.dtype and np.array_equal(ring_after, ring_before)
