"""CityJSON 2.0 (`buildings.city.json`) and CityJSONSeq (`buildings.city.jsonl`).

Vertices are integers with a millimetre `transform`, deduplicated so that surfaces of a
solid share vertex indices (which is what makes the solid closed for readers). Each
building is a `Building` with one `Solid` per LoD and `BuildingPart` children for
LoDs that split it into parts. The CityJSONSeq writer streams one `CityJSONFeature`
per building, each with its own vertex list.

Textured surfaces (`Building.textures`, from `twin build --images`) go into the CityJSON
file's `appearance`, theme "aerial": their patches are packed into JPEG atlases of at most
`TextureConfig.max_atlas_side` pixels a side, each shared by consecutive buildings while their
patches fill it at full resolution, in a folder beside the file
(`buildings.textures/atlas_0000.jpg`...), and each solid's `texture` gives, per ring, the
atlas and the ring's texture coordinates (`[null]` for a surface without texture).
CityJSONSeq carries no textures: its lines are meant to stand alone, and a texture file
shared by many features would tie them together; use CityJSON or 3D Tiles for textures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from exporters import register
from exporters.atomic import atomic_output, is_temporary
from exporters.texture_atlas import FILL, encode_jpeg, pack_atlas, padded_area
from twin.attributes import json_value
from twin.config import BuildConfig, TextureConfig
from twin.geodesy import crs_uri
from twin.model import Building, CityModel, Solid, TextureKey

SCALE = 0.001
CITYJSON_FILE = "buildings.city.json"
CITYJSONSEQ_FILE = "buildings.city.jsonl"
TEXTURE_THEME = "aerial"
UV_DIGITS = 6
"""Texture coordinates are rounded to this many decimals (a 4096 px atlas needs 4)."""


@register("cityjson", "CityJSON 2.0, one file (buildings.city.json)", uses_config=True)
def write_cityjson(model: CityModel, out_dir: Path, config: BuildConfig = BuildConfig()) -> list[Path]:
    return write_cityjson_file(model, out_dir / CITYJSON_FILE, config.textures)


def write_cityjson_file(model: CityModel, path: Path, textures: TextureConfig = TextureConfig()) -> list[Path]:
    """Writes the file and, when buildings have textures, its atlases; returns the files written."""
    folder = texture_folder(path)
    document, atlases = cityjson_document(model, folder.name, textures)
    written = []
    for name, image in atlases:
        with atomic_output(folder / name, "wb") as stream:
            stream.write(encode_jpeg(image, textures.jpeg_quality))
        written.append(folder / name)
    _remove_stale_atlases(folder, {p.name for p in written})
    with atomic_output(path) as stream:
        json.dump(document, stream, separators=(",", ":"), ensure_ascii=False)
    return [path, *written]


def texture_folder(path: Path) -> Path:
    """The folder of a CityJSON file's texture atlases: `buildings.city.json` -> `buildings.textures`."""
    stem = path.name.removesuffix(".json").removesuffix(".city")
    return path.with_name(f"{stem}.textures")


def _remove_stale_atlases(folder: Path, keep: set[str]) -> None:
    """Atlases of an earlier run into the same folder that this run did not write again."""
    if not folder.is_dir():
        return
    for old in sorted(folder.glob("atlas_*.jpg")):
        if old.name not in keep and not is_temporary(old):
            old.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def cityjson_document(
    model: CityModel, texture_folder_name: str = "textures", textures: TextureConfig = TextureConfig()
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """The CityJSON document and its texture atlases (file name in the texture folder, RGB image)."""
    translate = _translate(model)
    vertex_index = _VertexIndex(translate)
    appearance = _Appearance.of(model.buildings, texture_folder_name, textures.max_atlas_side)
    city_objects: dict[str, Any] = {}
    for building in model.buildings:
        city_objects.update(_city_objects(building, vertex_index, appearance))
    document = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [SCALE] * 3, "translate": translate},
        "metadata": _metadata(model),
        "CityObjects": city_objects,
        "vertices": vertex_index.vertices(),
    }
    if appearance.textures:
        document["appearance"] = {
            "default-theme-texture": TEXTURE_THEME,
            "textures": appearance.textures,
            "vertices-texture": appearance.uv_vertices,
        }
    return document, appearance.atlases


@register("cityjsonseq", "CityJSONSeq, one building per line (buildings.city.jsonl)", drops_textures=True)
def write_cityjsonseq(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / CITYJSONSEQ_FILE
    with atomic_output(path) as stream:
        for line in cityjsonseq_lines(model):
            stream.write(line)
            stream.write("\n")
    return [path]


def cityjsonseq_lines(model: CityModel) -> Iterator[str]:
    translate = _translate(model)
    header = {
        "type": "CityJSON",
        "version": "2.0",
        "transform": {"scale": [SCALE] * 3, "translate": translate},
        "metadata": _metadata(model),
        "CityObjects": {},
        "vertices": [],
    }
    yield json.dumps(header, separators=(",", ":"), ensure_ascii=False)
    for building in model.buildings:
        vertex_index = _VertexIndex(translate)
        feature = {
            "type": "CityJSONFeature",
            "id": building.id,
            "CityObjects": _city_objects(building, vertex_index, _Appearance.none()),
            "vertices": vertex_index.vertices(),
        }
        yield json.dumps(feature, separators=(",", ":"), ensure_ascii=False)


def _translate(model: CityModel) -> list[float]:
    """The lowest corner of the data, on the millimetre grid, so integers stay small."""
    corners = [s.vertices().min(axis=0) for b in model.buildings for lod in b.available_lods() for s in b.solids(lod)]
    if not corners:
        return [0.0, 0.0, 0.0]
    low = np.floor(np.min(corners, axis=0))
    return [float(v) for v in low]


def _metadata(model: CityModel) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "referenceSystem": crs_uri(model.crs),
        "title": model.metadata.get("title", "Buildings"),
    }
    if model.metadata.get("identifier"):
        metadata["identifier"] = model.metadata["identifier"]
    if model.metadata.get("reference_date"):
        metadata["referenceDate"] = model.metadata["reference_date"]
    extent = _extent(model.buildings)
    if extent is not None:
        metadata["geographicalExtent"] = extent
    return metadata


def _extent(buildings: Iterable[Building]) -> list[float] | None:
    points = [s.vertices() for b in buildings for lod in b.available_lods() for s in b.solids(lod)]
    if not points:
        return None
    stacked = np.concatenate(points)
    return [round(float(v), 3) for v in (*stacked.min(axis=0), *stacked.max(axis=0))]


class _VertexIndex:
    """Integer vertices on the transform's grid, each stored once, in first-use order."""

    def __init__(self, translate: list[float]) -> None:
        self._translate = np.asarray(translate)
        self._index: dict[tuple[int, int, int], int] = {}

    def shell(self, solid: Solid) -> list[list[list[int]]]:
        """Per surface, per ring, its vertices' indices; the solid's vertices converted at
        once rather than ring by ring (tens of thousands of rings in a unit)."""
        rings = [ring for surface in solid.surfaces for ring in surface.rings]
        if not rings:
            return [[] for _ in solid.surfaces]
        keys = np.rint((np.concatenate(rings) - self._translate) / SCALE).astype(np.int64)
        indices = [self._index.setdefault(key, len(self._index)) for key in map(tuple, keys.tolist())]
        shell, start = [], 0
        for surface in solid.surfaces:
            shell.append([])
            for ring in surface.rings:
                shell[-1].append(indices[start : start + len(ring)])
                start += len(ring)
        return shell

    def vertices(self) -> list[list[int]]:
        return [list(key) for key in self._index]


def _atlas_groups(buildings: list[Building], pixel_budget: float) -> list[list[Building]]:
    """Consecutive buildings, as many per group as their patches' area allows (at least one)."""
    groups: list[list[Building]] = []
    used = pixel_budget
    for building in buildings:
        need = sum(padded_area(t.image) for t in building.textures.values())
        if used + need > pixel_budget:
            groups.append([])
            used = 0
        groups[-1].append(building)
        used += need
    return groups


@dataclass(frozen=True, eq=False)
class _Appearance:
    """The model's textures packed into atlases, and per textured surface its atlas and the
    indices of its rings' texture coordinates in `uv_vertices`."""

    textures: list[dict[str, Any]]
    uv_vertices: list[list[float]]
    atlases: list[tuple[str, np.ndarray]]
    surfaces: Mapping[tuple[str, TextureKey], tuple[int, list[list[int]]]]

    @staticmethod
    def none() -> "_Appearance":
        return _Appearance([], [], [], {})

    @staticmethod
    def of(buildings: Iterable[Building], folder_name: str, max_atlas_side: int) -> "_Appearance":
        appearance = _Appearance.none()
        uv_index: dict[tuple[float, float], int] = {}
        for members in _atlas_groups([b for b in buildings if b.textures], FILL * max_atlas_side**2):
            group = [(b.id, key, b.textures[key]) for b in members for key in sorted(b.textures)]
            # A surface that keeps its shape across LoDs (a flat roof, a plain wall) has the same
            # patch at each: it is packed once.
            patches: list[np.ndarray] = []
            unique: dict[bytes, int] = {}
            patch_of = []
            for _, _, texture in group:
                key = _patch_key(texture.image)
                if key not in unique:
                    unique[key] = len(patches)
                    patches.append(texture.image)
                patch_of.append(unique[key])
            atlas = pack_atlas(patches, max_atlas_side)
            name = f"atlas_{len(appearance.atlases):04d}.jpg"
            texture_index = len(appearance.textures)
            appearance.atlases.append((name, atlas.image))
            appearance.textures.append(
                {"type": "JPG", "image": f"{folder_name}/{name}", "wrapMode": "clamp", "textureType": "specific"}
            )
            for patch_index, (building_id, key, texture) in zip(patch_of, group):
                rings = []
                for uv in texture.uv:
                    ring = []
                    for u, v in np.round(atlas.to_atlas(patch_index, uv), UV_DIGITS).tolist():
                        ring.append(uv_index.setdefault((u, v), len(uv_index)))
                    rings.append(ring)
                appearance.surfaces[(building_id, key)] = (texture_index, rings)
        appearance.uv_vertices.extend([u, v] for u, v in uv_index)
        return appearance

    def values(self, object_id: str, lod: str, solid_index: int, solid: Solid) -> list[list[list[Any]]] | None:
        """The solid's `texture` values, or None when none of its surfaces has a texture."""
        shell = []
        for surface_index, surface in enumerate(solid.surfaces):
            entry = self.surfaces.get((object_id, (lod, solid_index, surface_index)))
            if entry is None:
                shell.append([[None] for _ in surface.rings])
            else:
                texture_index, rings = entry
                shell.append([[texture_index, *ring] for ring in rings])
        if all(ring == [None] for surface in shell for ring in surface):
            return None
        return [shell]


def _patch_key(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest() + repr(image.shape).encode()


def _city_objects(building: Building, vertex_index: _VertexIndex, appearance: _Appearance) -> dict[str, Any]:
    objects: dict[str, Any] = {}
    building_object: dict[str, Any] = {"type": "Building", "attributes": _attributes(building.attributes)}
    geometry = [
        _solid_geometry(solid, lod, vertex_index, appearance.values(building.id, lod, 0, solid))
        for lod, solid in sorted(building.lods.items())
    ]
    if geometry:
        building_object["geometry"] = geometry
    extent = _extent([building])
    if extent is not None:
        building_object["geographicalExtent"] = extent
    if building.parts:
        building_object["children"] = [part.id for part in building.parts]
    objects[building.id] = building_object
    solids_before: dict[str, int] = {}  # a part's solid index in building.solids(lod), the key of its textures
    for part in building.parts:
        geometry = []
        for lod, solid in sorted(part.lods.items()):
            solid_index = solids_before.get(lod, 0)
            solids_before[lod] = solid_index + 1
            texture = None if lod in building.lods else appearance.values(building.id, lod, solid_index, solid)
            geometry.append(_solid_geometry(solid, lod, vertex_index, texture))
        objects[part.id] = {
            "type": "BuildingPart",
            "parents": [building.id],
            "attributes": _attributes(part.attributes),
            "geometry": geometry,
        }
    return objects


def _solid_geometry(
    solid: Solid, lod: str, vertex_index: _VertexIndex, texture: list[list[list[Any]]] | None = None
) -> dict[str, Any]:
    semantic_objects: list[dict[str, Any]] = []
    semantic_ids: dict[str, int] = {}
    values = []
    for surface in solid.surfaces:
        semantic = {"type": str(surface.kind), **_attributes(surface.attributes)}
        # Walls and grounds carry no attributes: their kind alone tells them apart (a JSON
        # key starts with a brace), without writing thousands of them out to compare.
        key = json.dumps(semantic, sort_keys=True) if surface.attributes else semantic["type"]
        if key not in semantic_ids:
            semantic_ids[key] = len(semantic_objects)
            semantic_objects.append(semantic)
        values.append(semantic_ids[key])
    geometry = {
        "type": "Solid",
        "lod": lod,
        "boundaries": [vertex_index.shell(solid)],
        "semantics": {"surfaces": semantic_objects, "values": [values]},
    }
    if texture is not None:
        geometry["texture"] = {TEXTURE_THEME: {"values": texture}}
    return geometry


def _attributes(attributes: Any) -> dict[str, Any]:
    return {name: json_value(value) for name, value in attributes.items()}
