"""The command line: help, outcomes, one-line errors, no partial outputs, README commands."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import shapely

from tests.conftest import ROOT
from tests.test_inputs import write_footprints


def twin_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "twin", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_shows_examples():
    result = twin_cli("build", "--help")
    assert result.returncode == 0
    assert "Examples:" in result.stdout and "twin build --points" in result.stdout


def test_build_on_the_sample_prints_a_summary(tmp_path, sample_dir):
    result = twin_cli("build", "--points", sample_dir / "lidar.laz", "--footprints", sample_dir / "footprints.gpkg",
                      "--out", tmp_path, "--format", "cityjsonseq")
    assert result.returncode == 0, result.stderr
    assert re.search(r"built\s*│\s*34", result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buildings.city.jsonl", "metadata.json", "summary.json"]


def bad_inputs(shared, tmp_path):
    sample = ROOT / "sample_data"
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    far = write_footprints(tmp_path / "far.gpkg", [shapely.box(100000, 6000000, 100010, 6000010)], ["far"])
    return {
        "corrupt LAZ": (["--points", shared / "lidarhd/edge-cases/corrupt.laz", "--footprints", sample / "footprints.gpkg"], "not a readable LAS/LAZ file"),
        "no CRS": (["--points", shared / "lidarhd/edge-cases/no_crs.laz", "--footprints", sample / "footprints.gpkg"], "pass it with --crs"),
        "empty footprints": (["--points", sample / "lidar.laz", "--footprints", empty], "has no features"),
        "far footprints": (["--points", sample / "lidar.laz", "--footprints", far], "overlaps the point files"),
        "unreadable path": (["--points", tmp_path / "nowhere.laz", "--footprints", sample / "footprints.gpkg"], "no such file"),
        "bad parameter": (["--points", sample / "lidar.laz", "--footprints", sample / "footprints.gpkg", "--roof-percentile", "150"], "roof percentile"),
        "unknown format": (["--points", sample / "lidar.laz", "--footprints", sample / "footprints.gpkg", "--format", "shp"], "unknown output format"),
    }


@pytest.mark.parametrize("case", ["corrupt LAZ", "no CRS", "empty footprints", "far footprints", "unreadable path", "bad parameter", "unknown format"])
def test_bad_inputs_give_one_line_and_no_output(case, shared_data, tmp_path):
    args, message = bad_inputs(shared_data, tmp_path)[case]
    out = tmp_path / "out"
    result = twin_cli("build", *args, "--out", out)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_folder_is_a_clear_error(tmp_path, sample_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = twin_cli("build", "--points", sample_dir / "lidar.laz", "--footprints", sample_dir / "footprints.gpkg", "--out", blocker / "out")
    assert result.returncode == 2 and "cannot write the outputs there" in result.stderr


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci/run").read_text()
    test_command = "./setup.sh && .venv/bin/python -m pytest"
    assert test_command in readme and test_command in ci
    main_job = re.search(r"\./setup\.sh && \.venv/bin/twin build [^\n]+", readme)
    assert main_job and "sample_data/lidar.laz" in main_job.group(0)


