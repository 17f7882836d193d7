"""The `twin` command line: a thin layer over `twin.pipeline` and `twin.sample`.

Errors about inputs end the command with one line on stderr and exit code 2; a run
whose buildings partly fail still succeeds (exit 0) and reports them in its summary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from twin.errors import TwinError

console = Console(stderr=True)


class _RichProgress:
    """Progress bars on stderr, shown from the first stage on (so early errors stay one
    line): buildings and units done, with rates and the time left, and one line per unit."""

    def __init__(self, verbose: bool = False) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
            TimeRemainingColumn(), console=console,
        )
        self._task = None
        self._units = None
        self._verbose = verbose
        self.failed_units: dict[str, str] = {}

    def stage(self, name: str, total: int) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.update(self._task, completed=self._progress.tasks[self._task].total)
        self._task = self._progress.add_task(name, total=max(total, 1))

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def units_planned(self, total: int, to_run: int) -> None:
        if self._task is None:
            self._progress.start()
        if to_run < total:
            console.print(f"{total - to_run} of {total} units were finished by an earlier run: skipped", highlight=False)
        self._units = self._progress.add_task("units", total=max(total, 1))

    def unit_done(self, report) -> None:
        if self._units is not None:
            self._progress.advance(self._units, 1)
        status = report["status"]
        if status == "failed":
            self.failed_units[report["unit"]] = report.get("error") or "; ".join(report.get("failed_files", {}).values())
            console.print(
                f"[red]unit {report['unit']} failed:[/] {self.failed_units[report['unit']]}", highlight=False, soft_wrap=True
            )
        elif status == "done" and self._verbose:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(report["counts"].items()))
            console.print(
                f"unit {report['unit']}: {counts} in {report['seconds']:.1f} s, {report['points_decoded']:,} points "
                f"decoded, peak {report['peak_rss_mb']:.0f} MB",
                highlight=False,
            )

    def close(self) -> None:
        self._progress.stop()


class _RateColumn(ProgressColumn):
    """Items per second of a task."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.1f}/s" if task.speed else "", style="progress.data.speed")


def _execution_options(command):
    """The options every command that runs units takes."""
    options = [
        click.option("--workers", type=int, default=1, show_default=True,
                     help="Local worker processes; 1 runs the units in this process. Workers beyond the "
                          "number of units reconstruct those units' buildings side by side."),
        click.option("--scheduler", metavar="ADDRESS",
                     help="Run the units on a Dask distributed cluster (e.g. tcp://host:8786) instead of local workers."),
        click.option("-v", "--verbose", is_flag=True, help="One line per finished unit; log every failed building."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _setup_logging(verbose: bool) -> None:
    """With --verbose, the run's log (each failed building, named with its unit); without,
    failed units are shown by the progress display only."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("twin")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(RichHandler(console=console, show_time=False, show_path=False) if verbose else logging.NullHandler())


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
  twin build --points lidarhd/*.laz --footprints bati.gpkg --out out/ --work-dir work/ --workers 8   (resumable)
  twin build --points lidarhd/*.laz --footprints bati.gpkg --out out/ --scheduler tcp://host:8786   (Dask)
  twin build --points tile.laz --footprints bati.gpkg --communes communes.gpkg --format 3dtiles --out out/
  twin build ... --format 3dtiles --format pointcloud-tiles --proj-data grids/ --tile-compression meshopt --out out/
  twin build --points tile.laz --footprints bati.gpkg --images cameras.json --out out/   (textured roofs and walls)
"""
)
@click.option("--points", "points", multiple=True, required=True, type=click.Path(path_type=Path),
              help="LAS/LAZ/COPC files; repeat the option or list several files after it.")
@click.option("--footprints", type=click.Path(path_type=Path),
              help="Building footprints in any OGR format (GPKG, GeoJSON, Shapefile...); "
                   "without it, outlines are derived from the building points.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Output folder.")
@click.option("--format", "formats", multiple=True, default=("cityjson",), show_default=True,
              help="Output format; repeat for several (cityjson, cityjsonseq, citygml3, citygml2, gpkg, obj, report, "
                   "3dtiles, pointcloud-tiles).")
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
@click.option("--work-dir", type=click.Path(path_type=Path),
              help="Keep the manifest, finished units and run report here; a run started again resumes from it.")
@click.option("--per-commune", is_flag=True, help="Write the outputs per commune, in <out>/<INSEE code>/ (needs --communes).")
@click.option("--images", type=click.Path(path_type=Path),
              help="Camera file of oriented aerial images (any form twin match reads, see the README): roofs and "
                   "walls get textures cut from the images that see them best (CityJSON: JPEG atlases in "
                   "buildings.textures/; 3D Tiles: an atlas per tile).")
@click.option("--image-interior", type=click.Path(path_type=Path),
              help="Interior orientation (YAML or JSON) for --images files that do not hold it "
                   "(omega-phi-kappa or roll-pitch-yaw tables, orthority GeoJSON).")
@click.option("--texture-budget", type=int, default=262_144, show_default=True,
              help="Most texture pixels per building and LoD (patches get coarser beyond it).")
@click.option("--unit-size", type=float, default=1000.0, show_default=True,
              help="Side in metres of the square units of work (1000: the LiDAR HD tiles).")
@_execution_options
@click.argument("more_points", nargs=-1, type=click.Path(path_type=Path))
def build(points, footprints, out_dir, formats, id_field, layer, communes, commune_field, outside_communes, proj_data,
          allow_approximate_heights, tile_compression, tile_max_buildings, crs, vertical_crs,
          building_classes, ground_classes, roof_percentile, step_height, work_dir, per_commune, images, image_interior,
          texture_budget, workers, scheduler, unit_size, verbose, more_points) -> None:
    """Build LOD1.2, LOD1.3 and LOD2.2 buildings from point clouds and footprints.

    Writes the buildings (buildings.city.json, or buildings.city.jsonl with
    --format cityjsonseq), summary.json (every building's status and reason) and
    metadata.json (inputs, CRS, parameters) into the output folder.
    """
    from twin.config import BuildConfig, ClassMapping, Lod1Config, TextureConfig, TilesConfig
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
            classes=classes, lod1=Lod1Config(roof_percentile=roof_percentile, step_height_m=step_height), tiles=tiles,
            textures=TextureConfig(budget_px_per_building=texture_budget),
        )

    progress = _RichProgress(verbose)

    def run():
        from twin.region.engines import Execution

        config = configure()
        execution = Execution(workers=workers, scheduler=scheduler, work_dir=work_dir, unit_size_m=unit_size)
        _setup_logging(verbose)
        add_proj_data_dirs(proj_data)
        try:
            return run_build(
                points=[*points, *more_points], footprints=footprints, out_dir=out_dir, formats=formats,
                config=config, crs=crs, vertical_crs=vertical_crs, id_field=id_field, layer=layer,
                communes=communes, commune_field=commune_field, outside_communes=outside_communes,
                progress=progress, execution=execution, per_commune=per_commune, images=images,
                image_interior=image_interior,
            )
        finally:
            progress.close()

    model = _checked(run)
    _print_outcome(model, status_counts(model), progress, out_dir, work_dir)


@main.command(
    epilog="""\b
Example:
  twin build --points 2021/*.laz --footprints bati.gpkg --out out/ --work-dir work/
  twin update --work-dir work/ --points 2025/LHD_FXX_0652_6862.laz
"""
)
@click.option("--work-dir", required=True, type=click.Path(path_type=Path),
              help="The --work-dir of the build to update.")
@click.option("--points", "points", multiple=True, required=True, type=click.Path(path_type=Path),
              help="The newer LAS/LAZ files; each replaces the earlier files it covers for the most part.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Output folder [default: the build's].")
@click.option("--threshold", type=float, default=1.0, show_default=True,
              help="A roof cell changed when its height moved by more than this many metres.")
@click.option("--share", type=float, default=0.1, show_default=True,
              help="A roof changed when at least this share of its cells seen by both scans changed.")
@_execution_options
@click.argument("more_points", nargs=-1, type=click.Path(path_type=Path))
def update(work_dir, points, out_dir, threshold, share, workers, scheduler, verbose, more_points) -> None:
    """Update a build with newer point files for part of its area.

    Buildings whose roof changed (height moved by more than --threshold over --share of
    the roof) are rebuilt from the new points and record the change in `roof_change`
    (both acquisition dates, "before/after"), `roof_change_share` and
    `roof_change_height_m`; every other building is kept as it was.
    """
    from twin.config import ChangeConfig
    from twin.pipeline import update as run_update
    from twin.report import status_counts

    progress = _RichProgress(verbose)

    def run():
        from twin.region.engines import Execution

        change = ChangeConfig(height_threshold_m=threshold, min_share=share)
        execution = Execution(workers=workers, scheduler=scheduler)
        _setup_logging(verbose)
        try:
            return run_update(work_dir, [*points, *more_points], out_dir, change, progress, execution)
        finally:
            progress.close()

    model = _checked(run)
    changed = [b for b in model.buildings if "roof_change" in b.attributes]
    console.print(f"{len(changed)} building(s) with a changed roof", highlight=False)
    _print_outcome(model, status_counts(model), progress, out_dir, work_dir)


@main.command(
    epilog="""\b
Examples:
  twin plan --tiles lidarhd/ --communes communes.gpkg --footprints bdtopo_batiments.gpkg --workers 64
  twin plan --tiles TA_diff_pkk_lidarhd.shp --communes communes.gpkg --workers 16   (vector tile index)
"""
)
@click.option("--tiles", multiple=True, required=True, type=click.Path(path_type=Path),
              help="LAS/LAZ files, folders of them, or a vector file of tile polygons; repeat for several.")
@click.option("--communes", type=click.Path(path_type=Path), help="Commune polygons, for a table per commune.")
@click.option("--commune-field", help="Field of the commune file holding the INSEE code.")
@click.option("--footprints", type=click.Path(path_type=Path), help="Building footprints, to count the buildings per unit.")
@click.option("--workers", type=int, default=1, show_default=True, help="Workers the run would use.")
@click.option("--unit-size", type=float, default=1000.0, show_default=True, help="Side of the units in metres.")
@click.option("--density", type=float, default=20.0, show_default=True,
              help="Points per m², for a vector tile index (LAS/LAZ headers give their counts).")
@click.option("--buildings-per-km2", type=float, default=1000.0, show_default=True,
              help="Buildings per km² when no --footprints are given (1000: dense suburbs, an upper bound).")
@click.option("--list", "list_units", is_flag=True, help="List every unit (else the 10 longest).")
def plan(tiles, communes, commune_field, footprints, workers, unit_size, density, buildings_per_km2, list_units) -> None:
    """Plan a regional run: its units, their points and buildings, and the time and
    memory it would take with --workers, from the rates measured by the benchmarks
    (twin/region/throughput.json, written by benchmarks/regional_tile.py)."""

    def run():
        from twin.region.engines import Execution
        from twin.region.plan import plan_region, read_tile_index

        Execution(workers=workers, unit_size_m=unit_size)  # validates them
        tile_list = read_tile_index(tiles, density)
        polygons = _plan_footprints(footprints) if footprints is not None else None
        commune_set = None
        if communes is not None:
            from twin.inputs.communes import read_communes

            commune_set = read_communes(communes, commune_field)
        return plan_region(tile_list, unit_size, workers, polygons, buildings_per_km2, commune_set)

    _print_plan(_checked(run), list_units, footprints)


def _plan_footprints(path: Path):
    import pyogrio
    import shapely

    if not path.exists():
        raise TwinError(f"{path}: no such file; check the path given to --footprints")
    try:
        _, _, wkb, _ = pyogrio.raw.read(path, columns=[])
    except Exception as error:
        raise TwinError(f"{path}: cannot be read as a vector file ({error})") from None
    geometries = shapely.from_wkb(wkb)
    return [g for g in geometries if g is not None and not g.is_empty]


def _print_plan(plan, list_units: bool, footprints) -> None:
    from twin.region.plan import duration_text

    out = Console(width=None if sys.stdout.isatty() else 160)  # no cut columns in files and pipes
    rates = plan.throughput
    points = sum(t.points for t in plan.tiles)
    buildings = sum(u.buildings for u in plan.units)
    out.print(f"{len(plan.tiles)} tiles, {points / 1e6:,.1f} M points", highlight=False)
    source = f"counted from {footprints}" if plan.buildings_counted else "estimated from --buildings-per-km2"
    out.print(f"{len(plan.units)} units, {buildings:,} buildings ({source})", highlight=False)
    table = Table(title="units" if list_units else "the 10 longest units")
    for column in ("unit", "buildings", "points (M)", "decoded (M)", "time, 1 worker", "memory"):
        table.add_column(column, justify="left" if column == "unit" else "right")
    shown = plan.units if list_units else sorted(plan.units, key=lambda u: -u.seconds)[:10]
    for unit in shown:
        table.add_row(unit.id, f"{unit.buildings:,}", f"{unit.own_points / 1e6:.1f}", f"{unit.decoded_points / 1e6:.1f}",
                      duration_text(unit.seconds), f"{unit.memory_mb:,.0f} MB")
    out.print(table)
    if plan.communes:
        communes = Table(title="communes")
        for column in ("commune", "name", "buildings", "points (M)", "time, 1 worker"):
            communes.add_column(column, justify="left" if column in ("commune", "name") else "right")
        for row in plan.communes:
            communes.add_row(row["code"], row["name"], f"{row['buildings']:,}", f"{row['points'] / 1e6:.1f}",
                             duration_text(row["seconds_one_worker"]))
        out.print(communes)
    out.print(
        f"with {plan.workers} worker(s): about {duration_text(plan.wall_seconds)}, at most "
        f"{plan.peak_memory_mb:,.0f} MB per worker ({plan.peak_memory_mb * min(plan.workers, len(plan.units)) / 1024:,.1f} GB in all)",
        highlight=False,
    )
    if plan.workers > len(plan.units):
        out.print(
            "fewer units than workers: the spare workers reconstruct the units' buildings side by side, "
            "which shortens the run by less than their number and this estimate leaves out",
            highlight=False, soft_wrap=True,
        )
    out.print(
        f"rates measured by {rates['measured_by']} on {rates['machine']['cores']} cores: "
        f"{rates['read_points_per_s'] / 1e6:.1f} M points/s decoded and cropped, "
        f"{rates['buildings_per_s']:.0f} buildings/s, {rates['rss_mb_per_million_points']:.0f} MB per million points",
        highlight=False,
        soft_wrap=True,
    )


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


@main.command(
    epilog="""\b
Examples:
  twin match --cameras sample_data/imagery/cameras.json --footprints sample_data/footprints.gpkg \\
             --height-range 45 90 --out points.laz
  twin match --cameras cams.json --images-dir photos/ --footprints bati.gpkg --height-range 30 120 \\
             --pairs IMG_1:IMG_2,IMG_2:IMG_3 --scale 0.5 --out points.laz
  twin build --points points.laz --footprints bati.gpkg --out out/
"""
)
@click.option("--cameras", "cameras_path", required=True, type=click.Path(path_type=Path),
              help="Camera orientations: twin-cameras JSON, an OpenSfM/ODM reconstruction.json, an orthority "
                   "GeoJSON or an omega-phi-kappa / roll-pitch-yaw table.")
@click.option("--interior", type=click.Path(path_type=Path),
              help="Interior orientation (YAML or JSON) for orientation files that do not hold it.")
@click.option("--crs", help="World CRS of the orientations when their file does not name it, e.g. EPSG:2154.")
@click.option("--images-dir", type=click.Path(path_type=Path),
              help="Folder of the images [default: the paths given in the camera file].")
@click.option("--footprints", required=True, type=click.Path(path_type=Path),
              help="Building footprints (any OGR format), to label building points.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output LAZ (or LAS) file.")
@click.option("--pairs", default="auto", show_default=True,
              help="Image pairs to match: auto (overlap and base-to-height ratio decide) or NAME1:NAME2,NAME3:NAME4.")
@click.option("--height-range", nargs=2, type=float, required=True, metavar="ZMIN ZMAX",
              help="Lowest terrain and highest roof of the scene, in the cameras' CRS heights; bounds the matching.")
@click.option("--scale", type=click.FloatRange(0.1, 1.0), default=1.0, show_default=True,
              help="Match the images resized by this factor (faster, coarser).")
@click.option("--spacing", type=click.FloatRange(0.01, 10.0),
              help="Point spacing in metres of the output, one averaged point per cube of this side "
                   "(default: about the ground sampling distance of aerial surveys, as the README gives).")
@click.option("--id-field", help="Footprint field holding unique building ids.")
@click.option("--layer", help="Layer of the footprint file, when it has several.")
def match(cameras_path, interior, crs, images_dir, footprints, out, pairs, height_range, scale, spacing, id_field,
          layer) -> None:
    """Dense points from overlapping oriented images, labelled ground / building / vegetation / other.

    Writes a LAS 1.4 file (point format 7, with colours and the cameras' CRS) that
    `twin build --points` takes. Images are read a few at a time, but the whole block is
    matched in one run with its points in memory: cut a very large block into overlapping
    parts.
    """
    from twin.photogrammetry import DEFAULT_SPACING, run_match

    summary = _checked(lambda: run_match(
        cameras_path, footprints, out, images_dir=images_dir, pairs=pairs, height_range=height_range, scale=scale,
        spacing=DEFAULT_SPACING if spacing is None else spacing, id_field=id_field, layer=layer, interior=interior, crs=crs,
    ))
    counts = ", ".join(f"{n:,} {_CLASS_NAMES.get(c, c)}" for c, n in sorted(summary.class_counts.items()))
    console.print(
        f"{len(summary.pairs)} image pairs matched in {summary.seconds:.1f} s: {summary.points:,} points ({counts})",
        highlight=False,
    )
    for skipped in summary.skipped:
        console.print(f"[yellow]pair skipped:[/] {skipped}", highlight=False)
    for (first, second), count in zip(summary.pairs, summary.points_per_pair):
        if count == 0:
            console.print(f"[yellow]pair {first}:{second} gave no point[/]: check its orientations and --height-range",
                          highlight=False)
    console.print(f"wrote {summary.path}", highlight=False)


_CLASS_NAMES = {1: "other", 2: "ground", 4: "medium vegetation", 5: "high vegetation", 6: "building"}


@main.command(epilog="\b\nExample:\n  twin sample --out sample_data/")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("sample_data"), show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (default: the one of the committed sample).")
@click.option("--no-imagery", is_flag=True, help="Skip rendering the aerial images (the slowest part: a few minutes).")
def sample(out_dir: Path, seed: int | None, no_imagery: bool) -> None:
    """Generate the synthetic sample district, its simulated LiDAR scan, aerial images and ground truth."""
    from twin.sample.generate import DEFAULT_SEED, generate_sample

    written = _checked(lambda: generate_sample(out_dir, DEFAULT_SEED if seed is None else seed, imagery=not no_imagery))
    for path in written:
        console.print(f"wrote {path}", highlight=False)


def _print_outcome(model, counts: dict[str, int], progress: _RichProgress, out_dir, work_dir) -> None:
    for note in model.metadata.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    _print_summary(model, counts)
    if out_dir is not None:
        console.print(f"outputs in {out_dir}/", highlight=False, soft_wrap=True)
    if work_dir is not None:
        console.print(f"run report in {work_dir}/report.json", highlight=False, soft_wrap=True)
    if progress.failed_units:
        console.print(
            f"[red]{len(progress.failed_units)} unit(s) failed[/]; the buildings that needed those files are marked "
            "failed. Fix the files named above and run the same command again: only those units run again.",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


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
    textures = model.metadata.get("textures")
    if textures:
        console.print(
            f"textures: {textures['textured']} of {textures['surfaces']} roof and wall surfaces from "
            f"{len(textures['images_used'])} images; {textures['seen_by_no_image']} seen by no image (plain)",
            highlight=False,
        )
        for failure in textures["failed"]:
            console.print(f"[yellow]texture not made:[/] {failure} (plain material)", highlight=False)
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
