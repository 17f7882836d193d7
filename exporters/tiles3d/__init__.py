"""3D Tiles 1.1: one tileset per commune under a regional root, glTF content, per-building metadata.

Layout of the output folder's `tiles/`:

    tiles/tileset.json             regional root: each commune's tileset as an external tileset
    tiles/schema.json              the metadata schema (the `building` class) the tiles refer to
    tiles/<INSEE code>/tileset.json
    tiles/<INSEE code>/content/<level>_<x>_<y>_lod<LoD>.glb
    tiles/unassigned/...           buildings outside every commune (tiles/all/ without communes)

Tiling: a quadtree over each commune's buildings (`tiling.quadtree`), split until a cell
holds at most `max_features_per_tile` buildings, `max_vertices_per_tile` vertices and, with
textures, the texture patches that fill `ATLAS_FILL` of an atlas at full resolution. The
quadtree's tiles have no content; each leaf cell carries a chain of content tiles, one per
LoD present, coarsest first, each refining its parent by replacement (REPLACE): LOD1.2,
then LOD1.3, then LoD2.2... A building lacking a LoD appears at its best coarser one, so
every level shows every building. Geometric errors: `building_error_m` for the quadtree
(buildings appear within about 58 times that distance with CesiumJS's defaults), then a
smaller error per LoD (`LOD_GEOMETRIC_ERRORS`), at most half the parent's, and 0 for the
finest. Bounding volumes are `region`s (radians, ellipsoidal heights) computed from the
content and grown to hold their children.

Textures: a tile's buildings with `Building.textures` at the LoD the tile shows have those
surfaces textured from one JPEG atlas per tile, at most `max_atlas_side` pixels wide and tall
(`glb`); a tile without any textured surface is written exactly as an untextured run writes it.

Heights: Lambert-93 + NGF-IGN69 (or the model's CRS) to WGS84 ellipsoidal heights through
`twin.heights`, which refuses to work without the geoid grid unless approximate heights
are allowed, which the tilesets' metadata then records.

The tileset JSON is written here rather than through py3dtiles' tileset model, which (in
py3dtiles 12) has only `box` bounding volumes, no metadata schema or tileset metadata,
and stamps the creation time into every tileset (so identical runs would differ).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyproj
import shapely

from exporters import register
from exporters.atomic import atomic_folder
from exporters.tiles3d.glb import SurfaceTextures, glb_bytes, tile_mesh
from exporters.tiles3d.metadata import Property, building_properties, metadata_schema, property_table
from exporters.texture_atlas import FILL as ATLAS_FILL
from exporters.texture_atlas import padded_area
from exporters.tiles3d.tiling import Cell, quadtree
from twin.config import BuildConfig, TilesConfig
from twin.errors import InputError
from twin.geodesy import crs_uri
from twin.heights import HeightTransform
from twin.model import Building, CityModel, Solid

TILES_DIR = "tiles"
TILESET_FILE = "tileset.json"
SCHEMA_FILE = "schema.json"
CONTENT_DIR = "content"
UNASSIGNED = "unassigned"
ALL_BUILDINGS = "all"
LOD_GEOMETRIC_ERRORS = {"1.2": 16.0, "1.3": 8.0, "2.2": 4.0}
"""Metres of error of showing a LoD instead of the finest: block models are off by about
the height range of their roof, LoD2 models by their smaller details."""
REGION_MARGIN_M = 0.1  # covers the rounding of quantized positions (a few millimetres)
EARTH_RADIUS_M = 6_378_137.0
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

REGION_CLASS = {
    "name": "Region",
    "description": "The regional root: the communes' tilesets and how heights were made",
    "properties": {
        "communes": {"type": "STRING", "array": True, "description": "Codes of the communes with a tileset"},
        "emptyCommunes": {"type": "STRING", "array": True, "description": "Communes holding no building to tile"},
        "buildings": {"type": "SCALAR", "componentType": "UINT32", "description": "Buildings in the tiles"},
        "unassignedBuildings": {
            "type": "SCALAR", "componentType": "UINT32", "description": "Buildings outside every commune",
        },
        "untiledBuildings": {
            "type": "SCALAR", "componentType": "UINT32",
            "description": "Buildings without a solid (no points, failed): not in the tiles",
        },
        "lods": {"type": "STRING", "array": True, "description": "LoDs present, coarsest first"},
        "sourceCrs": {"type": "STRING", "description": "CRS of the source coordinates and altitudes"},
        "geoidGrids": {"type": "STRING", "array": True, "description": "Geoid grids used for ellipsoidal heights"},
        "approximateHeights": {
            "type": "BOOLEAN",
            "description": "True when no geoid grid was available: heights are off by the geoid undulation",
        },
    },
}
COMMUNE_CLASS = {
    "name": "Commune",
    "description": "One commune's tileset (or the buildings outside every commune)",
    "properties": {
        "code": {"type": "STRING", "description": "INSEE code"},
        "name": {"type": "STRING"},
        "buildings": {"type": "SCALAR", "componentType": "UINT32"},
        "lods": {"type": "STRING", "array": True},
        "geoidGrids": {"type": "STRING", "array": True},
        "approximateHeights": {"type": "BOOLEAN"},
    },
}


@dataclass(frozen=True)
class Group:
    """Buildings that share a tileset: a commune's, or those outside every commune."""

    folder: str
    code: str | None
    name: str
    buildings: tuple[Building, ...]


def check_heights(crs: pyproj.CRS, config: BuildConfig) -> list[str]:
    return list(HeightTransform.for_crs(crs, config.tiles.allow_approximate_heights).notes)


@register(
    "3dtiles",
    "3D Tiles 1.1, a tileset per commune under a regional root (tiles/tileset.json)",
    uses_config=True,
    check=check_heights,
)
def write_3dtiles(model: CityModel, out_dir: Path, config: BuildConfig) -> list[Path]:
    heights = HeightTransform.for_crs(model.crs, config.tiles.allow_approximate_heights)
    groups, empty = commune_groups(model)
    tiled = [b for g in groups for b in g.buildings]
    properties = building_properties(tiled)
    schema = metadata_schema(properties, {"region": REGION_CLASS, "commune": COMMUNE_CLASS})
    lods = _lods(tiled)
    tileset_asset = {"version": "1.1", "tilesetVersion": str(model.metadata.get("identifier") or "0")}
    target = out_dir / TILES_DIR
    children = []
    with atomic_folder(target) as folder:
        _write_json(folder / SCHEMA_FILE, schema)
        for group in groups:
            root = _group_root(group, properties, heights, config.tiles, folder / group.folder)
            tileset = {
                "asset": tileset_asset,
                "schema": schema,
                "metadata": {"class": "commune", "properties": _commune_properties(group, heights)},
                "geometricError": root["geometricError"],
                "root": root,
            }
            _write_json(folder / group.folder / TILESET_FILE, tileset)
            children.append({
                "boundingVolume": root["boundingVolume"],
                "geometricError": root["geometricError"],
                "refine": "REPLACE",
                "content": {"uri": f"{group.folder}/{TILESET_FILE}"},
            })
        region = _union([c["boundingVolume"]["region"] for c in children]) if children else _footprint_region(model, heights)
        error = config.tiles.building_error_m
        root = {"boundingVolume": {"region": region}, "geometricError": error, "refine": "REPLACE"}
        if children:
            root["children"] = children
        regional = {
            "asset": tileset_asset,
            "schema": schema,
            "metadata": {"class": "region", "properties": _without_empty_lists({
                "communes": [g.code for g in groups if g.code is not None],
                "emptyCommunes": empty,
                "buildings": len(tiled),
                "unassignedBuildings": sum(len(g.buildings) for g in groups if g.folder == UNASSIGNED),
                "untiledBuildings": len(model.buildings) - len(tiled),
                "lods": lods,
                "sourceCrs": crs_uri(model.crs),
                "geoidGrids": list(heights.grids),
                "approximateHeights": heights.approximate,
            })},
            "geometricError": error,
            "root": root,
        }
        _write_json(folder / TILESET_FILE, regional)
        written = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    return [target / p for p in written]


def commune_groups(model: CityModel) -> tuple[list[Group], list[str]]:
    """The tilesets to write, and the codes of communes without any building to tile.

    Buildings without any solid (no points, failed) are in no tileset."""
    tiled = [b for b in model.buildings if b.available_lods()]
    if not model.communes:
        return ([Group(ALL_BUILDINGS, None, "all buildings", tuple(tiled))] if tiled else []), []
    groups, empty = [], []
    by_code: dict[str | None, list[Building]] = {}
    for building in tiled:
        by_code.setdefault(building.attributes.get("commune"), []).append(building)
    for commune in model.communes:
        if not SAFE_NAME.match(commune.code) or commune.code in (UNASSIGNED, ALL_BUILDINGS):
            raise InputError(
                f"commune code {commune.code!r} cannot name a tileset folder; use codes of letters, digits, '-' and '_'"
            )
        members = by_code.get(commune.code, [])
        if members:
            groups.append(Group(commune.code, commune.code, commune.name, tuple(members)))
        else:
            empty.append(commune.code)
    outside = by_code.get(None, [])
    if outside:
        groups.append(Group(UNASSIGNED, None, "outside every commune", tuple(outside)))
    return groups, empty


def _group_root(
    group: Group, properties: Sequence[Property], heights: HeightTransform, config: TilesConfig, folder: Path
) -> dict[str, Any]:
    anchors = np.array([_anchor(b) for b in group.buildings])
    weights = np.array([(_vertex_count(b), _texture_pixels(b)) for b in group.buildings], dtype=np.float64)
    budget = (config.max_vertices_per_tile, ATLAS_FILL * config.max_atlas_side**2)
    tree = quadtree(anchors, weights, config.max_features_per_tile, budget)
    (folder / CONTENT_DIR).mkdir(parents=True, exist_ok=True)
    root = _cell_tile(tree, group, properties, heights, config, folder)
    if tree.children:
        return root
    return {  # a single cell: a root without content above the chain, so that it appears from afar too
        "boundingVolume": root["boundingVolume"],
        "geometricError": config.building_error_m,
        "refine": "REPLACE",
        "children": [root],
    }


def _cell_tile(cell: Cell, group, properties, heights, config: TilesConfig, folder: Path) -> dict[str, Any]:
    """A quadtree cell's tile: without content for an inner cell, the head of its LoD chain for a leaf."""
    if cell.children:
        children = [_cell_tile(c, group, properties, heights, config, folder) for c in cell.children]
        return {
            "boundingVolume": {"region": _union([c["boundingVolume"]["region"] for c in children])},
            "geometricError": config.building_error_m,
            "refine": "REPLACE",
            "children": children,
        }
    buildings = [group.buildings[i] for i in cell.members]
    chain = _lod_chain(buildings)
    tiles: list[dict[str, Any]] = []
    error = config.building_error_m
    for depth, (lod, selection) in enumerate(chain):
        error = 0.0 if depth == len(chain) - 1 else min(_lod_error(lod), error / 2)
        solids = [b.solids(chosen) for b, chosen in zip(buildings, selection)]
        textures = [_surface_textures(b, chosen, own) for b, chosen, own in zip(buildings, selection, solids)]
        mesh = tile_mesh(solids, heights, textures if any(textures) else (), config.max_atlas_side)
        uri = f"{CONTENT_DIR}/{cell.name}_lod{lod.replace('.', '')}.glb"
        data = glb_bytes(
            mesh,
            len(buildings),
            lambda add_view: property_table(properties, buildings, add_view),
            schema_uri=f"../../{SCHEMA_FILE}",
            compression=config.compression,
            jpeg_quality=config.jpeg_quality,
        )
        (folder / uri).write_bytes(data)
        region = _region(mesh.geodetic_min, mesh.geodetic_max)
        tiles.append({
            "boundingVolume": {"region": region},
            "geometricError": error,
            "refine": "REPLACE",
            "content": {"uri": uri, "boundingVolume": {"region": region}},
        })
    for parent, child in zip(tiles[-2::-1], tiles[:0:-1]):
        parent["children"] = [child]
        parent["boundingVolume"] = {"region": _union([parent["boundingVolume"]["region"], child["boundingVolume"]["region"]])}
    return tiles[0]


def _surface_textures(building: Building, lod: str, solids: Sequence[Solid]) -> SurfaceTextures:
    """The building's textures at `lod` by (solid index, surface index), each checked against its surface."""
    found = {}
    for (texture_lod, solid_index, surface_index), texture in sorted(building.textures.items()):
        if texture_lod != lod:
            continue
        if solid_index >= len(solids) or surface_index >= len(solids[solid_index].surfaces):
            raise ValueError(f"building {building.id}: texture of LoD {lod} for surface {surface_index} of solid "
                             f"{solid_index}, which does not exist")
        image = texture.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"building {building.id}: the texture of LoD {lod}, solid {solid_index}, surface "
                             f"{surface_index} is not an RGB image of bytes ({image.dtype} {image.shape})")
        rings = solids[solid_index].surfaces[surface_index].rings
        if [len(uv) for uv in texture.uv] != [len(ring) for ring in rings]:
            raise ValueError(f"building {building.id}: the texture of LoD {lod}, solid {solid_index}, surface "
                             f"{surface_index} has texture coordinates for other rings than the surface's")
        found[(solid_index, surface_index)] = texture
    return found


def _lod_chain(buildings: Sequence[Building]) -> list[tuple[str, list[str]]]:
    """Per LoD present, coarsest first: the LoD each building shows at that level (its best
    LoD not finer than the level's, else its coarsest). Levels that change nothing are dropped."""
    lods = _lods(buildings)
    chain: list[tuple[str, list[str]]] = []
    for lod in lods:
        selection = []
        for building in buildings:
            own = sorted(building.available_lods(), key=float)
            coarser = [candidate for candidate in own if float(candidate) <= float(lod)]
            selection.append(coarser[-1] if coarser else own[0])
        if not chain or chain[-1][1] != selection:
            chain.append((lod, selection))
    return chain


def _lods(buildings: Sequence[Building]) -> list[str]:
    return sorted({lod for b in buildings for lod in b.available_lods()}, key=float)


def _lod_error(lod: str) -> float:
    if lod in LOD_GEOMETRIC_ERRORS:
        return LOD_GEOMETRIC_ERRORS[lod]
    return {0: 32.0, 1: 16.0, 2: 4.0}.get(int(float(lod)), 1.0)


def _anchor(building: Building) -> tuple[float, float]:
    """A point inside the footprint: its centroid, or for shapes such as a U its representative point
    (the rule that assigns buildings to communes); the first vertex for a building without footprint."""
    footprint = building.footprint
    if footprint.is_empty:
        first = building.solids(building.available_lods()[0])[0].vertices()[0]
        return float(first[0]), float(first[1])
    point = footprint.centroid if footprint.contains(footprint.centroid) else footprint.representative_point()
    return point.x, point.y


def _vertex_count(building: Building) -> int:
    finest = _lods([building])[-1]
    return sum(len(ring) for solid in building.solids(finest) for s in solid.surfaces for ring in s.rings)


def _texture_pixels(building: Building) -> int:
    """The atlas pixels the building's patches take in the tile of its most textured LoD."""
    per_lod: dict[str, int] = {}
    for (lod, _, _), texture in building.textures.items():
        per_lod[lod] = per_lod.get(lod, 0) + padded_area(texture.image)
    return max(per_lod.values(), default=0)


def _region(low: np.ndarray, high: np.ndarray) -> list[float]:
    """A 3D Tiles region [west, south, east, north, minimum height, maximum height] in radians and
    metres, widened by REGION_MARGIN_M on every side."""
    latitude = math.radians(max(abs(low[1]), abs(high[1])))
    margin_lat = REGION_MARGIN_M / EARTH_RADIUS_M
    margin_lon = margin_lat / max(math.cos(latitude), 1e-6)
    return [
        math.radians(low[0]) - margin_lon,
        math.radians(low[1]) - margin_lat,
        math.radians(high[0]) + margin_lon,
        math.radians(high[1]) + margin_lat,
        float(low[2]) - REGION_MARGIN_M,
        float(high[2]) + REGION_MARGIN_M,
    ]


def _union(regions: Sequence[Sequence[float]]) -> list[float]:
    stacked = np.array(regions, dtype=np.float64)
    low, high = stacked[:, [0, 1, 4]].min(axis=0), stacked[:, [2, 3, 5]].max(axis=0)
    return [float(low[0]), float(low[1]), float(high[0]), float(high[1]), float(low[2]), float(high[2])]


def _footprint_region(model: CityModel, heights: HeightTransform) -> list[float]:
    """Where the buildings would be, for a regional root without any tile (no building has a solid)."""
    shapes = [b.footprint for b in model.buildings if not b.footprint.is_empty] + [c.polygon for c in model.communes]
    if not shapes:
        raise InputError("no building has a footprint, so there is nothing to place in 3D Tiles")
    xmin, ymin, xmax, ymax = shapely.union_all(shapes).bounds
    corners = heights.geodetic(np.array([[xmin, ymin, 0.0], [xmax, ymin, 0.0], [xmin, ymax, 0.0], [xmax, ymax, 0.0]]))
    return _region(corners.min(axis=0), corners.max(axis=0))


def _commune_properties(group: Group, heights: HeightTransform) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    if group.code is not None:
        properties["code"] = group.code
    properties.update(
        name=group.name or group.code or "",
        buildings=len(group.buildings),
        lods=_lods(group.buildings),
        geoidGrids=list(heights.grids),
        approximateHeights=heights.approximate,
    )
    return _without_empty_lists(properties)


def _without_empty_lists(properties: dict[str, Any]) -> dict[str, Any]:
    """Metadata arrays cannot be empty; an absent property says the same."""
    return {name: value for name, value in properties.items() if value != []}


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, separators=(",", ":"), ensure_ascii=False), encoding="utf-8")
