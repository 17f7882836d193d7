"""Prints seconds per building for texturing the sample district from its aerial survey, and
for writing the textured CityJSON (atlases included).

    .venv/bin/python benchmarks/texturing_speed.py [--repeat N]

The model is the sample district built once (LOD1.2, LOD1.3, LOD2.2); the survey is
sample_data/imagery (8 vertical and 4 oblique frames, cameras.json). Texturing time covers
camera choice (ray casting) and patch cutting for every textured LoD, with the images
already decoded (image decoding is timed apart); the best of N runs is kept.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2

import twin
from exporters.cityjson import CITYJSON_FILE, write_cityjson_file
from reconstruction.texturing import texture_buildings
from twin.config import TextureConfig
from twin.imagery.readers import read_cameras_json
from twin.model import CityModel

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model = twin.build(points=[SAMPLE / "lidar.laz"], footprints=SAMPLE / "footprints.gpkg")
    cameras = read_cameras_json(SAMPLE / "imagery" / "cameras.json")
    started = time.perf_counter()
    images = {c.name: cv2.cvtColor(cv2.imread(c.image), cv2.COLOR_BGR2RGB) for c in cameras}
    decoding = time.perf_counter() - started
    buildings = [b for b in model.buildings if b.available_lods()]
    config = TextureConfig()

    best, result = float("inf"), None
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = texture_buildings(list(model.buildings), cameras, images, config)
        best = min(best, time.perf_counter() - started)
    textured, report = result
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        written = write_cityjson_file(CityModel(tuple(textured), model.crs, model.metadata), Path(folder) / CITYJSON_FILE,
                                      config)
        writing = time.perf_counter() - started
        atlas_bytes = sum(p.stat().st_size for p in written[1:])
        pixels = sum(cv2.imread(str(p)).shape[0] * cv2.imread(str(p)).shape[1] for p in written[1:])

    counts = report.to_dict()
    print(f"sample district: {len(buildings)} buildings, {len(cameras)} images "
          f"({cameras[0].intrinsics.width} x {cameras[0].intrinsics.height}), LoDs {', '.join(config.lods)}")
    print(f"surfaces: {counts['surfaces']} roof and wall, {counts['textured']} textured, "
          f"{counts['seen_by_no_image']} seen by no image; images used: {len(counts['images_used'])}")
    for lod, lod_counts in counts["per_lod"].items():
        print(f"  LoD {lod}: {lod_counts['textured']} of {lod_counts['surfaces']} textured")
    print(f"image decoding: {decoding:.2f} s for {len(cameras)} images")
    print(f"texturing: {best:.2f} s, {best / len(buildings) * 1000:.1f} ms per building (best of {args.repeat})")
    print(f"CityJSON with atlases: {writing:.2f} s, {writing / len(buildings) * 1000:.1f} ms per building; "
          f"{len(written) - 1} atlas(es), {pixels / 1e6:.2f} Mpx, {atlas_bytes / len(buildings) / 1024:.1f} KiB per building")


if __name__ == "__main__":
    main()
