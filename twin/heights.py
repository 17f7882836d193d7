"""Ellipsoidal heights for 3D Tiles and other globe outputs, never silently approximate.

Globes (CesiumJS, 3D Tiles) place geometry with heights above the WGS84 ellipsoid, while
French data carries NGF-IGN69 altitudes: the difference, the geoid undulation, is about
44 m around Paris and comes from IGN's geoid grids (RAF20, RAF18), which PROJ reads as
`fr_ign_RAF20.tif` etc. When no grid is installed, PROJ quietly falls back to a
"ballpark" transformation that keeps the altitude as the ellipsoidal height, which puts
every building 44 m underground in a globe. `HeightTransform.for_crs` therefore picks the
best transformation that uses a grid and refuses, naming the missing grids and how to
install them, unless approximate heights are explicitly allowed.

Grid folders: PROJ's own search path (PROJ_DATA, the user data folder that `projsync`
fills), plus the folders listed in the TWIN_PROJ_DATA environment variable and those
given to `add_proj_data_dirs` (the CLI's `--proj-data`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyproj
from pyproj.transformer import Transformer, TransformerGroup

from twin.errors import InputError, TwinError

PROJ_DATA_ENV = "TWIN_PROJ_DATA"
GEOGRAPHIC_3D = "EPSG:4979"  # WGS 84 longitude, latitude, ellipsoidal height
GEOCENTRIC = "EPSG:4978"  # WGS 84 earth-centred, earth-fixed (ECEF) metres

_added_dirs: list[str] = []


def add_proj_data_dirs(dirs: Iterable[str | Path]) -> None:
    """Makes PROJ find grid files (geoid models) in `dirs` too, for the rest of the process."""
    for directory in dirs:
        path = Path(directory)
        if not path.is_dir():
            raise InputError(f"{path}: no such folder; --proj-data (or {PROJ_DATA_ENV}) must name a folder of PROJ grid files")
        text = str(path.resolve())
        if text not in _added_dirs:
            pyproj.datadir.append_data_dir(text)
            _added_dirs.append(text)


def proj_data_dirs() -> list[str]:
    """The grid folders added to PROJ's search path so far (for a child process's TWIN_PROJ_DATA)."""
    add_env_proj_data_dirs()
    return list(_added_dirs)


def add_env_proj_data_dirs() -> None:
    """Makes PROJ find grid files in the folders of the TWIN_PROJ_DATA environment variable too."""
    value = os.environ.get(PROJ_DATA_ENV, "")
    add_proj_data_dirs(part for part in value.split(os.pathsep) if part)


def transformer_grids(transformer: Transformer) -> list[str]:
    """The grid files (geoid models...) a transformation uses, by their short names."""
    return sorted({grid.short_name for op in (transformer.operations or ()) for grid in op.grids})


@dataclass(frozen=True, eq=False)
class HeightTransform:
    """Coordinates of a projected CRS with altitudes -> WGS84 geodetic and ECEF coordinates.

    `approximate` is True when no geoid grid was available and the caller allowed it:
    heights are then off by the geoid undulation. `grids` names the grid files used.
    """

    crs: pyproj.CRS
    transformer: Transformer
    grids: tuple[str, ...]
    approximate: bool
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def for_crs(cls, crs: pyproj.CRS, allow_approximate: bool = False) -> "HeightTransform":
        """The best transformation of `crs` to WGS84 ellipsoidal heights that this machine can run."""
        add_env_proj_data_dirs()
        with warnings.catch_warnings():  # pyproj warns about missing grids; the check below says more
            warnings.simplefilter("ignore", UserWarning)
            group = TransformerGroup(crs, GEOGRAPHIC_3D, always_xy=True)
        if not group.transformers:
            raise InputError(f"PROJ knows no transformation from {crs.name} to WGS84 ellipsoidal heights")
        if not needs_geoid(crs):
            return cls(crs, group.transformers[0], tuple(transformer_grids(group.transformers[0])), False)
        with_grid = [t for t in group.transformers if transformer_grids(t)]
        if with_grid:
            chosen = with_grid[0]
            notes = ()
            if not group.best_available:
                notes = (
                    f"heights use {', '.join(transformer_grids(chosen))}; PROJ prefers {', '.join(missing_grids(group))}, "
                    "which is not installed",
                )
            return cls(crs, chosen, tuple(transformer_grids(chosen)), False, notes)
        missing = missing_grids(group)
        if not allow_approximate:
            raise TwinError(
                f"heights: converting {crs.name} to the ellipsoidal heights of 3D Tiles needs the geoid grid "
                f"{' or '.join(missing) or '(unknown)'}, which PROJ cannot find; download it (e.g. `projsync --file "
                f"{missing[-1] if missing else 'fr_ign_RAF20.tif'}`) or put it in a folder and pass --proj-data FOLDER "
                f"(or set {PROJ_DATA_ENV}); --allow-approximate-heights writes tiles whose heights are off by the "
                "geoid undulation (about 44 m in Paris) instead"
            )
        note = (
            f"approximate heights: no geoid grid ({', '.join(missing)}) was found, so altitudes were used as "
            "ellipsoidal heights (off by the geoid undulation, about 44 m in Paris)"
        )
        return cls(crs, group.transformers[0], (), True, (note,))

    def geodetic(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 3) longitude and latitude in degrees and ellipsoidal height in metres."""
        return _transform(self.transformer, xyz)

    def ecef(self, xyz: np.ndarray) -> np.ndarray:
        """(n, 3) WGS84 earth-centred, earth-fixed coordinates in metres."""
        return geodetic_to_ecef(self.geodetic(xyz))


_TO_ECEF = Transformer.from_crs(GEOGRAPHIC_3D, GEOCENTRIC, always_xy=True)
_FROM_ECEF = Transformer.from_crs(GEOCENTRIC, GEOGRAPHIC_3D, always_xy=True)


def geodetic_to_ecef(lon_lat_h: np.ndarray) -> np.ndarray:
    """WGS84 longitude/latitude (degrees)/height to ECEF: a conversion, exact without any grid."""
    return _transform(_TO_ECEF, lon_lat_h)


def ecef_to_geodetic(xyz: np.ndarray) -> np.ndarray:
    return _transform(_FROM_ECEF, xyz)


def _transform(transformer: Transformer, xyz: np.ndarray) -> np.ndarray:
    values = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    count = len(values)
    if count == 1:  # pyproj takes 1-element arrays through its deprecated scalar path
        values = np.repeat(values, 2, axis=0)
    a, b, c = transformer.transform(values[:, 0], values[:, 1], values[:, 2], errcheck=True)
    return np.column_stack([a, b, c])[:count]


def needs_geoid(crs: pyproj.CRS) -> bool:
    """Whether heights in `crs` are altitudes (gravity-related) rather than ellipsoidal heights."""
    if crs.is_compound:
        return any(sub.is_vertical for sub in crs.sub_crs_list)
    return crs.is_vertical


def missing_grids(group: TransformerGroup) -> list[str]:
    """The grid files of the transformations of `group` that PROJ cannot run because it lacks them."""
    names = []
    for operation in group.unavailable_operations:
        for grid in operation.grids:
            if not grid.available and grid.short_name not in names:
                names.append(grid.short_name)
    return sorted(names)
