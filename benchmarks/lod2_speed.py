"""Prints milliseconds per building per core for the LoD2.2 step (median and 90th
percentile) and for the whole per-building chain, on the sample and the real tiles, with
the median LoD2.2 RMSE to the buildings' own points (issue target: 0.20 m on real tiles).

    .venv/bin/python benchmarks/lod2_speed.py

Real tiles are read from $TWIN_SHARED/data (default ../shared/data), skipped when absent.
Runs on one core: the figures are per building per core.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import reconstruction.building as building_step
import twin
import twin.region.unit_run as unit_run

ROOT = Path(__file__).resolve().parents[1]
LIDAR = Path(os.environ.get("TWIN_SHARED", ROOT.parent / "shared")) / "data/lidarhd"


def cases():
    yield "sample district", [ROOT / "sample_data/lidar.laz"], ROOT / "sample_data/footprints.gpkg"
    yield "BD TOPO + LiDAR HD", [LIDAR / "bdtopo-870000-6618000/lidar.laz"], LIDAR / "bdtopo-870000-6618000/bdtopo_batiments.shp"
    if (LIDAR / "montpellier").is_dir():
        yield "Montpellier (no footprints)", sorted((LIDAR / "montpellier").glob("*.laz")), None
    yield "Alps house (no footprints)", [LIDAR / "edge-cases/single_building_alps.laz"], None
    yield "ENSG campus (no footprints)", [LIDAR / "champs-sur-marne/ensg_campus.laz"], None


def timed(function, sink: list[float], counted=lambda result: True):
    """`function`, appending each call's milliseconds to `sink` when `counted(result)`."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        if counted(result):
            sink.append((time.perf_counter() - start) * 1000)
        return result

    return wrapper


def main() -> None:
    original_lod2, original_building = building_step.reconstruct_lod2, building_step.reconstruct_building
    print(f"{'case':<30}{'buildings':>10}{'LoD2.2 median ms':>18}{'p90 ms':>9}{'all steps median ms':>21}"
          f"{'median RMSE m':>15}")
    real_rmse: dict[str, list[float]] = {}
    for name, points, footprints in cases():
        if not all(p.exists() for p in points):
            print(f"{name:<30}skipped: input files absent")
            continue
        lod2_ms: list[float] = []
        chain_ms: list[float] = []
        # With the default single worker, units run in this process, where these names are looked up per call.
        building_step.reconstruct_lod2 = timed(original_lod2, lod2_ms)
        # Footprints without points (outside the tile) take no time and are left out.
        unit_run.reconstruct_building = timed(original_building, chain_ms, lambda building: bool(building.lods))
        try:
            model = twin.build(points=points, footprints=footprints)
        finally:
            building_step.reconstruct_lod2 = original_lod2
            unit_run.reconstruct_building = original_building
        rmse = [b.attributes["rmse_lod22"] for b in model.buildings if b.lods]
        if name != "sample district":
            real_rmse[name] = rmse
        print(
            f"{name:<30}{len(chain_ms):>10}{np.median(lod2_ms):>18.1f}{np.percentile(lod2_ms, 90):>9.1f}"
            f"{np.median(chain_ms):>21.1f}{np.median(rmse):>15.3f}"
        )
    derived = [r for name, values in real_rmse.items() if "no footprints" in name for r in values]
    every = [r for values in real_rmse.values() for r in values]
    if every:
        print(f"median LoD2.2 RMSE over the real tiles' buildings: {np.median(every):.3f} m ({len(every)} buildings); "
              f"with outlines derived from the points: {np.median(derived):.3f} m ({len(derived)})")


if __name__ == "__main__":
    main()
