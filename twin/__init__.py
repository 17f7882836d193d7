"""twin: 3D digital twins of cities from airborne point clouds and building footprints.

`twin.build(...)` runs the whole chain and returns the `CityModel` (see `twin.pipeline`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `reconstruction` imports `twin.model`, so importing the
    # pipeline here eagerly would make the two packages import each other.
    if name == "build":
        from twin.pipeline import build

        return build
    raise AttributeError(f"module 'twin' has no attribute {name!r}")
