"""Output formats, one module each, registered by name in one registry.

An exporter writes a `CityModel` into an output folder and returns the files it wrote;
every file appears under its final name only once complete (see `exporters.atomic`).
Exporters with settings (`uses_config`) also receive the run's `BuildConfig`; those that
depend on the machine or the CRS (grids, for instance) give a `check` that the run calls
as soon as the CRS is known, so that they fail before the long part of a run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyproj

from twin.config import BuildConfig
from twin.errors import TwinError
from twin.model import CityModel

_MODULES = (
    "exporters.cityjson",
    "exporters.citygml",
    "exporters.gpkg",
    "exporters.obj",
    "exporters.report_html",
    "exporters.tiles3d",
    "exporters.pointcloud_tiles",
)
_REGISTRY: dict[str, "Exporter"] = {}


@dataclass(frozen=True)
class Exporter:
    name: str
    description: str
    write: Callable[..., list[Path]]
    uses_config: bool = False
    check: Callable[[pyproj.CRS, BuildConfig], list[str]] | None = None
    """Raises a TwinError when this exporter cannot write data in that CRS here; returns notes."""
    drops_textures: bool = False
    """Writes the buildings' surfaces but not their textures (the run says so when it has some)."""

    def export(self, model: CityModel, out_dir: Path, config: BuildConfig) -> list[Path]:
        return self.write(model, out_dir, config) if self.uses_config else self.write(model, out_dir)


def register(
    name: str,
    description: str,
    uses_config: bool = False,
    check: Callable[[pyproj.CRS, BuildConfig], list[str]] | None = None,
    drops_textures: bool = False,
):
    def decorator(write: Callable[..., list[Path]]):
        if name in _REGISTRY:
            raise RuntimeError(f"two exporters are registered as {name!r}")
        _REGISTRY[name] = Exporter(name, description, write, uses_config, check, drops_textures)
        return write

    return decorator


def available() -> dict[str, Exporter]:
    for module in _MODULES:
        importlib.import_module(module)
    return dict(sorted(_REGISTRY.items()))


def get(name: str) -> Exporter:
    exporters = available()
    if name not in exporters:
        raise TwinError(f"unknown output format {name!r}; choose from {', '.join(exporters)}")
    return exporters[name]
