"""Parameters of a run: one frozen dataclass per step, each field with its default and unit.

The CLI and Python callers fill the same objects; `__post_init__` rejects values that
cannot work, so a bad parameter fails before any file is read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ClassMapping:
    """Which LAS classification codes hold building and ground points.

    IGN LiDAR HD puts buildings in 6 and, in some deliveries, in 67.
    """

    building: tuple[int, ...] = (6, 67)
    ground: tuple[int, ...] = (2,)

    def __post_init__(self) -> None:
        _require(bool(self.building), "at least one building class is needed")
        _require(bool(self.ground), "at least one ground class is needed")
        _require(not set(self.building) & set(self.ground), "a class cannot be both building and ground")
        for code in (*self.building, *self.ground):
            _require(0 <= code <= 255, f"class code {code} is outside 0..255")


@dataclass(frozen=True)
class GroundConfig:
    """Ground height of a building from the ground points around its footprint."""

    ring_width_m: float = 4.0
    """Width of the ring around the footprint whose ground points are used."""
    min_points: int = 10
    """Fewer ground points than this in the ring and the fallback chain starts."""
    max_plane_residual_m: float = 0.3
    """Robust spread of the terrain plane's residuals above which the plane is not trusted."""
    low_percentile: float = 5.0
    """Percentile of the ring's ground heights used when no terrain plane is trusted."""
    nearest_radius_m: float = 30.0
    """Search radius of the first fallback: the nearest ground points."""
    nearest_count: int = 10

    def __post_init__(self) -> None:
        _require(self.ring_width_m > 0, "ground ring width must be positive")
        _require(self.min_points >= 3, "a terrain plane needs at least 3 ground points")
        _require(self.max_plane_residual_m > 0, "plane residual threshold must be positive")
        _require(0 <= self.low_percentile <= 100, "percentile must be within 0..100")
        _require(self.nearest_radius_m > 0, "nearest-ground radius must be positive")
        _require(self.nearest_count >= 1, "nearest-ground count must be at least 1")


@dataclass(frozen=True)
class Lod1Config:
    """LOD1.2 (one height per building) and LOD1.3 (one height per part) from roof points."""

    roof_percentile: float = 70.0
    """Roof height of a LOD1 block: this percentile of the roof heightfield (3DBAG's choice)."""
    cell_size_m: float = 0.5
    """Cell of the roof heightfield, aligned on the footprint's dominant direction."""
    min_roof_points: int = 3
    """Fewer building points inside the footprint and the building has no roof data."""
    step_height_m: float = 3.0
    """LOD1.3 splits the footprint where roof heights step by at least this much."""
    edge_jump_m: float = 1.5
    """Height difference between neighbouring cells that marks a step edge."""
    min_part_area_m2: float = 10.0
    """LOD1.3 parts smaller than this merge into their neighbour."""

    def __post_init__(self) -> None:
        _require(0 <= self.roof_percentile <= 100, "roof percentile must be within 0..100")
        _require(0.1 <= self.cell_size_m <= 5, "heightfield cell must be within 0.1..5 m")
        _require(self.min_roof_points >= 1, "minimum roof points must be at least 1")
        _require(self.step_height_m > 0, "LOD1.3 step height must be positive")
        _require(0 < self.edge_jump_m <= self.step_height_m, "edge jump must be within 0..step height")
        _require(self.min_part_area_m2 >= 0, "minimum part area cannot be negative")


TILE_COMPRESSIONS = ("none", "quantize", "meshopt")


@dataclass(frozen=True)
class TilesConfig:
    """3D Tiles output: tile budget, visibility distance, compression, height policy."""

    max_features_per_tile: int = 400
    """A quadtree cell holding more buildings than this splits into four."""
    max_vertices_per_tile: int = 100_000
    """A quadtree cell whose buildings have more vertices than this (at their finest LoD) splits too."""
    building_error_m: float = 50.0
    """Geometric error of the tiles above the buildings: with CesiumJS's default settings a
    commune's buildings appear within about 58 times this distance (about 3 km)."""
    compression: str = "none"
    """none; quantize (KHR_mesh_quantization: 16-bit positions, 8-bit normals); meshopt
    (quantize, then EXT_meshopt_compression)."""
    allow_approximate_heights: bool = False
    """Without a geoid grid, write altitudes as ellipsoidal heights (recorded in the tilesets)
    instead of stopping."""

    def __post_init__(self) -> None:
        _require(self.max_features_per_tile >= 1, "tiles need room for at least 1 building")
        _require(self.max_features_per_tile <= 65_535, "at most 65535 buildings per tile (16-bit feature ids)")
        _require(self.max_vertices_per_tile >= 1_000, "tiles need room for at least 1000 vertices")
        _require(self.building_error_m > 0, "the buildings' geometric error must be positive")
        _require(self.compression in TILE_COMPRESSIONS, f"tile compression must be one of {', '.join(TILE_COMPRESSIONS)}")


@dataclass(frozen=True)
class BuildConfig:
    classes: ClassMapping = field(default_factory=ClassMapping)
    ground: GroundConfig = field(default_factory=GroundConfig)
    lod1: Lod1Config = field(default_factory=Lod1Config)
    tiles: TilesConfig = field(default_factory=TilesConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
