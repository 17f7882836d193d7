"""The `twin` command line: a thin layer over `twin.pipeline` and `twin.sample`.

Errors about inputs end the command with one line on stderr and exit code 2; a run
whose buildings partly fail still succeeds (exit 0) and reports them in its summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from twin.errors import TwinError

console = Console(stderr=True)


class _RichProgress:
    """Progress bars on stderr, shown from the first stage on (so early errors stay one line)."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=console,
        )
        self._task = None

    def stage(self, name: str, total: int) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.update(self._task, completed=self._progress.tasks[self._task].total)
        self._task = self._progress.add_task(name, total=max(total, 1))

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def close(self) -> None:
        self._progress.stop()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="twin")
def main() -> None:
    """twin builds 3D city models (LOD1.2, LOD1.3, LOD2.2) from classified LiDAR and building footprints."""


@main.command(
    epilog="""\b
Examples:
  twin build --points sample_data/lidar.laz --footprints sample_data/footprints.gpkg --out out/
  twin build --points tile1.laz tile2.laz --footprints batiments.gpkg --id-field cleabs --out out/
  twin build --points tile.copc.laz --footprints bati.shp --format cityjsonseq --out out/
  twin build --points old.laz --crs EPSG:2154 --footprints bati.gpkg --out out/   (header without CRS)
  twin build --points campus.laz --out out/   (no footprints: outlines from the building points)
"""
)
@click.option("--points", "points", multiple=True, required=True, type=click.Path(path_type=Path),
              help="LAS/LAZ/COPC files; repeat the option or list several files after it.")
@click.option("--footprints", type=click.Path(path_type=Path),
              help="Building footprints in any OGR format (GPKG, GeoJSON, Shapefile...); "
                   "without it, outlines are derived from the building points.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--format", "formats", multiple=True, default=("cityjson",), show_default=True,
              help="Output format; repeat for several (cityjson, cityjsonseq, citygml3, citygml2, gpkg, obj, report).")
@click.option("--id-field", help="Footprint field holding unique building ids (default: cleabs, id... or the feature id).")
@click.option("--layer", help="Layer of the footprint file, when it has several.")
@click.option("--communes", type=click.Path(path_type=Path),
              help="Commune polygons (any OGR format); each building gets the code of its commune.")
@click.option("--commune-field", help="Field of the commune file holding the INSEE code (default: code_insee, insee_com...).")
@click.option("--crs", help="CRS of the points when their header has none, e.g. EPSG:2154.")
@click.option("--vertical-crs", help="Vertical CRS of the point heights when the CRS has none, e.g. EPSG:5720.")
@click.option("--building-class", "building_classes", multiple=True, type=int,
              help="LAS class of building points; repeat for several [default: 6 and 67].")
@click.option("--ground-class", "ground_classes", multiple=True, type=int,
              help="LAS class of ground points; repeat for several [default: 2].")
@click.option("--roof-percentile", type=float, default=70.0, show_default=True,
              help="Percentile of the roof heights used for LOD1 blocks.")
@click.option("--step-height", type=float, default=3.0, show_default=True,
              help="LOD1.3 splits a building where its roof steps by at least this many metres.")
@click.argument("more_points", nargs=-1, type=click.Path(path_type=Path))
def build(points, footprints, out_dir, formats, id_field, layer, communes, commune_field, crs, vertical_crs,
          building_classes, ground_classes, roof_percentile, step_height, more_points) -> None:
    """Build LOD1.2, LOD1.3 and LOD2.2 buildings from point clouds and footprints.

    Writes the buildings (buildings.city.json, or buildings.city.jsonl with
    --format cityjsonseq), summary.json (every building's status and reason) and
    metadata.json (inputs, CRS, parameters) into the output folder.
    """
    from twin.config import BuildConfig, ClassMapping, Lod1Config
    from twin.pipeline import build as run_build
    from twin.report import status_counts

    def configure() -> BuildConfig:
        defaults = ClassMapping()
        classes = ClassMapping(
            building=tuple(building_classes) or defaults.building, ground=tuple(ground_classes) or defaults.ground
        )
        return BuildConfig(classes=classes, lod1=Lod1Config(roof_percentile=roof_percentile, step_height_m=step_height))

    def run():
        config = configure()
        progress = _RichProgress()
        try:
            return run_build(
                points=[*points, *more_points], footprints=footprints, out_dir=out_dir, formats=formats,
                config=config, crs=crs, vertical_crs=vertical_crs, id_field=id_field, layer=layer,
                communes=communes, commune_field=commune_field, progress=progress,
            )
        finally:
            progress.close()

    model = _checked(run)
    for note in model.metadata.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    _print_summary(model, status_counts(model))
    console.print(f"outputs in {out_dir}/", highlight=False)


@main.command(
    name="package",
    epilog="""\b
Examples:
  twin package out/ --commune 77083 --dest packages/
  twin package out/ --dest packages/                  (every commune of the build)
  twin package out/ --commune 77083 --commune 93051 --dest packages/ --overwrite
""",
)
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--commune", "communes", multiple=True, help="INSEE code of a commune; repeat for several [default: all].")
@click.option("--dest", required=True, type=click.Path(path_type=Path), help="Folder receiving the packages.")
@click.option("--overwrite", is_flag=True, help="Replace packages that already exist.")
def package_command(build_dir: Path, communes: tuple[str, ...], dest: Path, overwrite: bool) -> None:
    """Package the buildings of a `twin build --communes ...` output, one folder and zip per commune.

    Each package holds buildings.gpkg (QGIS), CityGML 3.0 and 2.0, CityJSON, an OBJ
    mesh, report.html, README.txt and metadata.json.
    """
    from twin.package import make_packages

    written = _checked(lambda: make_packages(build_dir, dest, communes, overwrite))
    for path in written:
        console.print(f"wrote {path}", highlight=False)


@main.command(epilog="\b\nExample:\n  twin sample --out sample_data/")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("sample_data"), show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (default: the one of the committed sample).")
def sample(out_dir: Path, seed: int | None) -> None:
    """Generate the synthetic sample district, its simulated LiDAR scan and its ground truth."""
    from twin.sample.generate import DEFAULT_SEED, generate_sample

    written = _checked(lambda: generate_sample(out_dir, DEFAULT_SEED if seed is None else seed))
    for path in written:
        console.print(f"wrote {path}", highlight=False)


def _print_summary(model, counts: dict[str, int]) -> None:
    table = Table(title=f"{len(model.buildings)} buildings", show_lines=False)
    table.add_column("status")
    table.add_column("buildings", justify="right")
    for status, count in counts.items():
        table.add_row(status, str(count))
    console.print(table)
    problems = [b for b in model.buildings if b.status in ("fallback", "failed")]
    if problems:
        detail = Table(title="fallbacks and failures", show_lines=False)
        detail.add_column("building")
        detail.add_column("status")
        detail.add_column("reason", overflow="fold")
        for b in problems[:50]:
            detail.add_row(b.id, str(b.status), b.reason)
        if len(problems) > 50:
            detail.add_row("...", "", f"{len(problems) - 50} more in summary.json")
        console.print(detail)


def _checked(action):
    """Runs `action`, turning expected errors into one clear line and exit code 2."""
    try:
        return action()
    except TwinError as error:
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValueError as error:
        console.print(f"[red]error:[/] invalid parameter: {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]; no output was left half-written")
        sys.exit(130)
    except Exception as error:  # a bug: say so in one line, without a traceback
        console.print(
            f"[red]internal error:[/] {type(error).__name__}: {error}. This is a bug in twin; "
            "please report it with the command you ran.",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(3)
