"""The domain model: point clouds, footprints, buildings and their solids.

Representation:
- Coordinates are float64 numpy arrays in the model's CRS (metres, projected x/y and
  orthometric z for the default Lambert-93 + NGF-IGN69).
- A `Surface` is a planar polygon in 3D: `rings[0]` is the exterior ring, the others
  are holes; rings are (k, 3) arrays, not closed (the first vertex is not repeated).
  The exterior is counter-clockwise seen from outside the solid, so the right-hand
  normal points outwards; holes run the other way.
- A `Solid` is one closed shell of surfaces.
- A `Building` holds one solid per LoD ("1.2", "1.3", "2.2") and, where a LoD splits
  the building into parts, `BuildingPart`s that hold that LoD instead.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pyproj
import shapely


class SurfaceKind(enum.StrEnum):
    GROUND = "GroundSurface"
    WALL = "WallSurface"
    ROOF = "RoofSurface"


class Status(enum.StrEnum):
    """Outcome of one building; every input footprint ends with exactly one."""

    BUILT = "built"
    FALLBACK = "fallback"
    NO_POINTS = "no points"
    FAILED = "failed"


def _frozen_mapping(values: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(values or {}))


@dataclass(frozen=True, eq=False)
class PointCloud:
    """Points with their classes, in one compound (horizontal + vertical) CRS.

    `gps_time` is adjusted standard GPS time (seconds since 1980-01-06 minus 1e9)
    when known, else None.
    """

    xyz: np.ndarray
    classification: np.ndarray
    crs: pyproj.CRS
    gps_time: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"xyz must be (n, 3), got {self.xyz.shape}")
        if self.classification.shape != (len(self.xyz),):
            raise ValueError("classification must have one value per point")
        if self.gps_time is not None and self.gps_time.shape != (len(self.xyz),):
            raise ValueError("gps_time must have one value per point")

    def __len__(self) -> int:
        return len(self.xyz)


@dataclass(frozen=True, eq=False)
class Footprint:
    """A building's 2D outline with the attributes read from its source.

    `notes` records every repair made to the source geometry.
    """

    id: str
    polygon: shapely.Polygon
    attributes: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _frozen_mapping(self.attributes))


@dataclass(frozen=True, eq=False)
class Surface:
    rings: tuple[np.ndarray, ...]
    kind: SurfaceKind
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _frozen_mapping(self.attributes))


@dataclass(frozen=True, eq=False)
class Solid:
    surfaces: tuple[Surface, ...]

    def vertices(self) -> np.ndarray:
        return np.concatenate([ring for surface in self.surfaces for ring in surface.rings])

    def __reduce__(self):
        # Units' results go to the work folder and between processes pickled; a unit holds
        # tens of thousands of rings, and one array per solid pickles and loads in a
        # fraction of the time of one array per ring.
        rings = [ring for surface in self.surfaces for ring in surface.rings]
        return _unpickled_solid, (
            np.concatenate(rings) if rings else np.empty((0, 3)),
            [len(ring) for ring in rings],
            [(len(surface.rings), str(surface.kind), dict(surface.attributes)) for surface in self.surfaces],
        )


def _unpickled_solid(vertices: np.ndarray, ring_sizes: list[int], surfaces: list[tuple[int, str, dict]]) -> Solid:
    ends = list(itertools.accumulate(ring_sizes))
    rings = [vertices[end - size : end] for size, end in zip(ring_sizes, ends)]  # np.split took twice as long
    built, start = [], 0
    for count, kind, attributes in surfaces:
        built.append(Surface(tuple(rings[start : start + count]), SurfaceKind(kind), attributes))
        start += count
    return Solid(tuple(built))


@dataclass(frozen=True, eq=False)
class SurfaceTexture:
    """The image patch that textures one surface of a solid.

    `image` is an RGB uint8 array (h, w, 3) cut from the aerial image that sees the surface
    best. `uv` holds, per ring of the surface, texture coordinates (k, 2) into the patch:
    u to the right and v up from the patch's bottom-left corner, both in [0, 1] (the
    convention of CityJSON and CityGML; glTF's v runs down and exporters flip it).
    `source` names the image the patch was cut from.
    """

    image: np.ndarray
    uv: tuple[np.ndarray, ...]
    source: str


TextureKey = tuple[str, int, int]
"""(LoD, index of the solid in `Building.solids(lod)`, index of the surface in that solid)."""


@dataclass(frozen=True, eq=False)
class BuildingPart:
    id: str
    lods: Mapping[str, Solid]
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lods", _frozen_mapping(self.lods))
        object.__setattr__(self, "attributes", _frozen_mapping(self.attributes))


@dataclass(frozen=True, eq=False)
class Building:
    id: str
    footprint: shapely.Polygon
    status: Status
    reason: str
    attributes: Mapping[str, Any] = field(default_factory=dict)
    lods: Mapping[str, Solid] = field(default_factory=dict)
    parts: tuple[BuildingPart, ...] = ()
    textures: Mapping[TextureKey, SurfaceTexture] = field(default_factory=dict)
    """Textured surfaces; a surface with no entry keeps a plain material."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lods", _frozen_mapping(self.lods))
        object.__setattr__(self, "attributes", _frozen_mapping(self.attributes))
        object.__setattr__(self, "textures", _frozen_mapping(self.textures))

    def solids(self, lod: str) -> tuple[Solid, ...]:
        """The solids that make up this building at `lod`, from the building or its parts."""
        if lod in self.lods:
            return (self.lods[lod],)
        return tuple(part.lods[lod] for part in self.parts if lod in part.lods)

    def available_lods(self) -> tuple[str, ...]:
        lods = set(self.lods)
        for part in self.parts:
            lods.update(part.lods)
        return tuple(sorted(lods))


@dataclass(frozen=True, eq=False)
class Commune:
    """An administrative unit that outputs are grouped by, with its INSEE code."""

    code: str
    name: str
    polygon: shapely.Geometry


@dataclass(frozen=True, eq=False)
class CityModel:
    """The buildings of a run, sorted by id, with the CRS and the run's provenance.

    When communes are given, each building's `commune` attribute holds the code of the
    commune it belongs to (None when it lies in none of them).
    """

    buildings: tuple[Building, ...]
    crs: pyproj.CRS
    metadata: Mapping[str, Any] = field(default_factory=dict)
    communes: tuple[Commune, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen_mapping(self.metadata))

    def __len__(self) -> int:
        return len(self.buildings)


@dataclass(frozen=True, eq=False)
class TerrainGrid:
    """Mean ground height per coarse cell of the input tiles (NaN where no ground point)."""

    x0: float
    y0: float
    cell: float
    heights: np.ndarray  # (nx, ny)

    def height_near(self, x: float, y: float) -> tuple[float, float] | None:
        """Height of the nearest cell with ground points, and its distance; None if none."""
        ix, iy = np.nonzero(np.isfinite(self.heights))
        if len(ix) == 0:
            return None
        cx = self.x0 + (ix + 0.5) * self.cell
        cy = self.y0 + (iy + 0.5) * self.cell
        distance = np.hypot(cx - x, cy - y)
        nearest = int(np.argmin(distance))
        return float(self.heights[ix[nearest], iy[nearest]]), float(distance[nearest])
