"""The work folder of a run: its manifest, one result file per finished unit, its report.

- `manifest.json`: what the run is (inputs, parameters, output options) and its units,
  each with the fingerprint of its inputs. Written when the run is planned.
- `units/<unit id>.unit`: a finished unit's buildings and roof signatures, written by the
  driver once the unit is done, under its final name only once complete (so a run
  killed at any point leaves either the whole file or none). Its first line is a JSON
  header (its format, unit, fingerprint, complete, and the inputs of the terrain
  fallback) read without loading the rest.
- `report.json`: the last run's timings, memory and counts per unit.

A re-run skips every unit whose result file holds its current fingerprint and is
complete; a unit that met an unreadable file is kept for the outputs but run again.
"""

from __future__ import annotations

import copyreg
import io
import json
import shutil
import pickle
from pathlib import Path
from types import MappingProxyType
from typing import Any

from exporters.atomic import atomic_output, is_temporary

MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
UNITS_FOLDER = "units"
MANIFEST_FORMAT = 1
UNIT_FORMAT = 2
"""Of the units' result files: a result of another format is not read, its unit runs again."""


def dumps(value: Any) -> bytes:
    """Pickles twin's model objects, whose read-only mappings plain pickle refuses."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_mapping}
    pickler.dump(value)
    return buffer.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def _reduce_mapping(mapping: MappingProxyType) -> tuple:
    return read_only_mapping, (dict(mapping),)


def read_only_mapping(values: dict) -> MappingProxyType:
    """Rebuilds a pickled read-only mapping (the type itself cannot be pickled by name)."""
    return MappingProxyType(values)


class WorkDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        (self.path / UNITS_FOLDER).mkdir(parents=True, exist_ok=True)
        remove_leftover_temporaries(self.path)
        remove_leftover_temporaries(self.path / UNITS_FOLDER)

    def read_manifest(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / MANIFEST_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        _write_json(self.path / MANIFEST_FILE, {"format": MANIFEST_FORMAT, **manifest})

    def write_report(self, report: dict[str, Any]) -> Path:
        path = self.path / REPORT_FILE
        _write_json(path, report)
        return path

    def result_path(self, unit_id: str) -> Path:
        return self.path / UNITS_FOLDER / f"{unit_id}.unit"

    def header(self, unit_id: str) -> dict[str, Any] | None:
        """The header of a unit's stored result, or None when there is none (or one of
        another format)."""
        try:
            with open(self.result_path(unit_id), "rb") as stream:
                header = json.loads(stream.readline())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return header if isinstance(header, dict) and header.get("format") == UNIT_FORMAT else None

    def store(self, unit_id: str, fingerprint: str, complete: bool, payload: bytes, extra: dict[str, Any]) -> None:
        """Stores a unit's result; `extra` goes into its header."""
        header = {"format": UNIT_FORMAT, "unit": unit_id, "fingerprint": fingerprint, "complete": complete, **extra}
        header = json.dumps(header).encode()
        with atomic_output(self.result_path(unit_id), "wb") as stream:
            stream.write(header + b"\n")
            stream.write(payload)

    def load(self, unit_id: str) -> Any:
        with open(self.result_path(unit_id), "rb") as stream:
            stream.readline()
            return loads(stream.read())


def _write_json(path: Path, content: dict[str, Any]) -> None:
    with atomic_output(path) as stream:
        json.dump(content, stream, indent=1, ensure_ascii=False, default=str)
        stream.write("\n")


def remove_leftover_temporaries(folder: Path) -> None:
    """Temporary files of writes a killed run never finished (see exporters.atomic)."""
    for leftover in folder.iterdir() if folder.is_dir() else ():
        if is_temporary(leftover):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
