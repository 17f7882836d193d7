"""The footprint partitioned by the roof lines, each face labelled with one roof plane.

The lines cut the footprint into faces (an arrangement, built with shapely's noding and
polygonize). Each face then gets one label, a roof plane or the ground (courtyards and
gaps inside the outline; never on the outline itself, which keeps the footprint), by
minimising over all faces at once

    sum of misfit volumes + smoothness * length of edges between different labels

where a face's misfit to a label is the volume between the roof heightfield and the
label's surface over the face (each cell's misfit capped, so trees and stray points
cannot dominate). The minimisation is alpha-expansion: repeated graph cuts, each
deciding for every face whether it switches to one label, with PyMaxflow's max-flow.
Faces with the same label then merge into roof faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import maxflow
import numpy as np
import shapely

from reconstruction.extrude import Plane, RoofFace
from twin.config import Lod2Config

GROUND = -1
ARRANGEMENT_GRID_M = 0.01
_FORBIDDEN = 1e9
_MAX_SWEEPS = 6


@dataclass(frozen=True, eq=False)
class RoofSamples:
    """What the partition fits: heights at cell centres, of the roof or, where the
    footprint has no roof points but ground points (a courtyard), of the ground."""

    xy: np.ndarray
    """(n, 2) sample positions."""
    z: np.ndarray
    """(n,) heights."""
    area: float
    """Area each sample stands for (m2)."""


def arrangement(footprint: shapely.Polygon, lines: list[shapely.LineString]) -> list[shapely.Polygon]:
    """The faces into which `lines` (long enough to cross it) cut `footprint`, tiling it.

    The lines are noded with the outline whole, not clipped first: a clipped line's end
    is computed, may miss the outline by a rounding error, and would then dangle. Noding
    snap-rounds to `ARRANGEMENT_GRID_M`, so lines meeting at nearly one point (hips
    reaching a ridge's end) meet at exactly one, instead of leaving slivers."""
    noded = shapely.union_all([footprint.boundary, *lines], grid_size=ARRANGEMENT_GRID_M)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    shapely.prepare(footprint)
    inside = [f for f in faces if f.area > 1e-6 and footprint.contains(f.representative_point())]
    return sorted(inside, key=lambda f: (round(f.centroid.x, 4), round(f.centroid.y, 4)))


def label_faces(
    faces: list[shapely.Polygon],
    planes: list[Plane],
    samples: RoofSamples,
    footprint: shapely.Polygon,
    ground_z: float,
    config: Lod2Config,
) -> np.ndarray:
    """The label of each face: an index into `planes`, or GROUND."""
    costs = _data_costs(faces, planes, samples, footprint, ground_z, config)
    edges = _adjacency(faces)
    labels = np.argmin(costs, axis=1)
    energy = _energy(costs, edges, labels, config.smoothness)
    for _ in range(_MAX_SWEEPS):
        improved = False
        for alpha in range(costs.shape[1]):
            candidate = _expand(costs, edges, labels, alpha, config.smoothness)
            candidate_energy = _energy(costs, edges, candidate, config.smoothness)
            if candidate_energy < energy - 1e-9:
                labels, energy, improved = candidate, candidate_energy, True
        if not improved:
            break
    return np.where(labels == len(planes), GROUND, labels)


def roof_faces(faces: list[shapely.Polygon], labels: np.ndarray, planes: list[Plane], config: Lod2Config) -> list[RoofFace]:
    """Faces with the same plane merged; slivers under `min_face_area_m2` given to a neighbour."""
    labels = _absorb_slivers(faces, labels, config.min_face_area_m2)
    result = []
    for label in sorted(set(labels.tolist()) - {GROUND}):
        merged = shapely.union_all([f for f, l in zip(faces, labels) if l == label])
        # On the millimetre grid (where the solid's vertices go anyway) GEOS drops
        # repeated and collinear vertices and keeps the faces valid.
        snapped = shapely.set_precision(merged.simplify(0.0), 0.001)
        for part in shapely.get_parts(snapped):
            if part.geom_type == "Polygon" and part.area > 0:
                result.append(RoofFace(part, planes[label]))
    return result


def _data_costs(faces, planes, samples: RoofSamples, footprint, ground_z, config: Lod2Config) -> np.ndarray:
    n_labels = len(planes) + 1  # the last label is the ground
    costs = np.zeros((len(faces), n_labels))
    tree = shapely.STRtree(faces)
    sample_index, face_index = tree.query(shapely.points(samples.xy), predicate="within")
    xy = samples.xy[sample_index]
    z = samples.z[sample_index]
    surfaces = np.stack([p.height_at(xy[:, 0], xy[:, 1]) for p in planes] + [np.full(len(xy), ground_z)], axis=1)
    misfit = np.minimum(np.abs(surfaces - z[:, None]), config.misfit_cap_m) * samples.area
    np.add.at(costs, face_index, misfit)
    outline = footprint.exterior
    for k, face in enumerate(faces):
        if face.boundary.intersection(outline).length > 0:
            costs[k, -1] = _FORBIDDEN
    return costs


def _adjacency(faces: list[shapely.Polygon]) -> list[tuple[int, int, float]]:
    tree = shapely.STRtree(faces)
    left, right = tree.query(faces, predicate="intersects")
    edges = []
    for i, j in zip(left.tolist(), right.tolist()):
        if i < j:
            length = faces[i].boundary.intersection(faces[j].boundary).length
            if length > 1e-6:
                edges.append((i, j, float(length)))
    return edges


def _energy(costs: np.ndarray, edges, labels: np.ndarray, smoothness: float) -> float:
    data = float(costs[np.arange(len(labels)), labels].sum())
    return data + smoothness * sum(length for i, j, length in edges if labels[i] != labels[j])


def _expand(costs: np.ndarray, edges, labels: np.ndarray, alpha: int, smoothness: float) -> np.ndarray:
    """One alpha-expansion move: the best labelling where faces keep their label or take alpha.

    Binary variable per face: 0 keeps its label (source side), 1 takes alpha (sink side).
    A Potts pair term E(x_i, x_j) with E00 = w[l_i != l_j], E01 = w[l_i != alpha],
    E10 = w[alpha != l_j], E11 = 0 is decomposed, after Kolmogorov and Zabih, into unary
    terms and one edge of capacity E01 + E10 - E00 - E11 >= 0 (the Potts model is a metric).
    """
    n = len(labels)
    graph = maxflow.GraphFloat()
    nodes = graph.add_nodes(n)
    keep = costs[np.arange(n), labels].copy()
    switch = costs[:, alpha].copy()
    for i, j, length in edges:
        w = smoothness * length
        e00 = w * (labels[i] != labels[j])
        e01 = w * (labels[i] != alpha)
        e10 = w * (alpha != labels[j])
        # E = e00 + (e10 - e00) x_i + (0 - e10) x_j + (e01 + e10 - e00) (1 - x_i) x_j
        switch[i] += e10 - e00
        switch[j] += -e10
        graph.add_edge(nodes[i], nodes[j], e01 + e10 - e00, 0.0)
    for i in range(n):
        low = min(keep[i], switch[i])
        # a node on the sink side (takes alpha) cuts its source edge: capacity = cost of switching
        graph.add_tedge(nodes[i], switch[i] - low, keep[i] - low)
    graph.maxflow()
    takes_alpha = np.array([graph.get_segment(nodes[i]) == 1 for i in range(n)])
    return np.where(takes_alpha, alpha, labels)


def _absorb_slivers(faces, labels: np.ndarray, min_area: float) -> np.ndarray:
    """Regions of one label smaller than `min_area` take the label they share most edge with."""
    labels = labels.copy()
    edges = _adjacency(faces)
    while True:
        regions = _regions(len(faces), edges, labels)
        small = [r for r in regions if sum(faces[k].area for k in r) < min_area]
        if not small or len(regions) == 1:
            return labels
        region = min(small, key=lambda r: (sum(faces[k].area for k in r), min(r)))
        shared: dict[int, float] = {}
        for i, j, length in edges:
            if (i in region) != (j in region):
                other = labels[j] if i in region else labels[i]
                shared[other] = shared.get(other, 0.0) + length
        if not shared:
            return labels
        labels[list(region)] = max(shared, key=lambda l: (shared[l], -l))


def _regions(n: int, edges, labels: np.ndarray) -> list[set[int]]:
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in edges:
        if labels[i] == labels[j]:
            parent[find(i)] = find(j)
    groups: dict[int, set[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), set()).add(i)
    return sorted(groups.values(), key=min)
