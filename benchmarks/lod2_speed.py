"""Prints milliseconds per building per core for the LoD2.2 step (median and 90th
percentile) and for the whole per-building chain, on the sample and the real tiles.

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
    print(f"{'case':<30}{'buildings':>10}{'LoD2.2 median ms':>18}{'p90 ms':>9}{'all steps median ms':>21}")
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
            twin.build(points=points, footprints=footprints)
        finally:
            building_step.reconstruct_lod2 = original_lod2
            unit_run.reconstruct_building = original_building
        print(
            f"{name:<30}{len(chain_ms):>10}{np.median(lod2_ms):>18.1f}{np.percentile(lod2_ms, 90):>9.1f}"
            f"{np.median(chain_ms):>21.1f}"
        )


if __name__ == "__main__":
    main()
