"""The HTML report's figures (`exporters.report_html`), drawn by matplotlib and embedded
as base64 PNGs. PNGs carry no timestamp, so a figure is the same from run to run."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Mapping, Sequence

import numpy as np
import shapely
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path as MplPath

from twin.model import Building


def figure_html(figure: Figure, caption: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    encoded = base64.b64encode(buffer.getvalue()).decode()
    caption = html.escape(caption)
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{caption}</figcaption></figure>")


def height_map(buildings: Sequence[Building], heights: Mapping[str, float | None]) -> Figure:
    """The footprints (none empty) coloured by height; those without one hatched."""
    figure, axes = _map_axes(buildings)
    with_height = [b for b in buildings if heights.get(b.id) is not None]
    without = [b for b in buildings if heights.get(b.id) is None]
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


def quality_map(buildings: Sequence[Building], colours: Sequence[str], legend: Mapping[str, str]) -> Figure:
    """The footprints (none empty) in their `colours`, with a legend of colours by label."""
    figure, axes = _map_axes(buildings)
    if buildings:
        axes.add_collection(PatchCollection([_patch(b.footprint) for b in buildings], facecolor=list(colours),
                                            edgecolor="#333333", linewidth=0.5))
    if legend:
        axes.legend(handles=[Patch(facecolor=colour, label=label) for label, colour in legend.items()],
                    loc="upper right")
    return figure


def histograms(heights: Sequence[float], rmse: Mapping[str, Sequence[float]]) -> Figure:
    """Heights above ground on the left; on the right the RMSE attributes, by name."""
    figure = Figure(figsize=(10, 4))
    left, right = figure.subplots(1, 2)
    if heights:
        left.hist(heights, bins=min(30, max(5, len(heights) // 3)), color="#1565c0")
    else:
        left.text(0.5, 0.5, "no building with a height", ha="center", transform=left.transAxes)
    left.set_xlabel("height above ground (m)")
    left.set_ylabel("buildings")
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


def _patch(polygon: shapely.Polygon) -> PathPatch:
    rings = [np.asarray(polygon.exterior.coords)[:, :2]] + [np.asarray(r.coords)[:, :2] for r in polygon.interiors]
    vertices = np.concatenate(rings)
    codes = np.concatenate([[MplPath.MOVETO] + [MplPath.LINETO] * (len(r) - 2) + [MplPath.CLOSEPOLY] for r in rings])
    return PathPatch(MplPath(vertices, codes))


def _map_axes(buildings: Sequence[Building]) -> tuple[Figure, Any]:
    figure = Figure(figsize=(9, 7))
    axes = figure.add_subplot()
    axes.set_aspect("equal")
    axes.set_xlabel("x (m)")
    axes.set_ylabel("y (m)")
    axes.ticklabel_format(useOffset=False, style="plain")
    if buildings:
        xmin, ymin, xmax, ymax = shapely.total_bounds([b.footprint for b in buildings])
        margin = max(xmax - xmin, ymax - ymin) * 0.03 + 1
        axes.set_xlim(xmin - margin, xmax + margin)
        axes.set_ylim(ymin - margin, ymax + margin)
    else:
        axes.text(0.5, 0.5, "no footprint to draw", ha="center", transform=axes.transAxes)
    return figure, axes
