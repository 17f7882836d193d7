"""Seconds per image pair of dense matching (rectification, semi-global matching both ways,
triangulation) on the sample's vertical images, and points per second.

    python benchmarks/matching_speed.py [--scale 0.5]

Run `twin sample` first if sample_data/imagery/ is absent.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from reconstruction.stereo import match_pair, rectify_pair
from twin.imagery.images import ImagesOnDemand
from twin.imagery.readers import read_cameras_json
from twin.photogrammetry import auto_pairs

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"
HEIGHT_RANGE = (45.0, 90.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="resize factor of the matched images")
    arguments = parser.parse_args()
    cameras = read_cameras_json(SAMPLE / "imagery" / "cameras.json")
    pairs = auto_pairs(cameras, HEIGHT_RANGE)
    # Read when a pair needs them, as `twin match` does, and outside the timed part.
    images = ImagesOnDemand(cameras, SAMPLE / "imagery" / "cameras.json")
    total_seconds, total_points = 0.0, 0
    for first, second in pairs:
        left, right = images[cameras[first].name], images[cameras[second].name]
        started = time.perf_counter()
        rectified = rectify_pair(cameras[first], cameras[second], arguments.scale)
        points = match_pair(rectified, left, right, HEIGHT_RANGE)
        seconds = time.perf_counter() - started
        total_seconds += seconds
        total_points += len(points.xyz)
        width, height = rectified.size
        print(f"{cameras[first].name} / {cameras[second].name}: {width} x {height} rectified, "
              f"{seconds:.2f} s, {len(points.xyz):,} points")
    print(f"{len(pairs)} pairs at scale {arguments.scale}: {total_seconds / len(pairs):.2f} s per pair, "
          f"{total_points / total_seconds:,.0f} points per second")


if __name__ == "__main__":
    main()
