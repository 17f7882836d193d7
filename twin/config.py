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
    max_atlas_side: int = 4096
    """Pixels of the longest side of a tile's texture atlas (its textured surfaces' patches,
    scaled down together when they do not fit); 4096 is what every WebGL device can load."""
    jpeg_quality: int = 85
    """JPEG quality (1-100) of the texture atlases."""

    def __post_init__(self) -> None:
        _require(self.max_features_per_tile >= 1, "tiles need room for at least 1 building")
        _require(self.max_features_per_tile <= 65_535, "at most 65535 buildings per tile (16-bit feature ids)")
        _require(self.max_vertices_per_tile >= 1_000, "tiles need room for at least 1000 vertices")
        _require(self.building_error_m > 0, "the buildings' geometric error must be positive")
        _require(self.compression in TILE_COMPRESSIONS, f"tile compression must be one of {', '.join(TILE_COMPRESSIONS)}")
        _require(
            64 <= self.max_atlas_side <= 16_384 and self.max_atlas_side % 4 == 0,
            "the texture atlas side must be a multiple of 4 within 64..16384 pixels",
        )
        _require(1 <= self.jpeg_quality <= 100, "JPEG quality must be within 1..100")


@dataclass(frozen=True)
class Lod2Config:
    """LOD2.2: roof planes, roof lines, and the footprint partitioned into roof faces."""

    min_points: int = 30
    """Fewer building points than this and the building falls back to a LOD1.2-style block."""
    normal_neighbours: int = 10
    """Points used to estimate each point's normal."""
    normal_angle_deg: float = 15.0
    """Neighbouring points join one region when their normals differ by less than this."""
    region_distance_m: float = 0.15
    """... and each lies within this distance of the other's local plane."""
    max_surface_variation: float = 0.015
    """Points whose neighbourhood bends more than this (smallest eigenvalue over their sum)
    sit on an edge and link no region."""
    min_plane_points: int = 15
    min_plane_area_m2: float = 2.0
    """Regions with fewer points, or covering less area (at the building's point density), are not roof planes."""
    merge_angle_deg: float = 5.0
    merge_distance_m: float = 0.2
    """Planes closer than these in direction and offset are one plane."""
    assign_angle_deg: float = 30.0
    fit_distance_m: float = 0.3
    """Points within this distance of a plane (with a compatible normal) belong to it."""
    flat_snap_deg: float = 2.0
    """Planes flatter than this are made exactly horizontal (flat roofs and their drainage slope)."""
    max_roof_slope_deg: float = 70.0
    """Steeper segments are walls, not roofs."""
    max_planes: int = 150
    """More planes than this and the building falls back (vegetation or noise, not a roof)."""
    max_nodata_fraction: float = 0.6
    """More of the footprint without points than this (glass roofs, greenhouses) and it falls back."""
    cell_size_m: float = 0.5
    """Cell of the grid used for plane outlines and the partition's data costs."""
    line_angle_deg: float = 10.0
    """Roof lines within this angle of the footprint's main directions are aligned with them."""
    line_offset_m: float = 0.5
    """Parallel roof lines closer than this are one line."""
    min_line_length_m: float = 1.0
    """Shorter outline pieces are not roof lines."""
    max_lines: int = 150
    """Most roof lines kept per building (the best supported)."""
    smoothness: float = 0.07
    """Weight of boundary length (m) against misfit volume (m3) in the face labelling."""
    misfit_cap_m: float = 3.0
    """A cell's misfit to a plane counts at most this much (robust to trees and outliers)."""
    min_face_area_m2: float = 0.2
    """Roof faces smaller than this merge into a neighbour (below the smallest superstructure,
    whose box, put on the solid's millimetre grid, may lose a fraction of its area)."""
    superstructure_min_height_m: float = 0.5
    """Roof cells standing this far above the roof faces make superstructures (chimneys,
    dormers, roof equipment)..."""
    superstructure_min_area_m2: float = 0.25
    superstructure_max_area_m2: float = 25.0
    """... covering between these areas; larger ones are parts of the roof the planes missed."""

    def __post_init__(self) -> None:
        _require(self.min_points >= 3, "LOD2 needs at least 3 points")
        _require(self.normal_neighbours >= 3, "normals need at least 3 neighbours")
        for name in ("normal_angle_deg", "merge_angle_deg", "assign_angle_deg", "line_angle_deg"):
            _require(0 < getattr(self, name) < 90, f"{name} must be within 0..90")
        for name in ("region_distance_m", "merge_distance_m", "fit_distance_m", "cell_size_m", "line_offset_m",
                     "min_line_length_m", "smoothness", "misfit_cap_m"):
            _require(getattr(self, name) > 0, f"{name} must be positive")
        _require(0 < self.max_surface_variation < 1 / 3, "surface variation must be within 0..1/3")
        _require(self.min_plane_points >= 3, "a plane needs at least 3 points")
        _require(self.min_plane_area_m2 >= 0, "minimum plane area cannot be negative")
        _require(0 < self.max_roof_slope_deg <= 90, "max roof slope must be within 0..90")
        _require(0 <= self.flat_snap_deg < self.max_roof_slope_deg, "flat snap angle must be below the max slope")
        _require(self.max_planes >= 1, "max planes must be at least 1")
        _require(self.max_lines >= 1, "max lines must be at least 1")
        _require(0 < self.max_nodata_fraction <= 1, "max no-data fraction must be within 0..1")
        _require(self.min_face_area_m2 >= 0, "minimum face area cannot be negative")
        _require(self.superstructure_min_height_m > 0, "superstructure height must be positive")
        _require(0 <= self.superstructure_min_area_m2 <= self.superstructure_max_area_m2,
                 "superstructure areas must be 0 <= min <= max")


@dataclass(frozen=True)
class OutlineConfig:
    """Building outlines derived from the building points, when no footprints are given."""

    cell_size_m: float = 0.5
    closing_cells: int = 1
    """Gaps up to about twice this many cells between building points are closed."""
    max_hole_m2: float = 25.0
    """Holes smaller than this are filled; larger ones are courtyards."""
    min_area_m2: float = 10.0
    """Smaller outlines are specks (chimneys, vehicles, misclassified points), not buildings."""
    split_step_m: float = 3.0
    """Adjoining buildings are split where their roofs step by at least this much..."""
    min_split_area_m2: float = 40.0
    """... when both sides are at least this large."""

    def __post_init__(self) -> None:
        _require(0.1 <= self.cell_size_m <= 5, "outline cell must be within 0.1..5 m")
        _require(self.closing_cells >= 0, "closing cells cannot be negative")
        for name in ("max_hole_m2", "min_area_m2", "split_step_m", "min_split_area_m2"):
            _require(getattr(self, name) >= 0, f"{name} cannot be negative")


TEXTURE_LODS = ("1.2", "1.3", "2.2")


@dataclass(frozen=True)
class TextureConfig:
    """Facade and roof textures cut from oriented aerial images (`twin build --images`)."""

    lods: tuple[str, ...] = TEXTURE_LODS
    """LoDs whose roof and wall surfaces are textured (ground surfaces never are)."""
    min_visible_share: float = 0.7
    """A camera may texture a surface when at least this share of the surface's sample points
    is in its image and not hidden by any building; below it, for every camera, the surface
    keeps a plain material."""
    max_view_angle_deg: float = 75.0
    """Cameras that see a surface more obliquely than this (angle between the surface's normal
    and the direction to the camera) are not used for it."""
    samples_per_surface: int = 64
    """Most sample points of the visibility test per surface (a grid over the surface)."""
    depth_tolerance_m: float = 0.15
    """A sample is hidden when a ray from the camera hits something this much before it."""
    budget_px_per_building: int = 262_144
    """Most texture pixels per building and LoD (512 x 512); a building whose patches at the
    images' own resolution need more gets all of them coarser by one factor."""
    max_patch_side_px: int = 1024
    """Longest side of one surface's patch."""
    jpeg_quality: int = 90
    """Quality (1..100) of the JPEG atlases of CityJSON files (3D Tiles: `TilesConfig.jpeg_quality`)."""
    max_atlas_side: int = 4096
    """Longest side of a CityJSON file's atlas images: consecutive buildings share one atlas
    while their patches fill it at full resolution (`texture_atlas.FILL`)."""

    def __post_init__(self) -> None:
        _require(bool(self.lods), "at least one LoD to texture is needed")
        for lod in self.lods:
            _require(lod in TEXTURE_LODS, f"textured LoD {lod!r} is not one of {', '.join(TEXTURE_LODS)}")
        _require(0 < self.min_visible_share <= 1, "minimum visible share must be within 0..1 (and not 0)")
        _require(0 < self.max_view_angle_deg < 90, "max view angle must be within 0..90")
        _require(self.samples_per_surface >= 1, "at least one sample per surface is needed")
        _require(self.depth_tolerance_m > 0, "depth tolerance must be positive")
        _require(self.budget_px_per_building >= 64, "the pixel budget per building must be at least 64")
        _require(8 <= self.max_patch_side_px <= 8192, "max patch side must be within 8..8192 px")
        _require(1 <= self.jpeg_quality <= 100, "JPEG quality must be within 1..100")
        _require(
            64 <= self.max_atlas_side <= 16_384 and self.max_atlas_side % 4 == 0,
            "the texture atlas side must be a multiple of 4 within 64..16384 pixels",
        )


@dataclass(frozen=True)
class BuildConfig:
    classes: ClassMapping = field(default_factory=ClassMapping)
    ground: GroundConfig = field(default_factory=GroundConfig)
    lod1: Lod1Config = field(default_factory=Lod1Config)
    lod2: Lod2Config = field(default_factory=Lod2Config)
    outlines: OutlineConfig = field(default_factory=OutlineConfig)
    tiles: TilesConfig = field(default_factory=TilesConfig)
    textures: TextureConfig = field(default_factory=TextureConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChangeConfig:
    """`twin update`: when a newer scan says a roof changed, so that its building is rebuilt."""

    height_threshold_m: float = 1.0
    """A roof cell changed when its height moved by more than this (well above scan noise)."""
    min_share: float = 0.1
    """A roof changed when at least this share of the cells both scans saw changed."""

    def __post_init__(self) -> None:
        _require(self.height_threshold_m > 0, "roof change threshold must be positive")
        _require(0 < self.min_share <= 1, "changed share must be within 0..1 (and not 0)")
