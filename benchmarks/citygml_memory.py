"""Prints the streaming CityGML writers' peak memory for N and 10 x N buildings, to show
that it stays flat as a commune grows.

    .venv/bin/python benchmarks/citygml_memory.py [--buildings N]

The buildings are the sample district's LoD 2.2 ground truth (sample_data/truth.city.json,
with its semantic surfaces), replicated side by side with new ids and generated one at
a time, so that neither the model nor the XML is ever whole in memory. Each size runs in
its own process; the figures are that process's growth in peak resident memory while
writing (VmHWM, from /proc) and the peak of Python allocations (tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data/truth.city.json"
SPACING_M = 300.0
"""Replicas are laid out along x, one sample district (about 200 m wide) apart."""


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


def _shifted_solid(solid, offset: np.ndarray):
    surfaces = tuple(replace(f, rings=tuple(r + offset for r in f.rings)) for f in solid.surfaces)
    return replace(solid, surfaces=surfaces)


def _shifted(building, offset: np.ndarray, suffix: str):
    return replace(
        building,
        id=f"{building.id}{suffix}",
        footprint=shapely.affinity.translate(building.footprint, *offset[:2]),
        lods={lod: _shifted_solid(s, offset) for lod, s in building.lods.items()},
        parts=tuple(replace(p, id=f"{p.id}{suffix}", lods={lod: _shifted_solid(s, offset) for lod, s in p.lods.items()})
                    for p in building.parts),
    )


def _replicas(sample, count: int) -> Iterator:
    per_copy = len(sample.buildings)
    for index in range(count):
        copy, position = divmod(index, per_copy)
        yield _shifted(sample.buildings[position], np.array([copy * SPACING_M, 0.0, 0.0]), f"_r{copy}")


def measure(count: int, version: str) -> dict:
    """Runs in a child process: writes `count` buildings, returns the figures."""
    from exporters.citygml import model_envelope, write_citygml_file
    from twin.gml import CITYGML2, CITYGML3
    from twin.inputs.citymodels import read_city_model

    sample = read_city_model(SAMPLE)
    copies = -(-count // len(sample.buildings))
    low, high = model_envelope(sample.buildings)
    envelope = (low, high + np.array([(copies - 1) * SPACING_M, 0.0, 0.0]))
    dialect = CITYGML3 if version == "3.0" else CITYGML2
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "buildings.gml"
        before = _peak_rss_kib()
        tracemalloc.start()
        start = time.perf_counter()
        write_citygml_file(path, dialect, _replicas(sample, count), sample.crs, envelope, {"title": "benchmark"})
        seconds = time.perf_counter() - start
        _, python_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {
            "buildings": count,
            "megabytes_written": path.stat().st_size / 1e6,
            "seconds": seconds,
            "rss_growth_mib": (_peak_rss_kib() - before) / 1024,
            "python_peak_mib": python_peak / 2**20,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildings", type=int, default=1000, help="N (the second run writes 10 x N)")
    parser.add_argument("--child", nargs=2, metavar=("COUNT", "VERSION"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure(int(arguments.child[0]), arguments.child[1])))
        return
    print(f"{'CityGML':>8} {'buildings':>10} {'MB written':>11} {'seconds':>8} {'buildings/s':>12} "
          f"{'peak RSS growth (MiB)':>22} {'Python peak (MiB)':>18}")
    for version in ("3.0", "2.0"):
        for count in (arguments.buildings, 10 * arguments.buildings):
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(count), version], capture_output=True, text=True,
                check=True, cwd=ROOT,
            ).stdout
            figures = json.loads(output)
            print(f"{version:>8} {figures['buildings']:>10} {figures['megabytes_written']:>11.1f} "
                  f"{figures['seconds']:>8.1f} {figures['buildings'] / figures['seconds']:>12.0f} "
                  f"{figures['rss_growth_mib']:>22.1f} {figures['python_peak_mib']:>18.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
