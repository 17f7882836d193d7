"""Wavefront OBJ mesh for 3D modellers and CAD tools (`buildings.obj`), written by trimesh.

One object (`o <building id>`) per building with its highest LoD (LoD 2.2 where built,
else LOD1.3, else LOD1.2), triangulated, each solid closed and outward-facing.
Coordinates are metres in the model's CRS minus a round origin, written in the file's
first line, because CAD tools lose precision on Lambert-93's seven-digit coordinates;
z is the height above the vertical datum (z up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from exporters import register
from exporters.atomic import atomic_output
from reconstruction.triangulate import triangulate_solid
from twin.geodesy import crs_uri
from twin.model import Building, CityModel

OBJ_FILE = "buildings.obj"
ORIGIN_STEP_M = 1000.0


@register("obj", f"Wavefront OBJ mesh, one object per building, highest LoD ({OBJ_FILE})", drops_textures=True)
def write_obj(model: CityModel, out_dir: Path) -> list[Path]:
    # Imported here: every run loads the registry of exporters, and trimesh is slow to import.
    import trimesh
    from trimesh.exchange.obj import export_obj

    path = out_dir / OBJ_FILE
    origin = mesh_origin(model)
    scene = trimesh.Scene()
    for building in model.buildings:
        mesh = building_mesh(building, origin)
        if mesh is not None:
            scene.add_geometry(trimesh.Trimesh(*mesh, process=False), geom_name=building.id, node_name=building.id)
    header = (
        f"twin buildings, CRS {crs_uri(model.crs)}, coordinates minus origin "
        f"{origin[0]:.0f} {origin[1]:.0f} {origin[2]:.0f} (m, z up)"
    )
    text = export_obj(scene, include_normals=False, include_color=False, include_texture=False, digits=3,
                      header=header) if scene.geometry else f"# {header}\n"
    with atomic_output(path) as stream:
        stream.write(text)
    return [path]


def mesh_origin(model: CityModel) -> np.ndarray:
    """The corner of the kilometre grid below the buildings (z 0, heights kept as they are)."""
    corners = [s.vertices().min(axis=0) for b in model.buildings for lod in b.available_lods() for s in b.solids(lod)]
    if not corners:
        return np.zeros(3)
    low = np.min(corners, axis=0)
    return np.array([np.floor(low[0] / ORIGIN_STEP_M) * ORIGIN_STEP_M, np.floor(low[1] / ORIGIN_STEP_M) * ORIGIN_STEP_M, 0.0])


def building_mesh(building: Building, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The building's highest LoD as one mesh (vertices, triangles); its solids keep their own
    vertices, so parts touching each other stay separate closed shells."""
    lods = building.available_lods()
    if not lods:
        return None
    vertices, triangles, offset = [], [], 0
    for solid in building.solids(lods[-1]):
        solid_vertices, solid_triangles = triangulate_solid(solid)
        vertices.append(solid_vertices - origin)
        triangles.append(solid_triangles + offset)
        offset += len(solid_vertices)
    return np.concatenate(vertices), np.concatenate(triangles)
