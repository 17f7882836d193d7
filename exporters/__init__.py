"""Output formats, one module each, registered by name in one registry.

An exporter writes a `CityModel` into an output folder and returns the files it wrote;
every file appears under its final name only once complete (see `exporters.atomic`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from twin.errors import TwinError
from twin.model import CityModel

_MODULES = ("exporters.cityjson", "exporters.citygml", "exporters.gpkg", "exporters.obj", "exporters.report_html")
_REGISTRY: dict[str, "Exporter"] = {}


@dataclass(frozen=True)
class Exporter:
    name: str
    description: str
    write: Callable[[CityModel, Path], list[Path]]


def register(name: str, description: str):
    def decorator(write: Callable[[CityModel, Path], list[Path]]):
        if name in _REGISTRY:
            raise RuntimeError(f"two exporters are registered as {name!r}")
        _REGISTRY[name] = Exporter(name, description, write)
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
