"""LOD2.2 of one building: roof planes -> roof lines -> labelled partition, then once more
with the superstructures that partition leaves out -> solid (from the first partition if
the second gives none).

Raises `Lod2Failure` with the reason whenever the building cannot get a trustworthy
LOD2.2 (too few points, too many planes, few returns as on glass roofs, a failed step,
an invalid solid); the caller then falls back to a LOD1.2-style block and records why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import shapely

from reconstruction.extrude import ExtrusionError, Plane, RoofFace, extrude_faces
from reconstruction.heightfield import Heightfield
from reconstruction.partition import (
    FaceEdges,
    RoofSamples,
    arrangement,
    face_adjacency,
    label_faces,
    near_lines,
    roof_faces,
)
from reconstruction.planes import RoofPlane, detect_planes
from reconstruction.quality import face_attributes
from reconstruction.roof_lines import plane_label_grid, roof_lines
from reconstruction.superstructures import superstructures
from reconstruction.validate import overused_edges, validate_solid
from twin.config import Lod2Config
from twin.model import Solid


PINCH_REPAIRS = 8
BOX_REACH_M = 2.0
"""A superstructure's top may label the roof faces meeting its box grown by this much on
every side (beside a box it sometimes fits a flat piece better than the roof planes do),
no others. Each box's graph-cut moves then span the faces near it, not the whole roof: on
roofs with hundreds of boxes, those moves took most of the building's time."""


class Lod2Failure(Exception):
    """Why a building gets no LOD2.2 of its own."""


@dataclass(frozen=True, eq=False)
class Lod2Result:
    solid: Solid
    faces: tuple[RoofFace, ...]
    planes: tuple[RoofPlane, ...]
    wall_points: int


def reconstruct_lod2(
    roof_points: np.ndarray,
    inner_ground_points: np.ndarray,
    footprint: shapely.Polygon,
    ground_z: float,
    field: Heightfield,
    nodata_fraction: float,
    config: Lod2Config,
) -> Lod2Result:
    """`roof_points` are the building points inside the footprint, `inner_ground_points`
    the ground points inside it (seen through courtyards), `field` the roof heightfield."""
    if len(roof_points) < config.min_points:
        raise Lod2Failure(f"too few points for roof planes ({len(roof_points)} < {config.min_points})")
    if nodata_fraction > config.max_nodata_fraction:
        raise Lod2Failure(
            f"{nodata_fraction:.0%} of the footprint has no roof points (glass roof, greenhouse or occlusion)"
        )
    # Planes must cover some area, not just some points: on dense clouds, roof equipment
    # (air conditioners, chimneys) would otherwise make planes of its own.
    density = len(roof_points) / max(footprint.area, 1.0)
    min_points = max(config.min_plane_points, int(config.min_plane_area_m2 * density))
    detection = detect_planes(roof_points, replace(config, min_plane_points=min_points))
    planes = detection.planes
    if not planes:
        raise Lod2Failure("no roof plane found in the points")
    if len(planes) > config.max_planes:
        raise Lod2Failure(f"too many roof planes ({len(planes)} > {config.max_planes})")

    origin = np.asarray(footprint.centroid.coords[0])
    label_grid = plane_label_grid(field, roof_points, detection.labels)
    lines = roof_lines(field, label_grid, planes, footprint, origin, config)
    reach = float(np.hypot(*np.subtract(footprint.bounds[2:], footprint.bounds[:2]))) + 10.0
    segments = near_lines(footprint, [line.segment(origin, reach) for line in lines])
    samples = _samples(field, inner_ground_points)
    plane_list = [p.plane for p in planes]
    partition = _Partition.of(footprint, segments, plane_list, samples, ground_z, config)
    boxes = superstructures(field, partition.merged, config)
    if boxes:
        # The first partition only served to find the boxes: its solid is made only if the
        # partition with them fails.
        outlines = near_lines(footprint, [box.outline.exterior for box in boxes])
        reaches = [None] * len(plane_list) + [box.outline.buffer(BOX_REACH_M, join_style="mitre") for box in boxes]
        try:
            detailed = _Partition.of(
                footprint, np.concatenate([segments, outlines]), plane_list + [box.plane for box in boxes], samples,
                ground_z, config, reaches,
            )
            solid, faces = _roof_solid(detailed, ground_z, config)
        except Lod2Failure:
            pass  # the roof without its superstructures is still a valid LOD2.2
        else:
            return Lod2Result(solid, tuple(faces), planes, detection.wall_points)
    solid, faces = _roof_solid(partition, ground_z, config)
    return Lod2Result(solid, tuple(faces), planes, detection.wall_points)


@dataclass(frozen=True, eq=False)
class _Partition:
    """The footprint cut by roof lines, its faces labelled with planes (or the ground), and
    the roof faces they merge into."""

    faces: list[shapely.Polygon]
    edges: FaceEdges
    planes: list[Plane]
    labels: np.ndarray
    merged: list[RoofFace]

    @classmethod
    def of(
        cls,
        footprint: shapely.Polygon,
        segments: np.ndarray,
        planes: list[Plane],
        samples: RoofSamples,
        ground_z: float,
        config: Lod2Config,
        reaches: Sequence[shapely.Polygon | None] = (),
    ) -> "_Partition":
        faces = arrangement(footprint, segments)
        edges = face_adjacency(faces)
        labels = label_faces(faces, edges, planes, samples, footprint, ground_z, config, reaches)
        return cls(faces, edges, planes, labels, _merged_faces(faces, edges, labels, planes, config))


def _merged_faces(faces, edges: FaceEdges, labels: np.ndarray, planes: list[Plane], config: Lod2Config) -> list[RoofFace]:
    merged = roof_faces(faces, edges, labels, planes, config)
    if not merged:
        raise Lod2Failure("the partition left no roof face")
    return [RoofFace(f.polygon, f.plane, face_attributes(f.plane)) for f in merged]


def _roof_solid(partition: _Partition, ground_z: float, config: Lod2Config) -> tuple[Solid, list[RoofFace]]:
    """The partition's roof faces as a valid solid, its pinches repaired."""
    faces, edges, planes = partition.faces, partition.edges, partition.planes
    labels, merged = partition.labels, partition.merged
    tried = {labels.tobytes()}
    for attempt in range(PINCH_REPAIRS + 1):
        if attempt:
            merged = _merged_faces(faces, edges, labels, planes, config)
        try:
            solid = extrude_faces(merged, ground_z)
        except ExtrusionError as error:
            raise Lod2Failure(f"the roof faces do not make a solid ({error})") from None
        # Pinches are found without the whole validation, which runs once, on the last solid.
        pinches = overused_edges(solid)
        if not pinches:
            break
        repaired = _unpinch(faces, labels, pinches, whole=False)
        if repaired.tobytes() in tried:
            # Repairing one pinch remade another that was repaired before: around each
            # pinch, every face now takes the label that covers most of it.
            repaired = _unpinch(faces, labels, pinches, whole=True)
        labels = repaired
        tried.add(labels.tobytes())
    errors = validate_solid(solid)
    if errors:
        raise Lod2Failure(f"the LOD2.2 solid is invalid (val3dity codes {errors})")
    return solid, merged


def _unpinch(faces: list[shapely.Polygon], labels: np.ndarray, edges: list[np.ndarray], whole: bool) -> np.ndarray:
    """Removes pinches: faces meeting at a point with heights alternating around it make
    the solid touch itself along a vertical edge there. Around each such point, the label
    covering the least area there gives its faces to the neighbouring label they share
    most edge with, which breaks the alternation at the least cost to the roof's shape;
    or, when `whole`, all the faces there take the label covering the most area."""
    labels = labels.copy()
    face_array = np.asarray(faces, dtype=object)
    for edge in edges:
        point = shapely.Point(edge[0][:2])
        around = np.flatnonzero(shapely.distance(face_array, point) < 0.002).tolist()
        groups: dict[int, list[int]] = {}
        for k in around:
            groups.setdefault(int(labels[k]), []).append(k)
        if len(groups) < 2:
            continue
        if whole:
            labels[around] = max(groups, key=lambda label: (sum(faces[k].area for k in groups[label]), -label))
            continue
        weakest = min(groups, key=lambda label: (sum(faces[k].area for k in groups[label]), label))
        shared: dict[int, float] = {}
        for k in groups[weakest]:
            for other in around:
                if labels[other] != weakest:
                    length = faces[k].boundary.intersection(faces[other].boundary).length
                    shared[int(labels[other])] = shared.get(int(labels[other]), 0.0) + length
        if shared:
            labels[groups[weakest]] = max(shared, key=lambda label: (shared[label], -label))
    return labels


def _samples(field: Heightfield, inner_ground_points: np.ndarray) -> RoofSamples:
    """Roof heights per cell, and ground heights in cells with ground but no roof points."""
    has_roof = np.isfinite(field.heights) & field.covered
    cells = np.argwhere(has_roof)
    xy = field.cell_centres(cells)
    z = field.heights[has_roof]
    if len(inner_ground_points):
        ground_field = field.of(inner_ground_points)
        open_ground = np.isfinite(ground_field.heights) & ~has_roof & field.covered
        if open_ground.any():
            ground_cells = np.argwhere(open_ground)
            xy = np.vstack([xy, field.cell_centres(ground_cells)])
            z = np.concatenate([z, ground_field.heights[open_ground]])
    return RoofSamples(xy, z, field.cell**2)
