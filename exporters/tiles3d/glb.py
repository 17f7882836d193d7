"""One tile's buildings as a binary glTF 2.0 (.glb) for 3D Tiles 1.1.

- Geometry: every surface triangulated in its own plane (reconstruction.triangulate), with
  its own vertices and one normal, so roofs and walls stay flat-shaded; one primitive per
  surface kind (roofs, walls, ground), each with its material.
- Textures: the textured surfaces of a tile (whatever their kind) form one more primitive,
  whose vertices carry TEXCOORD_0 into one JPEG atlas per tile (exporters.texture_atlas),
  embedded in the GLB. Its material is unlit (KHR_materials_unlit, optional): aerial images
  already hold the sun's light and shadows, and lighting them again darkens every face turned
  from the light twice; viewers without the extension fall back to the same texture as a
  rough, non-metallic PBR material. A tile without textured surfaces is written exactly as
  before.
- Placement: vertices converted to WGS84 earth-centred coordinates (ECEF) through the
  geoid-aware `HeightTransform`, stored relative to the tile's centre, which the node's
  translation holds. glTF is y-up and 3D Tiles rotates y-up content to its z-up frame, so
  an ECEF offset (x, y, z) is written as (x, z, -y).
- Picking: EXT_mesh_features gives each vertex its building's feature id (a vertex
  attribute); EXT_structural_metadata holds the property table of the tile's buildings,
  its schema referenced by URI (one shared schema file, not a copy in every tile).
- Compression: "quantize" stores positions as 16-bit integers on a grid the node's scale
  and translation undo, and normals as 8-bit (KHR_mesh_quantization); "meshopt" quantizes,
  reorders vertices and triangles for meshoptimizer, then stores vertex and index data
  compressed (EXT_meshopt_compression, decoded by CesiumJS). Texture coordinates become
  normalized 16-bit integers (1/16 of a texel of a 4096-pixel atlas).

pygltflib builds the glTF document and writes its JSON. The GLB container (a 12-byte
header and two chunks) is framed here, because pygltflib's GLB writer re-packs every
buffer view into a single buffer at 4-byte alignment, which would break both the
EXT_meshopt_compression fallback buffer and the 8-byte alignment of FLOAT64 columns.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import meshopt
import numpy as np
import pygltflib as gltf

from exporters.texture_atlas import encode_jpeg, pack_atlas
from reconstruction.triangulate import triangle_widths, triangulate_surface
from twin.heights import HeightTransform, geodetic_to_ecef
from twin.model import Solid, SurfaceKind, SurfaceTexture

ARRAY_BUFFER = 34962
ELEMENT_ARRAY_BUFFER = 34963
QUANTIZATION_STEPS = 65535
KIND_ORDER = (SurfaceKind.ROOF, SurfaceKind.WALL, SurfaceKind.GROUND)
KIND_COLOURS = {  # linear RGBA base colours
    str(SurfaceKind.ROOF): [0.56, 0.22, 0.15, 1.0],
    str(SurfaceKind.WALL): [0.85, 0.83, 0.78, 1.0],
    str(SurfaceKind.GROUND): [0.30, 0.30, 0.30, 1.0],
}
OTHER_COLOUR = [0.70, 0.70, 0.70, 1.0]
TEXTURED = "textured"
"""The group (primitive and material) of the textured surfaces, after the surface kinds."""
LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE = 9729, 9987, 33071

PropertyTableWriter = Callable[[Callable[[bytes, int], int]], dict[str, Any]]


@dataclass(frozen=True)
class TileMesh:
    """The triangles of a tile's buildings, grouped by surface kind (and the textured surfaces
    in a group of their own), with geodetic bounds and the texture atlas."""

    kinds: tuple[str, ...]
    ecef: tuple[np.ndarray, ...]  # per kind: (n, 3) float64 vertices
    normals: tuple[np.ndarray, ...]  # per kind: (n, 3) unit normals in ECEF axes
    feature_ids: tuple[np.ndarray, ...]  # per kind: (n,) building index within the tile
    triangles: tuple[np.ndarray, ...]  # per kind: (t, 3) vertex indices
    geodetic_min: np.ndarray  # longitude, latitude (degrees), height (m)
    geodetic_max: np.ndarray
    texcoords: tuple[np.ndarray | None, ...] = ()  # per kind: (n, 2) atlas coordinates, glTF's v down; None untextured
    atlas: np.ndarray | None = None  # (h, w, 3) RGB uint8 when a surface is textured


SurfaceTextures = Mapping[tuple[int, int], SurfaceTexture]
"""A building's textured surfaces at the LoD shown: (solid index, surface index) -> texture."""


def tile_mesh(
    buildings: Sequence[Sequence[Solid]],
    heights: HeightTransform,
    textures: Sequence[SurfaceTextures] = (),
    max_atlas_side: int = 4096,
) -> TileMesh:
    """The mesh of a tile whose feature i is made of the solids `buildings[i]`, the surfaces
    in `textures[i]` (when given) textured from an atlas no larger than `max_atlas_side`."""
    surfaces = [
        (feature, surface, textures[feature].get((solid_index, surface_index)) if textures else None)
        for feature, solids in enumerate(buildings)
        for solid_index, solid in enumerate(solids)
        for surface_index, surface in enumerate(solid.surfaces)
    ]
    convex_quads = _convex_quads([surface for _, surface, _ in surfaces])
    pieces: dict[str, list[tuple[np.ndarray, np.ndarray, int]]] = {}
    patches: list[np.ndarray] = []
    patch_uvs: list[np.ndarray] = []  # per patch: the uv of the surface's ring vertices, in order
    for index, (feature, surface, texture) in enumerate(surfaces):
        if index in convex_quads:
            vertices, triangles = surface.rings[0], QUAD_TRIANGLES
        else:
            vertices, triangles = triangulate_surface(surface)  # the rings' vertices, in order
            # A sliver narrower than the solids' millimetre grid shows nothing, and which way
            # it faces is rounding that quantization can turn over.
            triangles = triangles[triangle_widths(vertices, triangles) >= MIN_TRIANGLE_WIDTH_M]
        if not len(triangles):
            continue
        if texture is None:
            pieces.setdefault(str(surface.kind), []).append((vertices, triangles, feature))
        else:
            pieces.setdefault(TEXTURED, []).append((vertices, triangles, feature))
            patches.append(texture.image)
            # Clipped so that no vertex reaches past its patch's edge padding into a neighbour.
            patch_uvs.append(np.clip(np.concatenate(texture.uv), 0.0, 1.0))
    kinds = sorted(pieces, key=_kind_rank)
    counts = [sum(len(v) for v, _, _ in pieces[k]) for k in kinds]
    model_xyz = np.concatenate([v for k in kinds for v, _, _ in pieces[k]])
    geodetic = heights.geodetic(model_xyz)
    ecef_all = geodetic_to_ecef(geodetic)
    origin = ecef_all.mean(axis=0)
    ecef, normals, features, triangle_sets = [], [], [], []
    start = 0
    for kind, count in zip(kinds, counts):
        kind_ecef = ecef_all[start:start + count]
        start += count
        offsets = np.cumsum([0] + [len(v) for v, _, _ in pieces[kind]])
        triangles = np.concatenate([t + o for (_, t, _), o in zip(pieces[kind], offsets[:-1])])
        surface_of_triangle = np.concatenate([np.full(len(t), i) for i, (_, t, _) in enumerate(pieces[kind])])
        local = kind_ecef - origin
        a, b, c = (local[triangles[:, k]] for k in range(3))
        surface_normals = np.zeros((len(pieces[kind]), 3))
        np.add.at(surface_normals, surface_of_triangle, np.cross(b - a, c - a))
        lengths = np.linalg.norm(surface_normals, axis=1, keepdims=True)
        surface_normals = surface_normals / np.where(lengths > 0, lengths, 1.0)
        counts_per_surface = np.diff(offsets)
        ecef.append(kind_ecef)
        normals.append(np.repeat(surface_normals, counts_per_surface, axis=0))
        features.append(np.repeat([f for _, _, f in pieces[kind]], counts_per_surface))
        triangle_sets.append(triangles)
    if not patches:
        return TileMesh(
            tuple(kinds), tuple(ecef), tuple(normals), tuple(features), tuple(triangle_sets),
            geodetic.min(axis=0), geodetic.max(axis=0),
        )
    atlas = pack_atlas(patches, max_atlas_side)
    atlas_uv = np.concatenate([atlas.to_atlas(i, uv) for i, uv in enumerate(patch_uvs)])
    gltf_uv = np.column_stack([atlas_uv[:, 0], 1.0 - atlas_uv[:, 1]])  # glTF's v runs down from the top
    texcoords = tuple(gltf_uv if kind == TEXTURED else None for kind in kinds)
    return TileMesh(
        tuple(kinds), tuple(ecef), tuple(normals), tuple(features), tuple(triangle_sets),
        geodetic.min(axis=0), geodetic.max(axis=0), texcoords, atlas.image,
    )


QUAD_TRIANGLES = np.array([[0, 1, 2], [0, 2, 3]])
MIN_TRIANGLE_WIDTH_M = 0.001


def _convex_quads(surfaces) -> set[int]:
    """Indices of the surfaces that are convex quadrilaterals without holes (most walls), which
    split into two triangles along a diagonal: many times faster than a general triangulation."""
    candidates = [i for i, s in enumerate(surfaces) if len(s.rings) == 1 and len(s.rings[0]) == 4]
    if not candidates:
        return set()
    quads = np.stack([surfaces[i].rings[0] for i in candidates])
    edges = np.roll(quads, -1, axis=1) - quads
    corners = np.cross(edges, np.roll(edges, -1, axis=1))
    normals = corners.sum(axis=1)
    convex = np.all(np.einsum("qkj,qj->qk", corners, normals) > 1e-12, axis=1)
    return {i for i, keep in zip(candidates, convex) if keep}


def _kind_rank(kind: str) -> tuple[int, str]:
    order = [str(k) for k in KIND_ORDER]
    if kind == TEXTURED:
        return (len(order) + 1, kind)
    return (order.index(kind) if kind in order else len(order), kind)


class _Buffers:
    """Buffer views of the GLB's binary chunk (buffer 0) and, with meshopt, of the
    uncompressed fallback buffer (buffer 1) that only describes the decoded layout."""

    def __init__(self, meshopt_fallback: bool) -> None:
        self.binary = bytearray()
        self.fallback_length = 0 if meshopt_fallback else None
        self.views: list[gltf.BufferView] = []

    def add(self, data: bytes, alignment: int = 8, **view: Any) -> int:
        data = data or b"\0"  # a buffer view cannot be empty; offsets say how much is used
        offset = _pad_to(self.binary, alignment)
        self.binary += data
        self.views.append(gltf.BufferView(buffer=0, byteOffset=offset, byteLength=len(data), **view))
        return len(self.views) - 1

    def add_compressed(self, raw: np.ndarray, mode: str, stride: int, count: int, **view: Any) -> int:
        compressed = meshopt.encode_gltf_buffer(raw, mode)
        offset = _pad_to(self.binary, 4)
        self.binary += compressed
        fallback_offset = -(-self.fallback_length // 8) * 8
        self.fallback_length = fallback_offset + raw.nbytes
        extension = {
            "buffer": 0, "byteOffset": offset, "byteLength": len(compressed),
            "byteStride": stride, "count": count, "mode": mode,
        }
        self.views.append(gltf.BufferView(
            buffer=1, byteOffset=fallback_offset, byteLength=raw.nbytes,
            extensions={"EXT_meshopt_compression": extension}, **view,
        ))
        return len(self.views) - 1

    def buffers(self) -> list[gltf.Buffer]:
        _pad_to(self.binary, 8)
        buffers = [gltf.Buffer(byteLength=len(self.binary))]
        if self.fallback_length is not None:
            buffers.append(gltf.Buffer(
                byteLength=max(self.fallback_length, 1), extensions={"EXT_meshopt_compression": {"fallback": True}}
            ))
        return buffers


def _pad_to(data: bytearray, alignment: int) -> int:
    data += b"\0" * (-len(data) % alignment)
    return len(data)


def glb_bytes(
    mesh: TileMesh, feature_count: int, table: PropertyTableWriter, schema_uri: str, compression: str,
    jpeg_quality: int = 85,
) -> bytes:
    """The .glb of `mesh`, whose features are described by the property table `table` writes;
    its texture atlas, if any, stored as a JPEG of `jpeg_quality`."""
    quantized = compression in ("quantize", "meshopt")
    buffers = _Buffers(meshopt_fallback=compression == "meshopt")
    origin = np.mean([v.mean(axis=0) for v in mesh.ecef], axis=0) if mesh.ecef else np.zeros(3)
    local = [_y_up(v - origin) for v in mesh.ecef]
    node = gltf.Node(mesh=0, translation=_y_up(origin).tolist())
    grid_min, step = np.zeros(3), 1.0
    if quantized:
        grid_min = np.min([v.min(axis=0) for v in local], axis=0)
        extent = float(np.max([v.max(axis=0) for v in local] - grid_min))
        step = max(extent, 1e-3) / QUANTIZATION_STEPS
        node = gltf.Node(mesh=0, translation=(_y_up(origin) + grid_min).tolist(), scale=[step] * 3)

    accessors: list[gltf.Accessor] = []
    materials: list[gltf.Material] = []
    primitives = []
    feature_type = gltf.UNSIGNED_BYTE if feature_count <= 255 else gltf.UNSIGNED_SHORT
    texcoord_sets = mesh.texcoords or (None,) * len(mesh.kinds)
    for kind, positions, normals, features, texcoords, triangles in zip(
        mesh.kinds, local, mesh.normals, mesh.feature_ids, texcoord_sets, mesh.triangles
    ):
        normals = _y_up(normals)
        vertex_data = [positions, normals, features] + ([texcoords] if texcoords is not None else [])
        if compression == "meshopt":
            triangles, *vertex_data = _reordered(triangles, *vertex_data)
        attribute_views = _vertex_arrays(*vertex_data[:3], quantized, grid_min, step, feature_type)
        if texcoords is not None:
            attribute_views["TEXCOORD_0"] = _texcoord_array(vertex_data[3], quantized)
        attributes = {}
        for semantic, (array, component_type, accessor_type, normalized) in attribute_views.items():
            view = _add_vertex_view(buffers, array, compression)
            accessor = gltf.Accessor(
                bufferView=view, componentType=component_type, count=len(array), type=accessor_type,
                normalized=normalized or None,
            )
            if semantic == "POSITION":
                values = array[:, :3].astype(np.float64)
                accessor.min, accessor.max = values.min(axis=0).tolist(), values.max(axis=0).tolist()
            accessors.append(accessor)
            attributes[semantic] = len(accessors) - 1
        index_type = np.uint16 if len(positions) <= 65535 else np.uint32
        indices = np.ascontiguousarray(triangles.reshape(-1), dtype=index_type)
        if compression == "meshopt":
            view = buffers.add_compressed(
                indices, "TRIANGLES", indices.itemsize, len(indices), target=ELEMENT_ARRAY_BUFFER
            )
        else:
            view = buffers.add(indices.tobytes(), 4, target=ELEMENT_ARRAY_BUFFER)
        component = gltf.UNSIGNED_SHORT if index_type is np.uint16 else gltf.UNSIGNED_INT
        accessors.append(gltf.Accessor(bufferView=view, componentType=component, count=len(indices), type=gltf.SCALAR))
        materials.append(_textured_material() if texcoords is not None else gltf.Material(
            name=kind,
            pbrMetallicRoughness=gltf.PbrMetallicRoughness(
                baseColorFactor=KIND_COLOURS.get(kind, OTHER_COLOUR), metallicFactor=0.0, roughnessFactor=1.0
            ),
        ))
        primitive = gltf.Primitive(
            attributes=gltf.Attributes(
                POSITION=attributes["POSITION"], NORMAL=attributes["NORMAL"], TEXCOORD_0=attributes.get("TEXCOORD_0")
            ),
            indices=len(accessors) - 1,
            material=len(materials) - 1,
            extensions={"EXT_mesh_features": {"featureIds": [
                {"featureCount": feature_count, "attribute": 0, "propertyTable": 0}
            ]}},
        )
        setattr(primitive.attributes, "_FEATURE_ID_0", attributes["_FEATURE_ID_0"])
        primitives.append(primitive)

    textures: dict[str, Any] = {}
    if mesh.atlas is not None:
        image_view = buffers.add(encode_jpeg(mesh.atlas, jpeg_quality), 4)
        textures = {
            "images": [gltf.Image(bufferView=image_view, mimeType="image/jpeg")],
            "samplers": [gltf.Sampler(
                magFilter=LINEAR, minFilter=LINEAR_MIPMAP_LINEAR, wrapS=CLAMP_TO_EDGE, wrapT=CLAMP_TO_EDGE
            )],
            "textures": [gltf.Texture(sampler=0, source=0)],
        }
    property_table = table(lambda data, alignment: buffers.add(data, alignment))
    used = ["EXT_mesh_features", "EXT_structural_metadata"]
    required = []
    if quantized:
        used.append("KHR_mesh_quantization")
        required.append("KHR_mesh_quantization")
    if compression == "meshopt":
        used.append("EXT_meshopt_compression")
        required.append("EXT_meshopt_compression")
    if mesh.atlas is not None:
        used.append("KHR_materials_unlit")
    document = gltf.GLTF2(
        asset=gltf.Asset(version="2.0", generator="twin"),
        scene=0,
        scenes=[gltf.Scene(nodes=[0])],
        nodes=[node],
        meshes=[gltf.Mesh(primitives=primitives)],
        materials=materials,
        accessors=accessors,
        bufferViews=buffers.views,
        buffers=buffers.buffers(),
        extensionsUsed=used,
        extensionsRequired=required or [],
        extensions={"EXT_structural_metadata": {"schemaUri": schema_uri, "propertyTables": [property_table]}},
        **textures,
    )
    return _glb(document.gltf_to_json(separators=(",", ":"), indent=None).encode("utf-8"), bytes(buffers.binary))


def _textured_material() -> gltf.Material:
    return gltf.Material(
        name=TEXTURED,
        pbrMetallicRoughness=gltf.PbrMetallicRoughness(
            baseColorTexture=gltf.TextureInfo(index=0), metallicFactor=0.0, roughnessFactor=1.0
        ),
        extensions={"KHR_materials_unlit": {}},
    )


def _texcoord_array(texcoords: np.ndarray, quantized: bool):
    """TEXCOORD_0 as (array, component type, accessor type, normalized): float, or with
    KHR_mesh_quantization normalized unsigned shorts."""
    if not quantized:
        return (texcoords.astype(np.float32), gltf.FLOAT, gltf.VEC2, False)
    return (np.rint(texcoords.clip(0.0, 1.0) * 65535).astype(np.uint16), gltf.UNSIGNED_SHORT, gltf.VEC2, True)


def _vertex_arrays(positions, normals, features, quantized, grid_min, step, feature_type):
    """Per attribute: (array whose rows are 4-byte aligned, component type, accessor type, normalized)."""
    feature_dtype = np.uint8 if feature_type == gltf.UNSIGNED_BYTE else np.uint16
    feature_rows = np.zeros((len(features), 4 // np.dtype(feature_dtype).itemsize), dtype=feature_dtype)
    feature_rows[:, 0] = features
    if not quantized:
        return {
            "POSITION": (positions.astype(np.float32), gltf.FLOAT, gltf.VEC3, False),
            "NORMAL": (normals.astype(np.float32), gltf.FLOAT, gltf.VEC3, False),
            "_FEATURE_ID_0": (feature_rows, feature_type, gltf.SCALAR, False),
        }
    grid = np.rint((positions - grid_min) / step).clip(0, QUANTIZATION_STEPS).astype(np.uint16)
    position_rows = np.zeros((len(grid), 4), dtype=np.uint16)
    position_rows[:, :3] = grid
    normal_rows = np.zeros((len(normals), 4), dtype=np.int8)
    normal_rows[:, :3] = np.rint(normals * 127).clip(-127, 127)
    return {
        "POSITION": (position_rows, gltf.UNSIGNED_SHORT, gltf.VEC3, False),
        "NORMAL": (normal_rows, gltf.BYTE, gltf.VEC3, True),
        "_FEATURE_ID_0": (feature_rows, feature_type, gltf.SCALAR, False),
    }


def _add_vertex_view(buffers: _Buffers, array: np.ndarray, compression: str) -> int:
    array = np.ascontiguousarray(array)
    stride = array.nbytes // len(array)
    if compression == "meshopt":
        return buffers.add_compressed(array, "ATTRIBUTES", stride, len(array), byteStride=stride, target=ARRAY_BUFFER)
    return buffers.add(array.tobytes(), 4, byteStride=stride, target=ARRAY_BUFFER)


def _reordered(triangles, *vertex_arrays):
    """Triangles in vertex-cache order and vertices in first-use order, as meshoptimizer compresses best."""
    indices, remap, unique = meshopt.reorder_mesh(triangles.reshape(-1).astype(np.uint32), True, False)
    order = np.empty(unique, dtype=np.int64)
    used = remap < unique
    order[remap[used]] = np.nonzero(used)[0]
    return (indices.reshape(-1, 3), *(array[order] for array in vertex_arrays))


def _y_up(xyz: np.ndarray) -> np.ndarray:
    xyz = np.asarray(xyz, dtype=np.float64)
    return np.stack([xyz[..., 0], xyz[..., 2], -xyz[..., 1]], axis=-1)


def _glb(json_chunk: bytes, binary_chunk: bytes) -> bytes:
    json_chunk += b" " * (-len(json_chunk) % 4)
    binary_chunk += b"\0" * (-len(binary_chunk) % 4)
    length = 12 + 8 + len(json_chunk) + 8 + len(binary_chunk)
    return b"".join([
        struct.pack("<4sII", b"glTF", 2, length),
        struct.pack("<I4s", len(json_chunk), b"JSON"), json_chunk,
        struct.pack("<I4s", len(binary_chunk), b"BIN\0"), binary_chunk,
    ])
