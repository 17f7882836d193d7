"""Prints, for 3D Tiles, buildings per second of tiling and bytes per building, without and with
compression, for each LoD present (LOD1.2, LOD1.3 and, when the model has it, LoD2.2).

    .venv/bin/python benchmarks/tiles_speed.py [--repeat N] [--copies K]

The model is the sample district (or the IGN data of the shared folder), built once; `--copies`
tiles K shifted copies of it side by side (default 30, about 1,000 buildings) so that tiles hold
realistic numbers of buildings. Tiling time covers the whole exporter (triangulation, heights,
glTF, metadata, tileset files); bytes per building count the .glb files of each LoD. Heights use
the geoid grids of $TWIN_SHARED/data/proj (default ../shared/data/proj) or $TWIN_PROJ_DATA.

Then the same with every roof and wall textured ("textured" rows): patches of `--texel-m` metres
per pixel (default 0.1, an oblique aerial survey's resolution) cut from the shared drone images
($TWIN_SHARED/data/imagery/odm-oblique-drone), so that the JPEG atlases hold real image content.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import shapely

import twin
from exporters.tiles3d import write_3dtiles
from reconstruction.geometry import surface_normal
from twin.config import BuildConfig, TilesConfig
from twin.heights import add_proj_data_dirs
from twin.model import BuildingPart, CityModel, Solid, Surface, SurfaceKind, SurfaceTexture

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


def face_uv(surface: Surface) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Per ring, the surface's plane coordinates (u right seen from outside, v up) scaled to [0, 1],
    and the surface's extent in metres along u and v."""
    normal = surface_normal(surface)
    right = np.cross([0.0, 0.0, 1.0], normal)
    right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-6 else np.array([1.0, 0.0, 0.0])
    up = np.cross(normal, right)
    planar = [np.column_stack([ring @ right, ring @ up]) for ring in surface.rings]
    low = planar[0].min(axis=0)
    extent = np.maximum(planar[0].max(axis=0) - low, 1e-6)
    return tuple((p - low) / extent for p in planar), extent


def textured(model: CityModel, images: list[np.ndarray], texel_m: float) -> CityModel:
    """The model with every roof and wall of every LoD textured by a crop of one of `images`."""
    buildings = []
    for number, building in enumerate(model.buildings):
        textures = {}
        for lod in building.available_lods():
            for solid_index, solid in enumerate(building.solids(lod)):
                for surface_index, surface in enumerate(solid.surfaces):
                    if surface.kind == SurfaceKind.GROUND:
                        continue
                    uv, extent = face_uv(surface)
                    image = images[(number + surface_index) % len(images)]
                    width, height = (int(np.clip(round(e / texel_m), 2, min(image.shape[:2]))) for e in extent)
                    y = (number * 37 + surface_index * 101) % (image.shape[0] - height + 1)
                    x = (number * 53 + surface_index * 59) % (image.shape[1] - width + 1)
                    patch = np.ascontiguousarray(image[y:y + height, x:x + width])
                    textures[(lod, solid_index, surface_index)] = SurfaceTexture(patch, uv, "benchmark")
        buildings.append(replace(building, textures=textures))
    return CityModel(tuple(buildings), model.crs, model.metadata, model.communes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--copies", type=int, default=30)
    parser.add_argument("--texel-m", type=float, default=0.1)
    args = parser.parse_args()
    if (SHARED / "data/proj").is_dir():
        add_proj_data_dirs([SHARED / "data/proj"])
    base = twin.build(points=[ROOT / "sample_data/lidar.laz"], footprints=ROOT / "sample_data/footprints.gpkg")
    model = shifted(base, args.copies)
    lods = sorted({lod for b in model.buildings for lod in b.available_lods()}, key=float)
    count = sum(1 for b in model.buildings if b.available_lods())
    print(f"{count} buildings (sample district x {args.copies}), LoDs {', '.join(lods)}; best of {args.repeat} runs")
    header = f"{'compression':<18}{'tiling s':>10}{'buildings/s':>13}" + "".join(f"{'B/building LoD' + lod:>20}" for lod in lods)
    print(header + f"{'B/building all':>16}")
    runs = [(compression, model) for compression in ("none", "quantize", "meshopt")]
    image_dir = SHARED / "data/imagery/odm-oblique-drone/images"
    if image_dir.is_dir():
        images = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(image_dir.glob("*.tif"))]
        model_textured = textured(model, images, args.texel_m)
        runs += [(f"{compression} textured", model_textured) for compression in ("none", "meshopt")]
    else:
        print(f"no {image_dir}: no textured runs")
    for label, run_model in runs:
        config = BuildConfig(tiles=TilesConfig(compression=label.split()[0]))
        best = float("inf")
        with tempfile.TemporaryDirectory() as folder:
            for _ in range(args.repeat):
                start = time.perf_counter()
                write_3dtiles(run_model, Path(folder), config)
                best = min(best, time.perf_counter() - start)
            glbs = list(Path(folder, "tiles").rglob("*.glb"))
            per_lod = [sum(p.stat().st_size for p in glbs if p.stem.endswith(f"lod{lod.replace('.', '')}")) / count for lod in lods]
            total = sum(p.stat().st_size for p in Path(folder, "tiles").rglob("*") if p.is_file()) / count
        print(f"{label:<18}{best:>10.2f}{count / best:>13.0f}" + "".join(f"{b:>20.0f}" for b in per_lod) + f"{total:>16.0f}")


if __name__ == "__main__":
    main()
