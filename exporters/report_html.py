"""A one-file HTML report of what a set of buildings is worth (`report.html`).

Maps of the footprints coloured by height and by quality, histograms of heights and of
the RMSE attributes (`rmse*`, from LoD2 reconstruction), counts by status, LoD and
roof type, the table of fallbacks and failures with their reasons, and the inputs with
their dates. The plots are embedded as PNGs (`exporters.report_plots`), so the file
stands alone (no script, no network) and is the same from run to run.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import shapely

from exporters import register
from exporters.atomic import atomic_output
from twin.model import Building, CityModel, Status

REPORT_FILE = "report.html"
QUALITY_COLOURS = {
    "built": "#2e7d32",
    "fallback": "#f9a825",
    "invalid solid": "#8e24aa",
    "no points": "#9e9e9e",
    "failed": "#c62828",
}
MAX_TABLE_ROWS = 500


@register("report", f"HTML report: maps, histograms, counts, fallbacks and inputs ({REPORT_FILE})")
def write_report(model: CityModel, out_dir: Path) -> list[Path]:
    path = out_dir / REPORT_FILE
    with atomic_output(path) as stream:
        stream.write(report_html(model))
    return [path]


def building_height(building: Building) -> float | None:
    """Height of the highest LoD's top above the ground (the `h_ground` attribute, else the
    solids' lowest point), from the geometry."""
    lods = building.available_lods()
    if not lods:
        return None
    vertices = np.concatenate([s.vertices() for s in building.solids(lods[-1])])
    ground = building.attributes.get("h_ground")
    base = ground if isinstance(ground, (int, float)) and math.isfinite(ground) else vertices[:, 2].min()
    return float(vertices[:, 2].max() - base)


def quality(building: Building) -> str:
    if building.status in (Status.BUILT, Status.FALLBACK) and _has_validity_errors(building):
        return "invalid solid"
    return str(building.status)


def report_html(model: CityModel) -> str:
    metadata = model.metadata
    commune = metadata.get("commune") or {}
    title = f"Buildings of {commune.get('name') or commune.get('code')}" if commune else "Buildings"
    if commune.get("code") and commune.get("name"):
        title += f" ({commune['code']})"
    # matplotlib takes a third of a second to import: only runs that write a report pay it.
    from exporters.report_plots import figure_html, height_map, histograms, quality_map

    heights = {b.id: building_height(b) for b in model.buildings}
    drawn = [b for b in model.buildings if not b.footprint.is_empty]
    qualities = [quality(b) for b in drawn]
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(model.buildings)} buildings; CRS {_e(metadata.get('crs') or '')}; "
        f"data of {_e(metadata.get('reference_date') or 'unknown date')}; "
        f"made by twin {_e((metadata.get('software') or {}).get('version', ''))}.</p>",
        "<h2>Maps</h2>",
        figure_html(height_map(drawn, heights), "Buildings coloured by height above ground"),
        figure_html(quality_map(drawn, [QUALITY_COLOURS[q] for q in qualities], _quality_legend(qualities)),
                    "Buildings coloured by quality"),
        "<h2>Distributions</h2>",
        figure_html(histograms([h for h in heights.values() if h is not None], _rmse_attributes(model.buildings)),
                    _histograms_caption(model.buildings)),
        "<h2>Counts</h2>",
        _counts_table("Status", Counter(str(b.status) for b in model.buildings), [str(s) for s in Status]),
        _counts_table("Quality", Counter(quality(b) for b in model.buildings), list(QUALITY_COLOURS)),
        _counts_table("Highest LoD", Counter((b.available_lods() or ("none",))[-1] for b in model.buildings)),
        _attribute_counts(model.buildings, ("roof_type",), "Roof type",
                          "No roof type in these buildings (it comes with LoD2 reconstruction)."),
        _attribute_counts(model.buildings, ("quality_flag", "quality"), "Quality flag",
                          "No quality flag in these buildings (it comes with LoD2 reconstruction)."),
        "<h2>Fallbacks and failures</h2>",
        _problems_table(model.buildings),
        "<h2>Inputs</h2>",
        _inputs(metadata),
    ]
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
td.n {{ text-align: right; }}
figure {{ margin: 1em 0; }}
img {{ max-width: 100%; height: auto; }}
pre {{ background: #f5f5f5; padding: 0.8em; overflow-x: auto; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _quality_legend(qualities: Iterable[str]) -> dict[str, str]:
    """The colours of these qualities, by quality, in the usual order."""
    present = set(qualities)
    return {name: colour for name, colour in QUALITY_COLOURS.items() if name in present}


def _histograms_caption(buildings: Iterable[Building]) -> str:
    names = list(_rmse_attributes(buildings))
    if not names:
        return "Heights above ground (no RMSE attribute in these buildings; it comes with LoD2 reconstruction)"
    return f"Heights above ground, and RMSE between the points and the model ({', '.join(names)})"


def _rmse_attributes(buildings: Iterable[Building]) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for building in buildings:
        for name, value in building.attributes.items():
            if name.lower().startswith("rmse") and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                found.setdefault(name, []).append(float(value))
    return dict(sorted(found.items()))


def _has_validity_errors(building: Building) -> bool:
    for name, value in building.attributes.items():
        if name.startswith("validity") and value not in (None, "", "[]") and value != [] and value != ():
            return True
    return False


def _counts_table(title: str, counts: Counter, order: list[str] | None = None) -> str:
    keys = [k for k in (order or []) if counts.get(k)] + sorted(k for k in counts if k not in (order or []))
    rows = "".join(f"<tr><td>{_e(k)}</td><td class='n'>{counts[k]}</td></tr>" for k in keys)
    return f"<h3>{_e(title)}</h3><table><tr><th>{_e(title.lower())}</th><th>buildings</th></tr>{rows}</table>"


def _attribute_counts(buildings: list[Building] | tuple[Building, ...], names: tuple[str, ...], title: str,
                      absent: str) -> str:
    """Counts of the first of `names` that the buildings carry (roof type, quality flag...)."""
    for name in names:
        counts = Counter(str(b.attributes[name]) for b in buildings if b.attributes.get(name) is not None)
        if counts:
            return _counts_table(title, counts)
    return f"<h3>{_e(title)}</h3><p>{_e(absent)}</p>"


def _problems_table(buildings: Iterable[Building]) -> str:
    problems = [b for b in buildings if b.status in (Status.FALLBACK, Status.FAILED, Status.NO_POINTS)]
    if not problems:
        return "<p>None: every building was built from its own points.</p>"
    rows = "".join(
        f"<tr><td>{_e(b.id)}</td><td>{_e(b.status)}</td><td>{_e(b.reason)}</td></tr>" for b in problems[:MAX_TABLE_ROWS]
    )
    more = f"<p>{len(problems) - MAX_TABLE_ROWS} more in the GeoPackage.</p>" if len(problems) > MAX_TABLE_ROWS else ""
    return f"<table><tr><th>building</th><th>status</th><th>reason</th></tr>{rows}</table>{more}"


def _inputs(metadata: Mapping[str, Any]) -> str:
    inputs = metadata.get("inputs") or {}
    rows = []
    for source in inputs.get("points") or []:
        dates = sorted(set(source.get("acquisition_dates") or []))
        rows.append(("points", Path(str(source.get("path", ""))).name,
                     f"{source.get('point_count', '?')} points, acquired {', '.join(dates) or 'date unknown'}"))
    footprints = inputs.get("footprints")
    if footprints:
        rows.append(("footprints", Path(str(footprints.get("path", ""))).name,
                     f"layer {footprints.get('layer')}, {footprints.get('feature_count', '?')} features"))
    communes = inputs.get("communes")
    if communes:
        rows.append(("communes", Path(str(communes.get("path", ""))).name, f"code field {communes.get('code_field')}"))
    table = "".join(f"<tr><td>{_e(a)}</td><td>{_e(b)}</td><td>{_e(c)}</td></tr>" for a, b, c in rows)
    parts = [f"<table><tr><th>input</th><th>file</th><th>content</th></tr>{table}</table>" if rows
             else "<p>The inputs are not recorded with these buildings.</p>"]
    notes = metadata.get("notes") or []
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if metadata.get("parameters"):
        parts.append("<h3>Parameters</h3><pre>" + _e(json.dumps(metadata["parameters"], indent=2, sort_keys=True))
                     + "</pre>")
    return "\n".join(parts)
