"""The synthetic district: terrain, buildings with exact roofs, trees.

Everything here is pure geometry in local metres (x east, y north, from the district's
south-west corner); `twin.sample.generate` places it in Lambert-93.

A building is a set of wings. A wing's roof is the lowest of its planes (a gable is the
lower of two slopes, a hip of four), and the building's roof is the highest of its
wings where they overlap, which is how L- and T-shaped gables, towers on podiums and
multi-level flat roofs meet. From that definition the exact roof faces follow by
clipping with half-planes, so the ground truth is exact, not sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely import affinity

from reconstruction.extrude import Plane, RoofFace

EXTENT = (220.0, 160.0)
"""Size of the district in metres."""

_PARALLEL = 1e-9


def terrain_height(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """NGF-IGN69 height of the terrain: a gentle slope (about 3 %) with a broad swell."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return 48.0 + 0.025 * x + 0.012 * y + 0.6 * np.sin(x / 35.0) * np.cos(y / 50.0)


@dataclass(frozen=True)
class Wing:
    polygon: shapely.Polygon
    planes: tuple[Plane, ...]

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The wing's roof height at (x, y), NaN outside it."""
        z = np.min([p.height_at(x, y) for p in self.planes], axis=0)
        inside = shapely.contains_xy(self.polygon, x, y)
        return np.where(inside, z, np.nan)


@dataclass(frozen=True)
class SceneBuilding:
    id: str
    shape: str
    """What the building is, in words (gable, hip, tower on podium...)."""
    wings: tuple[Wing, ...]
    ground_z: float
    """The true ground height: the lowest terrain along the outline."""
    notes: tuple[str, ...] = field(default=())

    @property
    def footprint(self) -> shapely.Polygon:
        union = shapely.union_all([w.polygon for w in self.wings])
        return shapely.normalize(union)

    def roof_height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.nanmax([w.height(x, y) for w in self.wings], axis=0)

    def roof_faces(self) -> list[RoofFace]:
        return roof_faces(self.wings)


def roof_faces(wings: tuple[Wing, ...]) -> list[RoofFace]:
    """The exact planar faces of the roof defined by `wings`, coplanar neighbours merged."""
    bounds = shapely.union_all([w.polygon for w in wings]).buffer(10).bounds
    regions = [[_plane_region(wing, k, bounds) for k in range(len(wing.planes))] for wing in wings]
    faces: list[tuple[shapely.Geometry, Plane]] = []
    for wi, wing in enumerate(wings):
        for pi, plane in enumerate(wing.planes):
            region = regions[wi][pi]
            for vi, other_wing in enumerate(wings):
                if vi == wi:
                    continue
                for qi, other_plane in enumerate(other_wing.planes):
                    # Hidden where another wing's roof is higher; ties go to the first wing.
                    higher = _half_plane(bounds, plane, other_plane, strict=vi > wi)
                    region = region.difference(regions[vi][qi].intersection(higher))
            faces.append((region, plane))
    return _merge_coplanar(faces)


def _plane_region(wing: Wing, index: int, bounds: tuple[float, float, float, float]) -> shapely.Geometry:
    """Where the wing's roof is its plane `index`: where that plane is the lowest (ties to the first)."""
    region = wing.polygon
    plane = wing.planes[index]
    for k, other in enumerate(wing.planes):
        if k != index:
            region = region.intersection(_half_plane(bounds, plane, other, strict=k < index))
    return region


def _half_plane(bounds: tuple[float, float, float, float], low: Plane, high: Plane, strict: bool) -> shapely.Geometry:
    """The part of `bounds` where `low` is below `high` (or equal, unless `strict`)."""
    xmin, ymin, xmax, ymax = bounds
    box = np.array([(xmin, ymin), (xmax, ymin), (xmax, ymax), (xmin, ymax)])
    difference = high.height_at(box[:, 0], box[:, 1]) - low.height_at(box[:, 0], box[:, 1])
    if np.all(np.abs(difference) < _PARALLEL):
        return shapely.Polygon() if strict else shapely.box(*bounds)
    clipped = []
    for k in range(4):
        a, b = box[k], box[(k + 1) % 4]
        da, db = difference[k], difference[(k + 1) % 4]
        if da >= 0:
            clipped.append(a)
        if (da >= 0) != (db >= 0):
            clipped.append(a + (b - a) * (da / (da - db)))
    if len(clipped) < 3:
        return shapely.Polygon()
    return shapely.Polygon(clipped).buffer(0)


def _merge_coplanar(faces: list[tuple[shapely.Geometry, Plane]]) -> list[RoofFace]:
    groups: dict[tuple, list] = {}
    for region, plane in faces:
        key = tuple(np.round([plane.height_at(0, 0), plane.slope_x, plane.slope_y], 6))
        groups.setdefault(key, [plane, []])[1].append(region)
    result = []
    for plane, regions in groups.values():
        # On a fine grid GEOS returns valid geometry, so pieces of one plane that only
        # touch at a point come out as separate polygons, as faces must be.
        merged = shapely.set_precision(shapely.union_all(regions), 1e-6)
        for part in shapely.get_parts(merged):
            if part.geom_type == "Polygon" and part.area > 1e-4:
                result.append(RoofFace(shapely.normalize(part), plane))
    return sorted(result, key=lambda f: (round(f.polygon.centroid.x, 3), round(f.polygon.centroid.y, 3)))


def rectangle(cx: float, cy: float, length: float, width: float, angle_deg: float = 0.0) -> shapely.Polygon:
    """A rectangle centred on (cx, cy), `length` along the direction `angle_deg` from east."""
    box = shapely.box(-length / 2, -width / 2, length / 2, width / 2)
    return shapely.normalize(affinity.translate(affinity.rotate(box, angle_deg, origin=(0, 0)), cx, cy))


def edge_plane(a: np.ndarray, b: np.ndarray, eave_z: float, pitch_deg: float) -> Plane:
    """The plane rising at `pitch_deg` from the edge a->b (height `eave_z`) towards its left."""
    direction = (b - a) / np.linalg.norm(b - a)
    inward = np.array([-direction[1], direction[0]])
    slope = math.tan(math.radians(pitch_deg))
    return Plane(float(a[0]), float(a[1]), eave_z, slope * inward[0], slope * inward[1])


def _ccw_corners(polygon: shapely.Polygon) -> np.ndarray:
    return np.asarray(shapely.geometry.polygon.orient(polygon, 1.0).exterior.coords)[:-1]


def flat(polygon: shapely.Polygon, z: float) -> Wing:
    return Wing(polygon, (Plane.horizontal(z),))


def hipped(polygon: shapely.Polygon, eave_z: float, pitch_deg: float, edges: tuple[int, ...] | None = None) -> Wing:
    """Slopes rising from the chosen edges (all of them by default: a hip roof or a pyramid)."""
    corners = _ccw_corners(polygon)
    chosen = range(len(corners)) if edges is None else edges
    planes = tuple(edge_plane(corners[k], corners[(k + 1) % len(corners)], eave_z, pitch_deg) for k in chosen)
    return Wing(polygon, planes)


def gabled(polygon: shapely.Polygon, eave_z: float, pitch_deg: float, ridge_along_x: bool | None = None) -> Wing:
    """Two slopes rising from two opposite sides of a rectangle: its long sides, or the
    sides closest to the x axis (`ridge_along_x=True`) or to the y axis (False)."""
    corners = _ccw_corners(polygon)
    edges = [corners[(k + 1) % 4] - corners[k] for k in range(4)]
    if ridge_along_x is None:
        first = 0 if np.linalg.norm(edges[0]) >= np.linalg.norm(edges[1]) else 1
    else:
        along_x = abs(edges[0][0]) >= abs(edges[0][1])
        first = 0 if along_x == ridge_along_x else 1
    return hipped(polygon, eave_z, pitch_deg, edges=(first, first + 2))


def shed(polygon: shapely.Polygon, eave_z: float, pitch_deg: float, low_edge: int = 0) -> Wing:
    return hipped(polygon, eave_z, pitch_deg, edges=(low_edge,))


@dataclass(frozen=True)
class Tree:
    x: float
    y: float
    crown_radius: float
    crown_base: float
    """Height of the crown's lowest point above the terrain."""
    top: float
    """Height of the tree above the terrain."""


def _ground_height(footprint: shapely.Polygon) -> float:
    outline = shapely.segmentize(footprint.exterior, 0.25)
    xy = np.asarray(outline.coords)
    return float(terrain_height(xy[:, 0], xy[:, 1]).min())


def _building(id_: str, shape: str, make_wings, notes: tuple[str, ...] = ()) -> SceneBuilding:
    """`make_wings(ground_z)` builds the wings once the ground height of the outline is known."""
    outline = shapely.union_all([w.polygon for w in make_wings(0.0)])
    ground_z = round(_ground_height(outline), 3)
    return SceneBuilding(id_, shape, tuple(make_wings(ground_z)), ground_z, notes)


def district() -> tuple[list[SceneBuilding], list[Tree]]:
    """The sample district's buildings (sorted by id) and trees."""
    b: list[SceneBuilding] = []

    # South row: one of each simple roof shape.
    b.append(_building("B01", "flat", lambda g: [flat(rectangle(16, 20, 16, 11), g + 7.4)]))
    b.append(_building("B02", "gable", lambda g: [gabled(rectangle(42, 20, 13, 8.5), g + 5.6, 38)]))
    b.append(_building("B03", "hip", lambda g: [hipped(rectangle(66, 20, 15, 9.5), g + 6.0, 33)]))
    b.append(_building("B04", "pyramid", lambda g: [hipped(rectangle(89, 20, 9.5, 9.5), g + 5.2, 40)]))
    b.append(_building("B05", "shed", lambda g: [shed(rectangle(108, 19, 10, 7), g + 4.2, 15)]))
    b.append(
        _building(
            "B06",
            "L-shaped gable",
            lambda g: [
                gabled(rectangle(134, 16, 16, 7.5), g + 5.5, 38),
                gabled(rectangle(138.25, 23.75, 7.5, 23.0), g + 5.5, 38),
            ],
        )
    )
    b.append(
        _building(
            "B07",
            "T-shaped gable",
            lambda g: [
                gabled(rectangle(170, 30, 20, 7.5), g + 5.8, 40),
                gabled(rectangle(170, 22.25, 7.5, 15.5), g + 5.8, 40),
            ],
        )
    )
    b.append(_building("B08", "gable, rotated", lambda g: [gabled(rectangle(200, 22, 12, 8, 25), g + 5.0, 42)]))

    # Terraced houses sharing walls: five gables in a row, eaves and ridges at different heights.
    for k, (eave, pitch) in enumerate([(6.0, 40), (6.5, 40), (6.0, 38), (7.0, 42), (6.3, 40)]):
        x = 14 + 6.5 * k
        b.append(
            _building(
                f"B{9 + k:02d}",
                "terraced gable",
                lambda g, x=x, eave=eave, pitch=pitch: [
                    gabled(shapely.box(x - 3.25, 52, x + 3.25, 62), g + eave, pitch, ridge_along_x=True)
                ],
                ("terraced: shares walls with its neighbours",),
            )
        )
    b.append(_building("B14", "tiny shed", lambda g: [shed(rectangle(55, 57, 4.0, 3.0), g + 2.2, 12)], ("< 15 m²",)))
    b.append(_building("B15", "hip, rotated", lambda g: [hipped(rectangle(78, 58, 14, 9, -15), g + 6.2, 30)]))
    b.append(_building("B16", "shed, rotated", lambda g: [shed(rectangle(101, 57, 11, 7, 60), g + 4.5, 18)]))
    b.append(
        _building(
            "B17",
            "multi-level flat",
            lambda g: [flat(rectangle(130, 58, 26, 14), g + 6.2), flat(rectangle(138.5, 58, 9, 14), g + 10.6)],
        )
    )
    b.append(
        _building(
            "B18",
            "gable and flat (mixed)",
            lambda g: [gabled(rectangle(168, 60, 14, 8), g + 6.0, 40), flat(rectangle(168, 52.25, 14, 7.5), g + 3.6)],
        )
    )
    b.append(_building("B19", "flat, rotated", lambda g: [flat(rectangle(200, 58, 16, 12, 35), g + 9.2)]))

    # North part: large buildings.
    b.append(
        _building(
            "B20",
            "courtyard",
            lambda g: [flat(shapely.box(10, 88, 42, 120).difference(shapely.box(20, 98, 32, 110)), g + 14.0)],
            ("footprint with a hole (courtyard)",),
        )
    )
    b.append(
        _building(
            "B21",
            "tower on podium",
            lambda g: [flat(shapely.box(52, 88, 82, 110), g + 8.0), flat(shapely.box(60, 93, 72, 105), g + 32.0)],
        )
    )
    b.append(_building("B22", "flat, large", lambda g: [flat(shapely.box(92, 90, 132, 114), g + 9.0)]))
    b.append(_building("B23", "hip, large", lambda g: [hipped(rectangle(157, 100, 24, 12), g + 7.5, 28)]))
    b.append(
        _building(
            "B24",
            "pyramid on flat (mixed)",
            lambda g: [flat(rectangle(196, 100, 20, 16), g + 6.0), hipped(rectangle(196, 100, 8, 8), g + 6.0, 45)],
        )
    )

    # North row: houses, with the footprint defects around them.
    b.append(_building("B25", "gable", lambda g: [gabled(rectangle(14, 140, 12, 8, 90), g + 5.5, 40)]))
    b.append(
        _building(
            "B26",
            "gable with detached garage (multipolygon footprint)",
            lambda g: [gabled(rectangle(36, 140, 12, 8), g + 5.5, 38)],
        )
    )
    b.append(_building("B26_2", "flat garage", lambda g: [flat(rectangle(36, 151, 6, 5), g + 2.8)]))
    b.append(_building("B27", "hip", lambda g: [hipped(rectangle(60, 140, 12, 9), g + 6.0, 32)]))
    b.append(_building("B28", "flat (footprint overlaps B29)", lambda g: [flat(rectangle(80, 140, 10, 9), g + 6.5)]))
    b.append(_building("B29", "flat (footprint overlaps B28)", lambda g: [flat(rectangle(92, 140, 12, 9), g + 7.8)]))
    b.append(_building("B30", "gable (missing from the footprints)", lambda g: [gabled(rectangle(114, 140, 12, 8), g + 5.0, 40)]))
    b.append(_building("B31", "gable (self-touching footprint ring)", lambda g: [gabled(rectangle(136, 140, 12, 8), g + 5.5, 42)]))
    b.append(_building("B32", "shed", lambda g: [shed(rectangle(158, 140, 10, 8), g + 4.0, 20, low_edge=2)]))
    b.append(_building("B33", "pyramid", lambda g: [hipped(rectangle(178, 140, 10, 10, 15), g + 5.0, 35)]))
    b.append(_building("B34", "hip, rotated", lambda g: [hipped(rectangle(203, 140, 13, 8.5, -30), g + 6.5, 35)]))

    trees = [
        Tree(47.5, 24.5, 3.5, 3.0, 11.0),  # overhangs B02
        Tree(64.0, 146.0, 3.0, 2.5, 10.0),  # overhangs B27
        Tree(166.0, 33.0, 3.2, 3.0, 12.0),  # overhangs B07
        Tree(30.0, 75.0, 4.0, 3.0, 13.0),
        Tree(90.0, 70.0, 3.0, 2.0, 9.0),
        Tree(145.0, 80.0, 4.5, 3.5, 14.0),
        Tree(185.0, 122.0, 3.5, 3.0, 11.0),
        Tree(48.0, 125.0, 2.5, 2.0, 8.0),
        Tree(120.0, 125.0, 3.0, 2.5, 10.0),
        Tree(210.0, 80.0, 2.0, 0.2, 1.4),  # a bush
        Tree(150.0, 122.0, 1.8, 0.1, 1.2),  # a bush
    ]
    return sorted(b, key=lambda s: s.id), trees
