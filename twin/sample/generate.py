"""`twin sample`: writes the sample district and its ground truth.

Files (all deterministic for a given seed):
- `lidar.laz`: the simulated scan, LAS 1.4 point format 6, Lambert-93 + NGF-IGN69.
- `footprints.gpkg`: footprints with realistic defects (offsets, one building missing,
  one overlapping pair, one multipolygon, one hole, one self-touching ring).
- `communes.gpkg`: two communes with INSEE codes.
- `truth.city.json`: the true buildings as CityJSON LoD2.2 solids with semantics.
- `truth.json`: per building, the true ground height, roof heights and roof type.
- `imagery/`: eight vertical and four oblique aerial images of the district (JPEG) and their
  cameras (`cameras.json`, the project's camera form), unless `imagery=False`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

import laspy
import numpy as np
import pyogrio
import pyproj
import shapely
from shapely import affinity

from exporters.atomic import atomic_output, atomic_path
from exporters.cityjson import write_cityjson_file
from exporters.texture_atlas import encode_jpeg
from reconstruction.extrude import extrude_faces
from reconstruction.geometry import solid_volume
from twin.geodesy import compound
from twin.model import Building, CityModel, Status
from twin.imagery.readers import write_cameras_json
from twin.sample.imagery import JPEG_QUALITY, render_survey
from twin.sample.lidar import ScanSettings, simulate_scan
from twin.sample.scene import EXTENT, SceneBuilding, district

ORIGIN = (668200.0, 6860300.0)
"""Lambert-93 position of the district's south-west corner (Marne valley, Seine-et-Marne)."""
DEFAULT_SEED = 2024
TERRACE = ("B09", "B10", "B11", "B12", "B13")
MISSING_FOOTPRINT = "B30"
MULTIPOLYGON = ("B26", "B26_2")
OVERLAPPING = ("B28", "B29")
SELF_TOUCHING = "B31"
COMMUNES = (("77083", "Champs-sur-Marne"), ("93051", "Noisy-le-Grand"))
FIXED_DATE = "2024-05-02T00:00:00Z"


def sample_crs() -> pyproj.CRS:
    return compound(pyproj.CRS.from_epsg(2154), pyproj.CRS.from_epsg(5720))


def generate_sample(out_dir: str | Path, seed: int = DEFAULT_SEED, imagery: bool = True) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Separate random streams: the footprint defects must not depend on how many rays hit what.
    scan_rng, footprint_rng = (np.random.default_rng([seed, stream]) for stream in range(2))
    buildings, trees = district()
    scan = simulate_scan(buildings, trees, scan_rng)
    offsets = _footprint_offsets(buildings, footprint_rng)
    written = [
        write_scan_laz(out_dir / "lidar.laz", scan),
        _write_footprints(out_dir / "footprints.gpkg", buildings, offsets, footprint_rng),
        _write_communes(out_dir / "communes.gpkg"),
        *_write_truth(out_dir, buildings, trees, offsets, seed),
    ]
    if imagery:
        written += _write_imagery(out_dir / "imagery", buildings, trees, seed)
    return written


def _write_imagery(folder: Path, buildings: list[SceneBuilding], trees, seed: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    cameras, images = render_survey(buildings, trees, np.array([*ORIGIN, 0.0]), seed)
    written, placed = [], []
    for camera, image in zip(cameras, images):
        path = folder / f"{camera.name}.jpg"
        with atomic_output(path, "wb") as stream:
            stream.write(encode_jpeg(image, JPEG_QUALITY))
        written.append(path)
        placed.append(replace(camera, crs=sample_crs(), image=str(path)))
    cameras_json = folder / "cameras.json"
    with atomic_path(cameras_json) as temporary:
        write_cameras_json(placed, temporary)
    return [*written, cameras_json]


def _to_map(geometry: shapely.Geometry) -> shapely.Geometry:
    return affinity.translate(geometry, *ORIGIN)


def _footprint_offsets(buildings: list[SceneBuilding], rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """Each footprint's digitising offset (0.3-0.5 m); a terrace and a multipolygon move as one."""
    offsets = {}
    for building in buildings:
        magnitude, angle = rng.uniform(0.3, 0.5), rng.uniform(0, 2 * np.pi)
        offsets[building.id] = (round(magnitude * np.cos(angle), 3), round(magnitude * np.sin(angle), 3))
    for group in (TERRACE, MULTIPOLYGON):
        for member in group[1:]:
            offsets[member] = offsets[group[0]]
    return offsets


def write_scan_laz(path: Path, scan, origin: tuple[float, float] = ORIGIN) -> Path:
    """The scan as LAS 1.4 point format 6 in Lambert-93 + NGF-IGN69, its local
    coordinates placed at `origin` (the sample district's by default)."""
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.offsets = np.array([origin[0], origin[1], 0.0])
    header.scales = np.array([0.01, 0.01, 0.01])
    header.add_crs(sample_crs())
    header.global_encoding.gps_time_type = laspy.header.GpsTimeType.STANDARD
    header.creation_date = dt.date(2024, 5, 2)
    header.generating_software = "twin sample"
    header.system_identifier = "twin simulated LiDAR HD-like scan"
    points = laspy.ScaleAwarePointRecord.zeros(len(scan.xyz), header=header)
    points.x = scan.xyz[:, 0] + origin[0]
    points.y = scan.xyz[:, 1] + origin[1]
    points.z = scan.xyz[:, 2]
    points.classification = scan.classification
    points.return_number = scan.return_number
    points.number_of_returns = scan.number_of_returns
    points.gps_time = scan.gps_time
    points.scan_angle = np.round(scan.scan_angle_deg / 0.006).astype(np.int16)
    points.intensity = scan.intensity
    points.point_source_id = scan.point_source_id
    with atomic_output(path, "wb") as stream:
        with laspy.LasWriter(stream, header, do_compress=True, closefd=False) as writer:
            writer.write_points(points)
    return path


def _footprint_geometry(building: SceneBuilding, buildings: dict[str, SceneBuilding], offset) -> shapely.Geometry:
    footprint = building.footprint
    if building.id == MULTIPOLYGON[0]:
        footprint = shapely.MultiPolygon([footprint, buildings[MULTIPOLYGON[1]].footprint])
    if building.id == OVERLAPPING[1]:
        xmin, ymin, xmax, ymax = footprint.bounds
        footprint = shapely.box(xmin - 1.5, ymin, xmax, ymax)  # digitised 1.5 m into its neighbour
    if building.id == SELF_TOUCHING:
        corners = np.asarray(shapely.geometry.polygon.orient(footprint, 1.0).exterior.coords)[:-1]
        corner = corners[1]
        lobe = [corner + (0.8, 0.2), corner + (0.8, 1.0), corner]  # a loop back through the same corner
        ring = [*corners[:2], *lobe, *corners[2:], corners[0]]
        footprint = shapely.Polygon(ring)
    return affinity.translate(footprint, *offset)


def _write_footprints(path: Path, buildings: list[SceneBuilding], offsets, rng: np.random.Generator) -> Path:
    by_id = {b.id: b for b in buildings}
    rows = []
    for building in buildings:
        if building.id in (MISSING_FOOTPRINT, MULTIPOLYGON[1]):
            continue
        geometry = _to_map(_footprint_geometry(building, by_id, offsets[building.id]))
        eave = min(float(np.min([p.z0 for p in w.planes])) for w in building.wings) - building.ground_z
        rows.append(
            (
                building.id,
                "Indifférenciée",
                round(eave, 1),
                round(building.ground_z + rng.normal(0, 0.3), 1),
                shapely.to_wkb(geometry),
            )
        )
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    _write_layer(
        path,
        "batiment",
        [r[4] for r in rows],
        ["id", "nature", "hauteur", "altitude_minimale_sol"],
        [np.array([r[k] for r in rows], dtype=object if k < 2 else float) for k in range(4)],
        "MultiPolygon",
    )
    return path


def _write_communes(path: Path) -> Path:
    west = shapely.Polygon([(-20, -20), (120, -20), (120, 80), (105, 80), (105, 180), (-20, 180)])
    east = shapely.box(-20, -20, EXTENT[0] + 20, EXTENT[1] + 20).difference(west)
    geometries = [shapely.to_wkb(_to_map(shapely.normalize(g))) for g in (west, east)]
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    _write_layer(
        path,
        "commune",
        geometries,
        ["code_insee", "nom"],
        [np.array([c for c, _ in COMMUNES], dtype=object), np.array([n for _, n in COMMUNES], dtype=object)],
        "Polygon",
    )
    return path


def _write_layer(path: Path, layer: str, wkb: list[bytes], fields: list[str], values: list[np.ndarray], geometry_type: str):
    temporary = path.with_name(f".{path.name}.tmp.gpkg")
    temporary.unlink(missing_ok=True)
    pyogrio.raw.write(
        temporary,
        geometry=np.array(wkb, dtype=object),
        field_data=values,
        fields=fields,
        layer=layer,
        driver="GPKG",
        crs="EPSG:2154",
        geometry_type=geometry_type,
        promote_to_multi=geometry_type == "MultiPolygon",
    )
    temporary.replace(path)


def _roof_type(building: SceneBuilding) -> str:
    faces = building.roof_faces()
    horizontal = [abs(f.plane.slope_x) < 1e-9 and abs(f.plane.slope_y) < 1e-9 for f in faces]
    if all(horizontal):
        heights = {round(f.plane.z0, 3) for f in faces}
        return "flat" if len(heights) == 1 else "multiple flat"
    return "sloped" if not any(horizontal) else "mixed"


def _roof_statistics(building: SceneBuilding, cell: float = 0.1) -> dict[str, float]:
    """Area-weighted percentiles of the true roof over the true footprint."""
    footprint = building.footprint
    xmin, ymin, xmax, ymax = footprint.bounds
    xs, ys = np.meshgrid(np.arange(xmin + cell / 2, xmax, cell), np.arange(ymin + cell / 2, ymax, cell))
    xs, ys = xs.ravel(), ys.ravel()
    inside = shapely.contains_xy(footprint, xs, ys)
    heights = building.roof_height(xs[inside], ys[inside])
    p50, p70 = np.percentile(heights, [50, 70])
    return {
        "h_roof_min": round(float(heights.min()), 3),
        "h_roof_50p": round(float(p50), 3),
        "h_roof_70p": round(float(p70), 3),
        "h_roof_max": round(float(heights.max()), 3),
    }


def _face_records(building: SceneBuilding) -> list[dict[str, float]]:
    records = []
    for face in building.roof_faces():
        gradient = np.hypot(face.plane.slope_x, face.plane.slope_y)
        slope = float(np.degrees(np.arctan(gradient)))
        azimuth = float(np.degrees(np.arctan2(-face.plane.slope_x, -face.plane.slope_y)) % 360) if gradient > 0 else None
        records.append(
            {"slope_deg": round(slope, 3), "azimuth_deg": None if azimuth is None else round(azimuth, 3), "area": round(face.polygon.area, 3)}
        )
    return records


def _write_truth(out_dir: Path, buildings: list[SceneBuilding], trees, offsets, seed: int) -> list[Path]:
    truth_buildings = []
    records = {}
    for building in buildings:
        faces = [
            type(face)(_to_map(face.polygon), type(face.plane)(face.plane.x0 + ORIGIN[0], face.plane.y0 + ORIGIN[1], face.plane.z0, face.plane.slope_x, face.plane.slope_y))
            for face in building.roof_faces()
        ]
        solid = extrude_faces(faces, building.ground_z)
        stats = _roof_statistics(building)
        record = {
            "shape": building.shape,
            "roof_type": _roof_type(building),
            "h_ground": building.ground_z,
            **stats,
            "ridge_height": stats["h_roof_max"],
            "roof_planes": len(faces),
            "roof_faces": _face_records(building),
            "footprint_area": round(building.footprint.area, 3),
            "volume": round(solid_volume(solid), 3),
            "footprint_offset": list(offsets[building.id]),
            "in_footprints": building.id != MISSING_FOOTPRINT,
            "footprint_wkt": shapely.to_wkt(_to_map(building.footprint), rounding_precision=3),
        }
        records[building.id] = record
        attributes = {k: v for k, v in record.items() if k not in ("roof_faces", "footprint_wkt", "footprint_offset")}
        truth_buildings.append(
            Building(building.id, _to_map(building.footprint), Status.BUILT, "ground truth", attributes, {"2.2": solid})
        )
    model = CityModel(
        tuple(truth_buildings),
        sample_crs(),
        {"title": "twin sample district: ground truth (LoD2.2)", "reference_date": "2024-04-17", "identifier": f"twin-sample-truth-{seed}"},
    )
    truth_city = out_dir / "truth.city.json"
    write_cityjson_file(model, truth_city)
    truth_json = out_dir / "truth.json"
    document = {
        "seed": seed,
        "origin": list(ORIGIN),
        "crs": "EPSG:5698 (Lambert-93 + NGF-IGN69)",
        "terrain": "z = 48 + 0.025 x + 0.012 y + 0.6 sin(x / 35) cos(y / 50), x and y in metres from the origin",
        "scan": {k: str(v) for k, v in ScanSettings().__dict__.items()},
        "footprint_defects": {
            "offset": "every footprint moved by 0.3-0.5 m (footprint_offset); the terrace and the multipolygon move as one",
            "missing": MISSING_FOOTPRINT,
            "multipolygon": list(MULTIPOLYGON),
            "overlapping": list(OVERLAPPING),
            "self_touching_ring": SELF_TOUCHING,
            "hole": "B20",
        },
        "terrace": list(TERRACE),
        "trees": [t.__dict__ for t in trees],
        "buildings": records,
    }
    with atomic_output(truth_json) as stream:
        json.dump(document, stream, indent=1, ensure_ascii=False)
        stream.write("\n")
    return [truth_city, truth_json]
