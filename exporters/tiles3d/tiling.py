"""A quadtree over a commune's buildings, split until each cell fits the tile budget.

Each building is placed by one anchor point inside its footprint, so it lands in exactly
one cell; a cell holding more buildings than the budget, or more of any weight (vertices,
texture pixels), splits into its four quarters (empty quarters are dropped). Cells are addressed like map tiles: (level, x, y)
with x growing eastwards and y northwards from the south-west corner of the root square.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_LEVEL = 20


@dataclass(frozen=True)
class Cell:
    level: int
    x: int
    y: int
    members: tuple[int, ...]  # indices of the buildings in this cell and its descendants
    children: tuple["Cell", ...] = ()

    @property
    def name(self) -> str:
        return f"{self.level}_{self.x}_{self.y}"

    def leaves(self) -> list["Cell"]:
        return [self] if not self.children else [leaf for child in self.children for leaf in child.leaves()]


def quadtree(anchors: np.ndarray, weights: np.ndarray, max_count: int, max_weight: float | np.ndarray) -> Cell:
    """Cells over `anchors` (n, 2) such that a leaf holds at most `max_count` anchors whose
    `weights` ((n,) or one column per kind of weight, (n, k)) add up to at most `max_weight`
    (a number, or one per column) (unless it holds a single anchor, or anchors too close
    together to separate)."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    if len(anchors) == 0:
        return Cell(0, 0, 0, ())
    weights = np.asarray(weights, dtype=np.float64).reshape(len(anchors), -1)
    max_weight = np.asarray(max_weight, dtype=np.float64).reshape(-1)
    low = anchors.min(axis=0)
    size = max(float(np.max(anchors.max(axis=0) - low)), 1.0) * (1 + 1e-9)
    return _split(anchors, weights, np.arange(len(anchors)), low, size, 0, 0, 0, max_count, max_weight)


def _split(anchors, weights, members, low, size, level, x, y, max_count, max_weight) -> Cell:
    fits = len(members) <= max_count and bool(np.all(weights[members].sum(axis=0) <= max_weight))
    inseparable = np.all(anchors[members] == anchors[members[0]])
    if fits or inseparable or level >= MAX_LEVEL:
        return Cell(level, x, y, tuple(int(m) for m in members))
    half = size / 2
    east = anchors[members, 0] >= low[0] + half
    north = anchors[members, 1] >= low[1] + half
    children = []
    for j in (0, 1):
        for i in (0, 1):
            inside = members[(east == bool(i)) & (north == bool(j))]
            if len(inside):
                corner = low + np.array([i * half, j * half])
                children.append(
                    _split(anchors, weights, inside, corner, half, level + 1, 2 * x + i, 2 * y + j, max_count, max_weight)
                )
    return Cell(level, x, y, tuple(int(m) for m in members), tuple(children))
