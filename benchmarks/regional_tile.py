"""Throughput of one LiDAR HD-like tile, for regional runs: a synthetic 1 km x 1 km tile at
~20 points/m² with ~1,000 buildings, generated here with the sample's scene and scan
simulator, then built end to end by `twin build` in a fresh process.

    .venv/bin/python benchmarks/regional_tile.py [--data DIR] [--repeat N] [--workers N] [--no-save]

Prints the bare LAZ decode time of the tile (laspy + lazrs, every field, on all cores and
on one), the wall and CPU time of `twin build` on it (targets: at most 3x the decode
time, peak memory at most 2 GB), points/s, buildings/s, and the wall time extrapolated to
all of Île-de-France (~12,000 km²) on 64 cores, where every core runs its own unit.
Unless --no-save, the measured rates of a 1-worker run are written to
twin/region/throughput.json, which `twin plan` uses for its estimates. With --workers N,
the tile's buildings are reconstructed in N processes.

The tile is generated once (a few minutes) and kept in --data (default: a folder in the
system's temporary directory).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import laspy
import numpy as np
import pyogrio
import shapely

ROOT = Path(__file__).resolve().parents[1]
THROUGHPUT_FILE = ROOT / "twin/region/throughput.json"
TILE_M = 1000.0
ORIGIN = (652000.0, 6862000.0)
"""A LiDAR HD tile's corner (1 km grid, Lambert-93) in the Paris suburbs."""
PLOT_M = 31.0
SEED = 7
ILE_DE_FRANCE_KM2 = 12_000
CORES = 64


def make_tile(folder: Path) -> tuple[Path, Path]:
    """The synthetic tile (LAZ) and its footprints (GPKG), made once."""
    from twin.sample.generate import write_scan_laz
    from twin.sample.lidar import ScanSettings, simulate_scan

    laz, footprints = folder / "tile.laz", folder / "footprints.gpkg"
    if laz.exists() and footprints.exists():
        return laz, footprints
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    buildings, trees = _scene(rng)
    # Three flight lines 384 m apart at 1,000 m (swaths of 768 m): every place is seen
    # from two of them, as in LiDAR HD's overlapping strips.
    settings = ScanSettings(strip_x_m=(116.0, 500.0, 884.0), pulses_per_m2_per_strip=11.0, class_67_buildings=())
    started = time.perf_counter()
    scan = simulate_scan(buildings, trees, rng, settings, extent=(TILE_M, TILE_M))
    inside = (scan.xyz[:, 0] >= 0) & (scan.xyz[:, 0] < TILE_M) & (scan.xyz[:, 1] >= 0) & (scan.xyz[:, 1] < TILE_M)
    scan = type(scan)(**{name: value[inside] for name, value in scan.__dict__.items()})
    write_scan_laz(laz, scan, ORIGIN)
    _write_footprints(footprints, buildings, rng)
    print(f"generated the tile in {time.perf_counter() - started:.0f} s into {folder}")
    return laz, footprints


def _scene(rng: np.random.Generator):
    """About 1,000 buildings on a grid of plots (houses, hip roofs, flat blocks, L-shapes,
    towers on podiums, sheds), trees along the streets."""
    from twin.sample.scene import SceneBuilding, Tree, flat, gabled, hipped, rectangle, shed, terrain_height

    buildings = []
    plots = int(TILE_M // PLOT_M)
    for i in range(plots):
        for j in range(plots):
            if rng.random() < 0.04:
                continue  # an empty plot
            cx = (i + 0.5) * PLOT_M + rng.uniform(-1.5, 1.5)
            cy = (j + 0.5) * PLOT_M + rng.uniform(-1.5, 1.5)
            angle = rng.uniform(-12, 12)
            kind = rng.choice(["gable", "hip", "flat", "L-shaped gable", "tower on podium", "shed"],
                              p=[0.45, 0.15, 0.2, 0.08, 0.07, 0.05])

            def wings(ground: float, kind=kind, cx=cx, cy=cy, angle=angle, r=rng.random(6)):
                length, width = 9 + 6 * r[0], 7 + 3 * r[1]
                eave, pitch = 4.5 + 2.5 * r[2], 30 + 15 * r[3]
                if kind == "gable":
                    return [gabled(rectangle(cx, cy, length, width, angle), ground + eave, pitch)]
                if kind == "hip":
                    return [hipped(rectangle(cx, cy, length, width, angle), ground + eave, pitch)]
                if kind == "flat":
                    return [flat(rectangle(cx, cy, 10 + 12 * r[0], 8 + 10 * r[1], angle), ground + 4 + 14 * r[4])]
                if kind == "L-shaped gable":
                    main = rectangle(cx, cy, 16, 7.5, angle)
                    arm = np.radians(angle)
                    ex, ey = cx + 4.25 * np.cos(arm) - 5.5 * np.sin(arm), cy + 4.25 * np.sin(arm) + 5.5 * np.cos(arm)
                    return [gabled(main, ground + eave, 38), gabled(rectangle(ex, ey, 7.5, 11, angle), ground + eave, 38)]
                if kind == "tower on podium":
                    return [flat(rectangle(cx, cy, 20, 16, angle), ground + 5), flat(rectangle(cx, cy, 9, 9, angle), ground + 20 + 10 * r[5])]
                return [shed(rectangle(cx, cy, 4 + 4 * r[0], 3 + 3 * r[1], angle), ground + 2.5, 12)]

            outline = shapely.union_all([w.polygon for w in wings(0.0)])
            xy = np.asarray(shapely.segmentize(outline.exterior, 0.25).coords)
            ground = round(float(terrain_height(xy[:, 0], xy[:, 1]).min()), 3)
            buildings.append(SceneBuilding(f"BATIMENT{len(buildings):010d}", str(kind), tuple(wings(ground)), ground))
    trees = []
    for _ in range(900):
        x, y = rng.uniform(0, TILE_M, 2)
        on_street = min(x % PLOT_M, PLOT_M - x % PLOT_M, y % PLOT_M, PLOT_M - y % PLOT_M) < 3
        if on_street:
            radius = rng.uniform(2, 4.5)
            trees.append(Tree(x, y, radius, rng.uniform(2, 4), rng.uniform(8, 16)))
    return buildings, trees


def _write_footprints(path: Path, buildings, rng: np.random.Generator) -> None:
    """True footprints moved by a digitising offset of 0.2-0.4 m, BD TOPO style ids."""
    geometries = []
    for building in buildings:
        magnitude, direction = rng.uniform(0.2, 0.4), rng.uniform(0, 2 * np.pi)
        moved = shapely.affinity.translate(
            building.footprint, ORIGIN[0] + magnitude * np.cos(direction), ORIGIN[1] + magnitude * np.sin(direction)
        )
        geometries.append(shapely.to_wkb(moved))
    pyogrio.raw.write(
        path,
        geometry=np.array(geometries, dtype=object),
        field_data=[np.array([b.id for b in buildings], dtype=object), np.array([b.shape for b in buildings], dtype=object)],
        fields=["cleabs", "nature"],
        layer="batiment",
        driver="GPKG",
        crs="EPSG:2154",
        geometry_type="Polygon",
    )


def best_time(action, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def decode(path: Path, backend: laspy.LazBackend) -> None:
    with laspy.open(path, laz_backend=backend) as reader:
        for _ in reader.chunk_iterator(2_000_000):
            pass


# Runs a command and prints, as JSON, its CPU seconds, the peak memory of its largest
# process and the peak of all its processes together (sampled every 0.2 s; psutil comes
# with dask). Linux keeps a process's peak memory across exec, so a child started by this
# benchmark, which has decoded the whole tile, would report this process's peak instead of
# its own: a small launcher process starts the build instead.
LAUNCHER = """
import json, resource, subprocess, sys, psutil
child = subprocess.Popen(sys.argv[1:])
tree, total_mb = psutil.Process(child.pid), 0.0
while child.poll() is None:
    try:
        processes = [tree, *tree.children(recursive=True)]
        total_mb = max(total_mb, sum(p.memory_info().rss for p in processes) / 2**20)
    except psutil.Error:
        pass
    try:
        child.wait(0.2)
    except subprocess.TimeoutExpired:
        pass
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"code": child.returncode, "cpu": usage.ru_utime + usage.ru_stime,
                  "peak_mb": usage.ru_maxrss / 1024, "total_peak_mb": total_mb}))
"""


def twin_build(laz: Path, footprints: Path, out: Path, workers: int) -> tuple[float, float, float, float, dict]:
    """Wall time, CPU time, peak memory (MB) of its largest process and of all its
    processes together, of `twin build` in a fresh process; and its run report."""
    work = out / "work"
    command = [sys.executable, "-m", "twin", "build", "--points", str(laz), "--footprints", str(footprints),
               "--out", str(out), "--format", "cityjsonseq", "--work-dir", str(work), "--workers", str(workers)]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    usage = json.loads(result.stdout.splitlines()[-1]) if result.returncode == 0 else {"code": result.returncode}
    if usage["code"] != 0:
        raise SystemExit(f"twin build failed:\n{result.stderr}")
    report = json.loads((work / "report.json").read_text())
    return seconds, usage["cpu"], usage["peak_mb"], usage["total_peak_mb"], report


def neighbour_reads(footprints: Path, ring_m: float) -> int:
    """How many of the 8 neighbouring tiles a unit of this tile must read: those that some
    building's ground ring reaches into (all of them read in full, as LAZ has no index)."""
    _, _, wkb, _ = pyogrio.raw.read(footprints, columns=[])
    bounds = shapely.bounds(shapely.from_wkb(wkb))
    x0, y0 = ORIGIN
    west, south = (bounds[:, 0] - ring_m < x0), (bounds[:, 1] - ring_m < y0)
    east, north = (bounds[:, 2] + ring_m >= x0 + TILE_M), (bounds[:, 3] + ring_m >= y0 + TILE_M)
    sides = [west, east, south, north, west & south, west & north, east & south, east & north]
    return sum(bool(side.any()) for side in sides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "twin-benchmark-tile")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-save", action="store_true", help="do not update twin/region/throughput.json")
    args = parser.parse_args()

    laz, footprints = make_tile(args.data)
    header = laspy.open(laz).header
    points = header.point_count
    buildings = pyogrio.read_info(footprints)["features"]
    density = points / (TILE_M * TILE_M)
    print(f"tile: {TILE_M:.0f} m x {TILE_M:.0f} m, {points:,} points ({density:.1f}/m²), {buildings:,} buildings")

    decode_s = best_time(lambda: decode(laz, laspy.LazBackend.LazrsParallel), args.repeat)
    decode_one_s = best_time(lambda: decode(laz, laspy.LazBackend.Lazrs), args.repeat)
    print(f"bare LAZ decode (laspy + lazrs, every field): {decode_s:6.2f} s on all cores, {decode_one_s:.2f} s on one "
          f"({points / decode_one_s / 1e6:.2f} M points/s per core)")

    from twin.config import ClassMapping, GroundConfig
    from twin.inputs.points import read_file

    read_one_s = best_time(lambda: read_file(str(laz), ClassMapping(), None, parallel=False), args.repeat)
    print(f"twin's reader (needed fields, classes kept) on one core: {read_one_s:.2f} s")

    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as out:
            runs.append(twin_build(laz, footprints, Path(out), args.workers))
    build_s, cpu_s, peak_mb, total_peak_mb, report = min(runs, key=lambda r: r[0])
    (unit,) = report["per_unit"]
    print(f"twin build, {args.workers} worker(s), end to end: {build_s:6.2f} s wall, {build_s / decode_s:.2f}x the "
          f"decode on all cores; {cpu_s:.2f} s CPU, {cpu_s / decode_one_s:.2f}x the decode on one core (target <= 3x)")
    print(f"  in the unit: reading {unit['read_seconds']:.2f} s, the rest (crops, reconstruction) {unit['reconstruct_seconds']:.2f} s")
    print(f"  points/s:     {points / build_s / 1e6:.2f} M")
    print(f"  buildings/s:  {buildings / build_s:.1f}")
    print(f"  peak RSS:     {peak_mb:,.0f} MB in the largest process (target <= 2,048 MB), "
          f"{total_peak_mb:,.0f} MB in all its processes together")

    # Regionally every core runs its own unit, decoding on one core: CPU time is what counts.
    neighbours = neighbour_reads(footprints, GroundConfig().ring_width_m)
    per_tile = cpu_s + neighbours * read_one_s
    hours = ILE_DE_FRANCE_KM2 * per_tile / CORES / 3600
    print(
        f"Île-de-France ({ILE_DE_FRANCE_KM2:,} km², {ILE_DE_FRANCE_KM2:,} such tiles) on {CORES} cores: {hours:.1f} h "
        f"({per_tile:.1f} CPU s per tile: its own build plus {neighbours} neighbouring tile(s) decoded for the "
        f"buildings on its edges; {ILE_DE_FRANCE_KM2 * (cpu_s + 8 * read_one_s) / CORES / 3600:.1f} h if every "
        "tile needed all 8 neighbours)"
    )
    if args.workers > 1:
        print("not saved: twin plan's rates are per core, measured with --workers 1")
    elif not args.no_save:
        figures = {
            "measured_by": "benchmarks/regional_tile.py",
            "machine": {"cores": _cores(), "python": platform.python_version()},
            "tile": {"points": points, "buildings": buildings, "size_m": TILE_M},
            "decode_points_per_s": round(points / decode_one_s),
            "read_points_per_s": round(points / read_one_s),
            "buildings_per_s": round(buildings / unit["reconstruct_seconds"], 1),
            "end_to_end_seconds": round(build_s, 2),
            "end_to_end_cpu_seconds": round(cpu_s, 2),
            "peak_rss_mb": round(peak_mb),
            "rss_mb_per_million_points": round(peak_mb / (unit["points_decoded"] / 1e6), 1),
            "neighbour_reads_per_unit": neighbours,
        }
        THROUGHPUT_FILE.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"saved the rates in {THROUGHPUT_FILE.relative_to(ROOT)}")


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    main()
