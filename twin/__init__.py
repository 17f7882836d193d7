"""twin: 3D digital twins of cities from airborne point clouds and building footprints.

`twin.build(...)` runs the whole chain and returns the `CityModel` (see `twin.pipeline`).
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["build"]

MALLOC_ARENAS = 1
_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _limit_malloc_arenas() -> None:
    """Caps glibc's malloc arenas, as early as twin is imported. The native libraries'
    threads (LAZ decoding, Embree, OpenCV, OpenMP) each get an arena by default; over a
    unit's thousand buildings of varied sizes the freed memory in those arenas fragments,
    and peak memory grew by about 1 MB per building (benchmarks/regional_tile.py: 2.4 GB
    against 1.85 GB with one arena, at no cost in time). Capping later, once imports have
    started threads, leaves the arenas those threads already made. A no-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    except (OSError, AttributeError):
        pass


_limit_malloc_arenas()


def __getattr__(name: str) -> Any:
    # Imported on first use: `reconstruction` imports `twin.model`, so importing the
    # pipeline here eagerly would make the two packages import each other.
    if name == "build":
        from twin.pipeline import build

        return build
    raise AttributeError(f"module 'twin' has no attribute {name!r}")
