"""Prints buildings per second and the ratio of `twin build` time to the bare time of
decoding the same LAZ points with laspy + lazrs, on the sample and on real tiles.

    .venv/bin/python benchmarks/build_speed.py [--repeat N]

Real tiles are read from $TWIN_SHARED/data (default ../shared/data); they are skipped
when that folder is absent. Times are the best of N runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import laspy

import twin

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TWIN_SHARED", ROOT.parent / "shared")) / "data"

CASES = [
    ("sample district", [ROOT / "sample_data/lidar.laz"], ROOT / "sample_data/footprints.gpkg"),
    (
        "IGN LiDAR HD + BD TOPO",
        [SHARED_DATA / "lidarhd/bdtopo-870000-6618000/lidar.laz"],
        SHARED_DATA / "lidarhd/bdtopo-870000-6618000/bdtopo_batiments.shp",
    ),
]


def best_time(action, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - start)
    return best, result


def decode(paths: list[Path]) -> int:
    count = 0
    for path in paths:
        with laspy.open(path) as reader:
            for chunk in reader.chunk_iterator(2_000_000):
                count += len(chunk.x)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'case':<26}{'points':>10}{'buildings':>11}{'decode s':>10}{'build s':>9}{'build/decode':>14}{'buildings/s':>13}")
    for name, points, footprints in CASES:
        if not all(p.exists() for p in [*points, footprints]):
            print(f"{name:<26}skipped: input files absent")
            continue
        decode_s, count = best_time(lambda: decode(points), args.repeat)
        with tempfile.TemporaryDirectory() as out:
            build_s, model = best_time(lambda: twin.build(points=points, footprints=footprints, out_dir=out), args.repeat)
        built = sum(1 for b in model.buildings if b.lods)
        print(
            f"{name:<26}{count:>10,}{built:>11}{decode_s:>10.3f}{build_s:>9.3f}{build_s / decode_s:>14.1f}"
            f"{built / build_s:>13.1f}"
        )


if __name__ == "__main__":
    main()
