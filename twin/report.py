"""The run's own records beside the outputs: a summary of outcomes and the metadata.

`summary.json`: counts per status and every building's status and reason.
`metadata.json`: software, inputs, CRS, parameters and notes on anything assumed.
Both are deterministic (no clock times), so identical runs give identical files.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from exporters.atomic import atomic_output
from twin.model import CityModel, Status

SUMMARY_FILE = "summary.json"
METADATA_FILE = "metadata.json"


def status_counts(model: CityModel) -> dict[str, int]:
    counts = Counter(str(b.status) for b in model.buildings)
    return {str(status): counts.get(str(status), 0) for status in Status}


def summary(model: CityModel) -> dict[str, Any]:
    result = {
        "counts": {**status_counts(model), "total": len(model.buildings)},
        "buildings": [{"id": b.id, "status": str(b.status), "reason": b.reason} for b in model.buildings],
    }
    textures = model.metadata.get("textures")
    if textures:
        result["textures"] = {k: textures[k] for k in ("surfaces", "textured", "seen_by_no_image", "failed")}
    return result


def write_run_records(model: CityModel, out_dir: Path) -> list[Path]:
    written = []
    for name, content in ((SUMMARY_FILE, summary(model)), (METADATA_FILE, dict(model.metadata))):
        path = out_dir / name
        with atomic_output(path) as stream:
            json.dump(content, stream, indent=2, ensure_ascii=False, default=str)
            stream.write("\n")
        written.append(path)
    return written
