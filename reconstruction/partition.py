"""The footprint partitioned by the roof lines, each face labelled with one roof plane.

The lines cut the footprint into faces (an arrangement, built with shapely's noding and
polygonize). Each face then gets one label, a roof plane or the ground (courtyards and
gaps inside the outline; never on the outline itself, which keeps the footprint), by
minimising over all faces at once

    sum of misfit volumes + smoothness * length of edges between different labels

where a face's misfit to a label is the volume between the roof heightfield and the
label's surface over the face (each cell's misfit capped, so trees and stray points
cannot dominate). The minimisation is alpha-expansion: repeated graph cuts, each
deciding for every face whether it switches to one label, with PyMaxflow's max-flow. A
label may be given a reach (a superstructure's, around its box): it then labels only
faces meeting that reach, and its moves decide for those faces alone.
Faces with the same label then merge into roof faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import maxflow
import numpy as np
import shapely

from reconstruction.extrude import SNAP_M, Plane, RoofFace
from reconstruction.geometry import component_labels, group_sums, points_within, unique_rows
from twin.config import Lod2Config

GROUND = -1
ARRANGEMENT_GRID_M = 0.01
LINE_MARGIN_M = 1.0
MIN_ROOF_CLEARANCE_M = 0.3
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


def near_lines(footprint: shapely.Polygon, lines: list[shapely.Geometry]) -> np.ndarray:
    """The parts of `lines` within `LINE_MARGIN_M` of `footprint`, for `arrangement`: their
    crossings farther out, half of them on large roofs, would be noded for nothing. Line
    by line, so a second arrangement with more lines clips only those."""
    return shapely.intersection(lines, footprint.buffer(LINE_MARGIN_M))


def arrangement(footprint: shapely.Polygon, lines: np.ndarray) -> list[shapely.Polygon]:
    """The faces into which `lines` (`near_lines`, long enough to cross it) cut
    `footprint`, tiling it.

    The lines are noded with the outline whole, not clipped to it first: a clipped line's
    end is computed, may miss the outline by a rounding error, and would then dangle (they
    are only cut short a metre outside it, where nothing they cross matters). The
    lines are noded among themselves with snap-rounding to `ARRANGEMENT_GRID_M`, so lines
    meeting at nearly one point (hips reaching a ridge's end) meet at exactly one instead
    of leaving slivers. With the outline, they are noded on the solid's millimetre grid:
    the faces then share their vertices exactly, where noding in floating point leaves
    crossings a fraction of a millimetre from outline corners that the solid's grid
    would tear apart."""
    noded_lines = shapely.union_all(lines, grid_size=ARRANGEMENT_GRID_M)
    # Only the edges near the outline need noding with it: the others have their vertices
    # on the coarser grid (so on the millimetre one too), and nothing new crosses them or
    # comes within a pixel of them. Noding them again took half the arrangement's time.
    edges = shapely.get_parts(noded_lines)
    band = footprint.boundary.buffer(ARRANGEMENT_GRID_M)
    shapely.prepare(band)
    meets = shapely.intersects(band, edges)
    noded = shapely.union_all([footprint.boundary, shapely.multilinestrings(edges[meets])], grid_size=SNAP_M)
    faces = shapely.get_parts(shapely.polygonize(np.concatenate([shapely.get_parts(noded), edges[~meets]])))
    faces = faces[shapely.area(faces) > 1e-6]
    shapely.prepare(footprint)
    faces = faces[shapely.contains(footprint, shapely.point_on_surface(faces))]
    centroids = shapely.get_coordinates(shapely.centroid(faces)).tolist()
    order = sorted(range(len(faces)), key=lambda k: (round(centroids[k][0], 4), round(centroids[k][1], 4)))
    return faces[order].tolist()


def label_faces(
    faces: list[shapely.Polygon],
    edges: FaceEdges,
    planes: list[Plane],
    samples: RoofSamples,
    footprint: shapely.Polygon,
    ground_z: float,
    config: Lod2Config,
    reaches: Sequence[shapely.Polygon | None] = (),
) -> np.ndarray:
    """The label of each face: an index into `planes`, or GROUND; `edges` are the faces'
    `face_adjacency`. A plane with a reach in `reaches` (by index; None or none given: the
    whole footprint) labels only faces meeting its reach."""
    movable = _movable_faces(faces, reaches, len(planes) + 1)
    costs = _data_costs(faces, planes, samples, edges.on_outline, ground_z, config, movable)
    labels = np.argmin(costs, axis=1)
    energy = _energy(costs, edges, labels, config.smoothness)
    # A move depends only on the labels: one that failed needs no second try until some
    # other move has changed them.
    moves, last_change, last_failed = 0, 0, np.full(costs.shape[1], -1)
    for _ in range(_MAX_SWEEPS):
        improved = False
        for alpha in range(costs.shape[1]):
            if last_failed[alpha] >= last_change:
                continue
            moves += 1
            candidate = _expand(costs, edges, labels, alpha, config.smoothness, movable[alpha])
            # A move that changes nothing keeps the energy; most of a box's moves change nothing.
            unchanged = np.array_equal(candidate, labels)
            candidate_energy = energy if unchanged else _energy(costs, edges, candidate, config.smoothness)
            if candidate_energy < energy - 1e-9:
                labels, energy, improved, last_change = candidate, candidate_energy, True, moves
            else:
                last_failed[alpha] = moves
        if not improved:
            break
    return np.where(labels == len(planes), GROUND, labels)


def _movable_faces(
    faces: list[shapely.Polygon], reaches: Sequence[shapely.Polygon | None], label_count: int
) -> list[np.ndarray | None]:
    """Per label, the faces it may take, as sorted indices, or None for all."""
    movable: list[np.ndarray | None] = [None] * label_count
    bounded = [k for k, reach in enumerate(reaches) if reach is not None]
    if bounded:
        region_index, face_index = shapely.STRtree(faces).query([reaches[k] for k in bounded], predicate="intersects")
        for position, label in enumerate(bounded):
            movable[label] = np.unique(face_index[region_index == position])
    return movable


def roof_faces(
    faces: list[shapely.Polygon], edges: FaceEdges, labels: np.ndarray, planes: list[Plane], config: Lod2Config
) -> list[RoofFace]:
    """Faces with the same plane merged; slivers under `min_face_area_m2` given to a neighbour."""
    labels = _absorb_slivers(faces, edges, labels, config.min_face_area_m2)
    face_array = np.asarray(faces, dtype=object)
    roof_labels = sorted(set(labels.tolist()) - {GROUND})
    # The faces of an arrangement tile the footprint edge to edge: a coverage, which
    # merges without the overlay a general union runs.
    merged = [shapely.coverage_union_all(face_array[labels == label]) for label in roof_labels]
    # On the millimetre grid (where the solid's vertices go anyway) GEOS drops repeated
    # and collinear vertices and keeps the faces valid.
    snapped = shapely.set_precision(shapely.simplify(merged, 0.0), 0.001)
    parts, owner = shapely.get_parts(snapped, return_index=True)
    kept = (shapely.get_type_id(parts) == shapely.GeometryType.POLYGON) & (shapely.area(parts) > 0)
    return [RoofFace(part, planes[roof_labels[k]]) for part, k in zip(parts[kept], owner[kept])]


@dataclass(frozen=True, eq=False)
class FaceEdges:
    """Pairs of faces sharing boundary (i < j), with the shared length."""

    i: np.ndarray
    j: np.ndarray
    length: np.ndarray
    on_outline: np.ndarray
    """Per face, whether part of its boundary is the footprint's outline."""


def face_adjacency(faces: list[shapely.Polygon]) -> FaceEdges:
    """Faces of an arrangement share whole segments (the linework was noded), so
    neighbours are found by matching segments, all at once."""
    rings, ring_owner = shapely.get_rings(faces, return_index=True)
    coords, ring_index = shapely.get_coordinates(rings, return_index=True)
    coords = np.rint(coords / SNAP_M).astype(np.int64)
    # A segment joins two consecutive vertices of one ring (each ring ends on its start).
    same_ring = ring_index[:-1] == ring_index[1:]
    a, b, owner = coords[:-1][same_ring], coords[1:][same_ring], ring_owner[ring_index[:-1][same_ring]]
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    low, high = np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)
    keys = np.column_stack([low, high])
    _, _, segment, counts = unique_rows(keys)
    length = np.hypot(*(high - low).T.astype(float)) * SNAP_M
    on_outline = np.zeros(len(faces), dtype=bool)
    on_outline[owner[counts[segment] == 1]] = True
    order = np.lexsort((owner, segment))
    shared = counts[segment[order]] == 2
    first = order[shared][0::2]
    second = order[shared][1::2]
    i, j = np.minimum(owner[first], owner[second]), np.maximum(owner[first], owner[second])
    distinct = i != j
    pairs = np.column_stack([i[distinct], j[distinct]])
    if len(pairs) == 0:
        return FaceEdges(np.empty(0, int), np.empty(0, int), np.empty(0), on_outline)
    unique_pairs, _, inverse, _ = unique_rows(pairs)
    summed = np.bincount(inverse, weights=length[first][distinct])
    return FaceEdges(unique_pairs[:, 0], unique_pairs[:, 1], summed, on_outline)


def _data_costs(
    faces, planes, samples: RoofSamples, on_outline: np.ndarray, ground_z, config: Lod2Config,
    movable: list[np.ndarray | None],
) -> np.ndarray:
    """Per face and label, the capped misfit volume; `_FORBIDDEN` where the label cannot
    go: the ground on the outline, a plane dipping to the ground on the face, and a label
    with a reach (`movable`: its faces) beyond it, where it is not measured at all."""
    n_labels = len(planes) + 1  # the last label is the ground
    costs = np.zeros((len(faces), n_labels))
    sample_index, face_index = points_within(samples.xy, faces)
    xy = samples.xy[sample_index]
    z = samples.z[sample_index]
    corners, owners = shapely.get_coordinates(shapely.get_exterior_ring(faces), return_index=True)

    def misfits(labels: list[int], chosen: slice | np.ndarray) -> np.ndarray:
        """Summed per face, sample after sample, over the `chosen` samples."""
        at = xy[chosen]
        surfaces = np.stack(
            [planes[k].height_at(at[:, 0], at[:, 1]) if k < len(planes) else np.full(len(at), ground_z) for k in labels],
            axis=1,
        )
        misfit = np.minimum(np.abs(surfaces - z[chosen, None]), config.misfit_cap_m) * samples.area
        return group_sums(misfit, face_index[chosen], len(faces))

    def dipping(plane: Plane, chosen: slice | np.ndarray) -> np.ndarray:
        """The faces among those of the `chosen` corners where the plane comes within
        `MIN_ROOF_CLEARANCE_M` of the ground."""
        face_of, xy_of = owners[chosen], corners[chosen]
        starts = np.flatnonzero(np.r_[True, face_of[1:] != face_of[:-1]])
        lowest = np.minimum.reduceat(plane.height_at(xy_of[:, 0], xy_of[:, 1]), starts)
        return face_of[starts][lowest < ground_z + MIN_ROOF_CLEARANCE_M]

    everywhere = [k for k in range(len(planes)) if movable[k] is None]
    costs[:, everywhere + [n_labels - 1]] = misfits(everywhere + [n_labels - 1], slice(None))
    for label in everywhere:
        costs[dipping(planes[label], slice(None)), label] = _FORBIDDEN
    for label, reached in enumerate(movable[: len(planes)]):
        if reached is None:
            continue
        costs[:, label] = _FORBIDDEN
        if len(reached) == 0:
            continue
        costs[reached, label] = misfits([label], np.isin(face_index, reached))[reached, 0]
        costs[dipping(planes[label], np.isin(owners, reached)), label] = _FORBIDDEN
    costs[on_outline, -1] = _FORBIDDEN
    return costs


def _energy(costs: np.ndarray, edges: FaceEdges, labels: np.ndarray, smoothness: float) -> float:
    data = float(costs[np.arange(len(labels)), labels].sum())
    cut = labels[edges.i] != labels[edges.j]
    return data + smoothness * float(edges.length[cut].sum())


def _expand(
    costs: np.ndarray, edges: FaceEdges, labels: np.ndarray, alpha: int, smoothness: float, movable: np.ndarray | None
) -> np.ndarray:
    """One alpha-expansion move: the best labelling where faces keep their label or take
    alpha; only the `movable` faces (sorted indices; None: all) may take it.

    Binary variable per movable face: 0 keeps its label (source side), 1 takes alpha (sink
    side). A Potts pair term E(x_i, x_j) with E00 = w[l_i != l_j], E01 = w[l_i != alpha],
    E10 = w[alpha != l_j], E11 = 0 is decomposed, after Kolmogorov and Zabih, into
    E00 + (E10 - E00) x_i - E10 x_j + (E01 + E10 - E00) (1 - x_i) x_j: unary terms and
    one edge of capacity E01 + E10 - E00 >= 0 (the Potts model is a metric).
    """
    w = smoothness * edges.length
    if movable is None:
        nodes = np.arange(len(labels))
        keep, switch = costs[nodes, labels].copy(), costs[:, alpha].copy()
        internal: slice | np.ndarray = slice(None)
        local_i, local_j = edges.i, edges.j
    elif len(movable) == 0:
        return labels.copy()
    else:
        nodes = movable
        keep, switch = costs[nodes, labels[nodes]].copy(), costs[nodes, alpha].copy()
        position = np.full(len(labels), -1)
        position[nodes] = np.arange(len(nodes))
        pi, pj = position[edges.i], position[edges.j]
        # A pair with one face fixed is a unary term of the other.
        for own, other, face, fixed in ((pi, pj, edges.i, edges.j), (pj, pi, edges.j, edges.i)):
            border = (own >= 0) & (other < 0)
            np.add.at(keep, own[border], w[border] * (labels[face[border]] != labels[fixed[border]]))
            np.add.at(switch, own[border], w[border] * (labels[fixed[border]] != alpha))
        internal = (pi >= 0) & (pj >= 0)
        local_i, local_j = pi[internal], pj[internal]
    pair_w = w[internal]
    li, lj = labels[edges.i[internal]], labels[edges.j[internal]]
    e00 = pair_w * (li != lj)
    e01 = pair_w * (li != alpha)
    e10 = pair_w * (lj != alpha)
    np.add.at(switch, local_i, e10 - e00)
    np.add.at(switch, local_j, -e10)
    graph = maxflow.GraphFloat()
    graph_nodes = graph.add_nodes(len(nodes))
    if len(pair_w):
        graph.add_edges(graph_nodes[local_i], graph_nodes[local_j], e01 + e10 - e00, np.zeros(len(pair_w)))
    low = np.minimum(keep, switch)
    # a node on the sink side (takes alpha) cuts its source edge: capacity = cost of switching
    graph.add_grid_tedges(graph_nodes, switch - low, keep - low)
    graph.maxflow()
    result = labels.copy()
    result[nodes[graph.get_grid_segments(graph_nodes)]] = alpha
    return result


def _absorb_slivers(faces, edges: FaceEdges, labels: np.ndarray, min_area: float) -> np.ndarray:
    """Regions of one label smaller than `min_area` take the label they share most edge with
    (ties: the lowest label), smallest region first (ties: the one holding the lowest face),
    until none is left."""
    same = labels[edges.i] == labels[edges.j]
    region = component_labels(len(faces), edges.i[same], edges.j[same])
    # Regions are merged on a graph of regions, not found again among all faces after
    # each merge: on large roofs with a hundred slivers that took a tenth of the building.
    area = dict(enumerate(np.bincount(region, weights=[f.area for f in faces]).tolist()))
    first_face = dict(enumerate(np.unique(region, return_index=True)[1].tolist()))
    label = {r: int(labels[first_face[r]]) for r in area}
    shared: dict[int, dict[int, float]] = {r: {} for r in area}
    ri, rj = region[edges.i], region[edges.j]
    for a, b, length in zip(ri[~same].tolist(), rj[~same].tolist(), edges.length[~same].tolist()):
        shared[a][b] = shared[a].get(b, 0.0) + length
        shared[b][a] = shared[b].get(a, 0.0) + length
    owner = np.arange(len(area))
    while len(area) > 1:
        small = [r for r in area if area[r] < min_area]
        if not small:
            break
        # Ties within rounding (mirrored faces, equal edges) go to the lowest face and label,
        # whatever order the sums were taken in.
        target = min(small, key=lambda r: (round(area[r], 9), first_face[r]))
        if not shared[target]:
            break
        by_label: dict[int, float] = {}
        for neighbour, length in shared[target].items():
            by_label[label[neighbour]] = by_label.get(label[neighbour], 0.0) + length
        best = max(by_label, key=lambda l: (round(by_label[l], 9), -l))
        joined = [n for n in shared[target] if label[n] == best]
        survivor = min([target, *joined], key=lambda r: first_face[r])
        for merged in [target, *joined]:
            if merged == survivor:
                continue
            area[survivor] += area.pop(merged)
            first_face.pop(merged)
            label.pop(merged)
            owner[owner == merged] = survivor
            for neighbour, length in shared.pop(merged).items():
                shared[neighbour].pop(merged)
                if neighbour != survivor:
                    shared[survivor][neighbour] = shared[survivor].get(neighbour, 0.0) + length
                    shared[neighbour][survivor] = shared[neighbour].get(survivor, 0.0) + length
        label[survivor] = best
    return np.array([label[owner[r]] for r in region.tolist()], dtype=labels.dtype)
