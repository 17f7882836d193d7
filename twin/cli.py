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
    """twin builds 3D city models (LOD1.2, LOD1.3) from classified LiDAR and building footprints."""


@main.command(
    epilog="""\b
Examples:
  twin build --points sample_data/lidar.laz --footprints sample_data/footprints.gpkg --out out/
  twin build --points tile1.laz tile2.laz --footprints batiments.gpkg --id-field cleabs --out out/
  twin build --points tile.copc.laz --footprints bati.shp --format cityjsonseq --out out/
  twin build --points old.laz --crs EPSG:2154 --footprints bati.gpkg --out out/   (header without CRS)
  twin build --points tile.laz --footprints bati.gpkg --communes communes.gpkg --format 3dtiles --out out/
  twin build ... --format 3dtiles --format pointcloud-tiles --proj-data grids/ --tile-compression meshopt --out out/
"""
)
@click.option("--points", "points", multiple=True, required=True, type=click.Path(path_type=Path),
              help="LAS/LAZ/COPC files; repeat the option or list several files after it.")
@click.option("--footprints", required=True, type=click.Path(path_type=Path),
              help="Building footprints in any OGR format (GPKG, GeoJSON, Shapefile...).")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--format", "formats", multiple=True, default=("cityjson",), show_default=True,
              help="Output format; repeat for several (cityjson, cityjsonseq, 3dtiles, pointcloud-tiles).")
@click.option("--id-field", help="Footprint field holding unique building ids (default: cleabs, id... or the feature id).")
@click.option("--layer", help="Layer of the footprint file, when it has several.")
@click.option("--communes", type=click.Path(path_type=Path),
              help="Commune polygons (any OGR format); each building gets the code of its commune.")
@click.option("--commune-field", help="Field of the commune file holding the INSEE code (default: code_insee, insee_com...).")
@click.option("--outside-communes", type=click.Choice(["unassigned", "refuse"]), default="unassigned", show_default=True,
              help="Buildings outside every commune: keep them (3D Tiles: tiles/unassigned/) or stop the run.")
@click.option("--proj-data", "proj_data", multiple=True, type=click.Path(path_type=Path),
              help="Folder of PROJ grid files, e.g. the geoid grid fr_ign_RAF20.tif (also: $TWIN_PROJ_DATA).")
@click.option("--allow-approximate-heights", is_flag=True,
              help="3D Tiles without the geoid grid: altitudes used as ellipsoidal heights (tens of metres off; recorded).")
@click.option("--tile-compression", type=click.Choice(["none", "quantize", "meshopt"]), default="none", show_default=True,
              help="3D Tiles geometry: quantize (KHR_mesh_quantization) or meshopt (quantized + EXT_meshopt_compression).")
@click.option("--tile-max-buildings", type=int, default=400, show_default=True,
              help="3D Tiles: a quadtree cell with more buildings than this splits into four.")
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
def build(points, footprints, out_dir, formats, id_field, layer, communes, commune_field, outside_communes, proj_data,
          allow_approximate_heights, tile_compression, tile_max_buildings, crs, vertical_crs,
          building_classes, ground_classes, roof_percentile, step_height, more_points) -> None:
    """Build LOD1.2 and LOD1.3 buildings from point clouds and footprints.

    Writes the buildings (buildings.city.json, or buildings.city.jsonl with
    --format cityjsonseq), summary.json (every building's status and reason) and
    metadata.json (inputs, CRS, parameters) into the output folder.
    """
    from twin.config import BuildConfig, ClassMapping, Lod1Config, TilesConfig
    from twin.heights import add_proj_data_dirs
    from twin.pipeline import build as run_build
    from twin.report import status_counts

    def configure() -> BuildConfig:
        defaults = ClassMapping()
        classes = ClassMapping(
            building=tuple(building_classes) or defaults.building, ground=tuple(ground_classes) or defaults.ground
        )
        tiles = TilesConfig(
            max_features_per_tile=tile_max_buildings, compression=tile_compression,
            allow_approximate_heights=allow_approximate_heights,
        )
        return BuildConfig(
            classes=classes, lod1=Lod1Config(roof_percentile=roof_percentile, step_height_m=step_height), tiles=tiles
        )

    def run():
        config = configure()
        add_proj_data_dirs(proj_data)
        progress = _RichProgress()
        try:
            return run_build(
                points=[*points, *more_points], footprints=footprints, out_dir=out_dir, formats=formats,
                config=config, crs=crs, vertical_crs=vertical_crs, id_field=id_field, layer=layer,
                communes=communes, commune_field=commune_field, outside_communes=outside_communes, progress=progress,
            )
        finally:
            progress.close()

    model = _checked(run)
    for note in model.metadata.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    _print_summary(model, status_counts(model))
    console.print(f"outputs in {out_dir}/", highlight=False)


@main.command(epilog="\b\nExample:\n  twin sample --out sample_data/")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("sample_data"), show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (default: the one of the committed sample).")
def sample(out_dir: Path, seed: int | None) -> None:
    """Generate the synthetic sample district, its simulated LiDAR scan and its ground truth."""
    from twin.sample.generate import DEFAULT_SEED, generate_sample

    written = _checked(lambda: generate_sample(out_dir, DEFAULT_SEED if seed is None else seed))
    for path in written:
        console.print(f"wrote {path}", highlight=False)


@main.command(epilog="\b\nExamples:\n  twin serve out/\n  twin serve out/ --port 8080 --no-open")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; the default serves this machine only.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--open/--no-open", "open_browser", default=True, show_default=True, help="Open the viewer in a web browser.")
def serve(out_dir: Path, host: str, port: int, open_browser: bool) -> None:
    """Show the 3D Tiles of an output folder in a local CesiumJS viewer (works offline).

    Serves only OUT_DIR's files, the viewer page and CesiumJS (installed by setup.sh).
    Click a building to see its id and attributes. Stop with Ctrl+C.
    """
    from twin.serve import ViewerServer

    server = _checked(lambda: ViewerServer(out_dir, host, port))
    console.print(f"viewer of {out_dir}/ at {server.url} (Ctrl+C to stop)", highlight=False)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.server_close()


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
