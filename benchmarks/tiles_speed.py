"""Prints, for 3D Tiles, buildings per second of tiling and bytes per building, without and with
compression, for each LoD present (LOD1.2, LOD1.3 and, when the model has it, LoD2.2).

    .venv/bin/python benchmarks/tiles_speed.py [--repeat N] [--copies K]

The model is the sample district (or the IGN data of the shared folder), built once; `--copies`
tiles K shifted copies of it side by side (default 30, about 1,000 buildings) so that tiles hold
realistic numbers of buildings. Tiling time covers the whole exporter (triangulation, heights,
glTF, metadata, tileset files); bytes per building count the .glb files of each LoD. Heights use
the geoid grids of $TWIN_SHARED/data/proj (default ../shared/data/proj) or $TWIN_PROJ_DATA.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import shapely

import twin
from exporters.tiles3d import write_3dtiles
from twin.config import BuildConfig, TilesConfig
from twin.heights import add_proj_data_dirs
from twin.model import BuildingPart, CityModel, Solid, Surface

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TWIN_SHARED", ROOT.parent / "shared"))


def shifted(model: CityModel, copies: int) -> CityModel:
    """`copies` copies of the model's buildings on a grid, 300 m apart, with unique ids."""
    def move_solid(solid: Solid, offset: np.ndarray) -> Solid:
        return Solid(tuple(Surface(tuple(r + offset for r in s.rings), s.kind, s.attributes) for s in solid.surfaces))

    buildings = []
    side = int(np.ceil(np.sqrt(copies)))
    for copy in range(copies):
        offset = np.array([300.0 * (copy % side), 300.0 * (copy // side), 0.0])
        for b in model.buildings:
            buildings.append(replace(
                b,
                id=f"{b.id}_{copy}",
                footprint=shapely.transform(b.footprint, lambda xy: xy + offset[:2]),
                attributes={**b.attributes, "commune": None},
                lods={lod: move_solid(s, offset) for lod, s in b.lods.items()},
                parts=tuple(BuildingPart(f"{p.id}_{copy}", {lod: move_solid(s, offset) for lod, s in p.lods.items()}, p.attributes) for p in b.parts),
            ))
    return CityModel(tuple(buildings), model.crs, model.metadata, ())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=30)
    args = parser.parse_args()
    if (SHARED / "data/proj").is_dir():
        add_proj_data_dirs([SHARED / "data/proj"])
    base = twin.build(points=[ROOT / "sample_data/lidar.laz"], footprints=ROOT / "sample_data/footprints.gpkg")
    model = shifted(base, args.copies)
    lods = sorted({lod for b in model.buildings for lod in b.available_lods()}, key=float)
    count = sum(1 for b in model.buildings if b.available_lods())
    print(f"{count} buildings (sample district x {args.copies}), LoDs {', '.join(lods)}; best of {args.repeat} runs")
    header = f"{'compression':<12}{'tiling s':>10}{'buildings/s':>13}" + "".join(f"{'B/building LoD' + lod:>20}" for lod in lods)
    print(header + f"{'B/building all':>16}")
    for compression in ("none", "quantize", "meshopt"):
        config = BuildConfig(tiles=TilesConfig(compression=compression))
        best = float("inf")
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(args.repeat):
                start = time.perf_counter()
                write_3dtiles(model, Path(folder), config)
                best = min(best, time.perf_counter() - start)
            glbs = list(Path(folder, "tiles").rglob("*.glb"))
            per_lod = [sum(p.stat().st_size for p in glbs if p.stem.endswith(f"lod{lod.replace('.', '')}")) / count for lod in lods]
            total = sum(p.stat().st_size for p in Path(folder, "tiles").rglob("*") if p.is_file()) / count
        print(f"{compression:<12}{best:>10.2f}{count / best:>13.0f}" + "".join(f"{b:>20.0f}" for b in per_lod) + f"{total:>16.0f}")


if __name__ == "__main__":
    main()
