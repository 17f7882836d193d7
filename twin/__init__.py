"""twin: 3D digital twins of cities from airborne point clouds and building footprints.

`twin.build(...)` runs the whole chain and returns the `CityModel` (see `twin.pipeline`).
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["build"]

MALLOC_ARENAS = 1
MMAP_THRESHOLD_BYTES = 256 * 1024
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt parameter numbers


def _tune_malloc() -> None:
    """Keeps glibc's heap from growing over a unit's thousand buildings, as early as twin
    is imported (a no-op off glibc).

    - One malloc arena: the native libraries' threads (LAZ decoding, Embree, OpenCV,
      OpenMP) each get one by default, and freed memory fragments across them.
    - A fixed mmap threshold: glibc raises it each time a large block is freed, after which
      the arrays of each building (a few hundred kB to a few MB) come from the heap,
      whose holes are never returned. Fixed, they are mapped and unmapped whole.

    On the 1 km² benchmark tile (benchmarks/regional_tile.py) memory grew by about 1.3 MB
    per building to 2.5 GB; with both, it stays at 1.2 GB after the points are read.
    Capping only once imports have started threads would leave the arenas they made."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
        libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


_tune_malloc()


def __getattr__(name: str) -> Any:
    # Imported on first use: `reconstruction` imports `twin.model`, so importing the
    # pipeline here eagerly would make the two packages import each other.
    if name == "build":
        from twin.pipeline import build

        return build
    raise AttributeError(f"module 'twin' has no attribute {name!r}")
