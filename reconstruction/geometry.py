"""Measures of planar polygons and solids: vector areas, normals, volumes."""

from __future__ import annotations

import numpy as np

from twin.model import Solid, Surface


def ring_vector_area(ring: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Newell's vector area of a ring: its normal times its area, signed by orientation."""
    p = ring - origin
    q = np.roll(p, -1, axis=0)
    return 0.5 * np.cross(p, q).sum(axis=0)


def surface_vector_area(surface: Surface, origin: np.ndarray) -> np.ndarray:
    """Vector area of a polygon with holes (holes run the other way, so they subtract)."""
    return sum((ring_vector_area(ring, origin) for ring in surface.rings), np.zeros(3))


def surface_area(surface: Surface) -> float:
    origin = surface.rings[0][0]
    return float(np.linalg.norm(surface_vector_area(surface, origin)))


def surface_normal(surface: Surface) -> np.ndarray:
    area = surface_vector_area(surface, surface.rings[0][0])
    norm = np.linalg.norm(area)
    return area / norm if norm > 0 else area


def solid_origin(solid: Solid) -> np.ndarray:
    return solid.surfaces[0].rings[0][0]


def solid_volume(solid: Solid) -> float:
    """Signed volume by the divergence theorem: positive for a closed, outward-oriented shell."""
    origin = solid_origin(solid)
    volume = 0.0
    for surface in solid.surfaces:
        area = surface_vector_area(surface, origin)
        volume += float(np.dot(surface.rings[0][0] - origin, area))
    return volume / 3.0
