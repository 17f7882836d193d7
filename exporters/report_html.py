"""A one-file HTML report of what a set of buildings is worth (`report.html`).

Maps of the footprints coloured by height and by quality, histograms of heights and of
the RMSE attributes (`rmse*`, from LoD2 reconstruction), counts by status, LoD and
roof type, the table of fallbacks and failures with their reasons, and the inputs with
their dates. Plots are drawn by matplotlib and embedded as base64 PNGs, so the file
stands alone (no script, no network); PNGs carry no timestamp, so the file is the same
from run to run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import shapely
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath

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
    heights = {b.id: building_height(b) for b in model.buildings}
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{len(model.buildings)} buildings; CRS {_e(metadata.get('crs') or '')}; "
        f"data of {_e(metadata.get('reference_date') or 'unknown date')}; "
        f"made by twin {_e((metadata.get('software') or {}).get('version', ''))}.</p>",
        "<h2>Maps</h2>",
        _figure(_height_map(model.buildings, heights), "Buildings coloured by height above ground"),
        _figure(_quality_map(model.buildings), "Buildings coloured by quality"),
        "<h2>Distributions</h2>",
        _figure(_histograms(model.buildings, heights), _histograms_caption(model.buildings)),
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


def _figure(figure: Figure, caption: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _patch(polygon: shapely.Polygon) -> PathPatch:
    rings = [np.asarray(polygon.exterior.coords)[:, :2]] + [np.asarray(r.coords)[:, :2] for r in polygon.interiors]
    vertices = np.concatenate(rings)
    codes = np.concatenate([[MplPath.MOVETO] + [MplPath.LINETO] * (len(r) - 2) + [MplPath.CLOSEPOLY] for r in rings])
    return PathPatch(MplPath(vertices, codes))


def _map_axes(buildings: Iterable[Building]) -> tuple[Figure, Any, list[Building]]:
    figure = Figure(figsize=(9, 7))
    axes = figure.add_subplot()
    axes.set_aspect("equal")
    axes.set_xlabel("x (m)")
    axes.set_ylabel("y (m)")
    axes.ticklabel_format(useOffset=False, style="plain")
    drawn = [b for b in buildings if not b.footprint.is_empty]
    if drawn:
        xmin, ymin, xmax, ymax = shapely.total_bounds([b.footprint for b in drawn])
        margin = max(xmax - xmin, ymax - ymin) * 0.03 + 1
        axes.set_xlim(xmin - margin, xmax + margin)
        axes.set_ylim(ymin - margin, ymax + margin)
    else:
        axes.text(0.5, 0.5, "no footprint to draw", ha="center", transform=axes.transAxes)
    return figure, axes, drawn


def _height_map(buildings: Iterable[Building], heights: Mapping[str, float | None]) -> Figure:
    figure, axes, drawn = _map_axes(buildings)
    with_height = [b for b in drawn if heights.get(b.id) is not None]
    without = [b for b in drawn if heights.get(b.id) is None]
    if without:
        axes.add_collection(PatchCollection([_patch(b.footprint) for b in without], facecolor="#dddddd",
                                            edgecolor="#777777", hatch="//", linewidth=0.5))
    if with_height:
        values = np.array([heights[b.id] for b in with_height])
        collection = PatchCollection([_patch(b.footprint) for b in with_height], cmap="viridis",
                                     norm=Normalize(values.min(), max(values.max(), values.min() + 1)),
                                     edgecolor="#333333", linewidth=0.5)
        collection.set_array(values)
        axes.add_collection(collection)
        figure.colorbar(collection, ax=axes, label="height above ground (m)")
    if without:
        axes.legend(handles=[Patch(facecolor="#dddddd", hatch="//", label="no height")], loc="upper right")
    return figure


def _quality_map(buildings: Iterable[Building]) -> Figure:
    figure, axes, drawn = _map_axes(buildings)
    categories = [quality(b) for b in drawn]
    if drawn:
        axes.add_collection(PatchCollection([_patch(b.footprint) for b in drawn],
                                            facecolor=[QUALITY_COLOURS[c] for c in categories],
                                            edgecolor="#333333", linewidth=0.5))
    present = [c for c in QUALITY_COLOURS if c in categories]
    if present:
        axes.legend(handles=[Patch(facecolor=QUALITY_COLOURS[c], label=c) for c in present], loc="upper right")
    return figure


def _histograms(buildings: list[Building] | tuple[Building, ...], heights: Mapping[str, float | None]) -> Figure:
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    values = [h for h in heights.values() if h is not None]
    if values:
        left.hist(values, bins=min(30, max(5, len(values) // 3)), color="#1565c0")
    else:
        left.text(0.5, 0.5, "no building with a height", ha="center", transform=left.transAxes)
    left.set_xlabel("height above ground (m)")
    left.set_ylabel("buildings")
    rmse = _rmse_attributes(buildings)
    if rmse:
        for name, numbers in rmse.items():
            right.hist(numbers, bins=min(30, max(5, len(numbers) // 3)), alpha=0.6, label=name)
        right.legend()
        right.set_xlabel("RMSE between the points and the model (m)")
        right.set_ylabel("buildings")
    else:
        right.text(0.5, 0.5, "no RMSE attribute in these buildings\n(computed with LoD2 reconstruction)",
                   ha="center", va="center", transform=right.transAxes)
        right.set_axis_off()
    figure.tight_layout()
    return figure


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
