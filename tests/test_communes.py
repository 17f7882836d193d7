"""Commune boundaries: reading, and every building in exactly one commune."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import shapely

import twin
from twin.errors import InputError
from twin.inputs.communes import read_communes


def write_communes(path, polygon, field, code):
    pyogrio.raw.write(
        path,
        geometry=np.array([shapely.to_wkb(polygon)], dtype=object),
        field_data=[np.array([code], dtype=object)],
        fields=[field],
        driver="GPKG",
        crs="EPSG:2154",
        geometry_type="Polygon",
    )
    return path


def test_sample_buildings_get_their_commune(sample_dir):
    model = twin.build(
        points=[sample_dir / "lidar.laz"], footprints=sample_dir / "footprints.gpkg", communes=sample_dir / "communes.gpkg"
    )
    codes = {b.id: b.attributes["commune"] for b in model.buildings}
    assert set(codes.values()) == {"77083", "93051"}
    assert codes["B01"] == "77083" and codes["B34"] == "93051"
    assert [c.code for c in model.communes] == ["77083", "93051"]
    assert model.communes[0].name == "Champs-sur-Marne"
    west = model.communes[0].polygon
    for building in model.buildings:
        inside_west = west.contains(building.footprint.centroid)
        assert (codes[building.id] == "77083") == inside_west


def test_courtyard_and_outside_buildings(tmp_path):
    communes = read_communes(write_communes(tmp_path / "communes.gpkg", shapely.box(0, 0, 100, 100), "INSEE_COM", "12345"))
    assert communes.code_field == "INSEE_COM"
    u_shape = shapely.box(0, 0, 30, 30).difference(shapely.box(10, 0, 20, 25))  # centroid in the gap
    assert communes.assign([u_shape, shapely.box(200, 200, 210, 210)]) == ["12345", None]


def test_commune_file_without_code_field_is_refused(tmp_path):
    path = write_communes(tmp_path / "communes.gpkg", shapely.box(0, 0, 1, 1), "label", "x")
    with pytest.raises(InputError, match="no commune code field .* --commune-field"):
        read_communes(path)
    assert read_communes(path, code_field="label").communes[0].code == "x"
