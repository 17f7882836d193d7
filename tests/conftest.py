"""Shared fixtures: the project's sample data, the shared real data and schemas, and one
build of the sample reused by the end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
SHARED = Path(os.environ.get("TWIN_SHARED", ROOT.parent / "shared"))


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.is_dir():
        pytest.skip(f"shared folder {path} is absent (set TWIN_SHARED to the folder holding data/ and validators/)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _shared("data")


@pytest.fixture(scope="session")
def validators_dir() -> Path:
    return _shared("validators")


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def sample_build(tmp_path_factory):
    """The sample district built once into CityJSON and CityJSONSeq: (model, output folder)."""
    import twin

    out = tmp_path_factory.mktemp("sample_build")
    model = twin.build(
        points=[SAMPLE / "lidar.laz"],
        footprints=SAMPLE / "footprints.gpkg",
        out_dir=out,
        formats=("cityjson", "cityjsonseq"),
    )
    return model, out


@pytest.fixture(scope="session")
def sample_build_communes(tmp_path_factory):
    """The sample district built with its communes into CityJSON, CityGML 3.0 and 2.0:
    (model, output folder), the input of `twin package`."""
    import twin

    out = tmp_path_factory.mktemp("sample_build_communes")
    model = twin.build(
        points=[SAMPLE / "lidar.laz"],
        footprints=SAMPLE / "footprints.gpkg",
        communes=SAMPLE / "communes.gpkg",
        out_dir=out,
        formats=("cityjson", "citygml3", "citygml2"),
    )
    return model, out


@pytest.fixture(scope="session")
def proj_data(shared_data) -> Path:
    """The shared geoid grids (fr_ign_RAF20.tif...), added to PROJ's search path as --proj-data does."""
    from twin.heights import add_proj_data_dirs

    folder = shared_data / "proj"
    add_proj_data_dirs([folder])
    return folder


@pytest.fixture(scope="session")
def tiles_build(tmp_path_factory, proj_data):
    """The sample district with its communes built once into 3D Tiles and the point-cloud layer, with
    a small tile budget so that the quadtree splits: (model, output folder)."""
    import twin
    from twin.config import BuildConfig, TilesConfig

    out = tmp_path_factory.mktemp("tiles_build")
    model = twin.build(
        points=[SAMPLE / "lidar.laz"],
        footprints=SAMPLE / "footprints.gpkg",
        communes=SAMPLE / "communes.gpkg",
        out_dir=out,
        formats=("3dtiles", "pointcloud-tiles"),
        config=BuildConfig(tiles=TilesConfig(max_features_per_tile=4)),
    )
    return model, out
