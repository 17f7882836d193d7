"""Per-commune packages for urban-planning departments (`twin package`).

From the output folder of a `twin build --communes ...` run, each commune gets a folder
`<dest>/<INSEE code>/` and the same as `<dest>/<INSEE code>.zip`, holding its buildings
in every format its tools read (see `PACKAGE_FORMATS`), `README.txt` and
`metadata.json` (CRS and vertical datum, sources with dates and licences, software
version and parameters, and a SHA-256 of every file).

A package appears under its final name only once complete; an existing one is replaced
only with `overwrite`. Packages are deterministic: the same build output gives
byte-identical folders and zips.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import exporters
from exporters.atomic import atomic_output, atomic_path
from exporters.citygml import srs_name
from twin.errors import InputError
from twin.geodesy import horizontal_part
from twin.inputs.citymodels import read_build_output
from twin.model import CityModel
from twin.pipeline import software_version

PACKAGE_FORMATS = ("gpkg", "citygml3", "citygml2", "cityjson", "obj", "report")
README_FILE = "README.txt"
METADATA_FILE = "metadata.json"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

IGN_LICENCE = "Licence Ouverte / Open Licence 2.0 (Etalab); credit: IGN"
UNKNOWN_LICENCE = "not recorded by twin: state this source's licence to the recipients"
_LIDAR_HD_NAME = re.compile(r"(^LHD_|_IGN69|LIDARHD)", re.IGNORECASE)


def make_packages(
    build_dir: str | Path, dest: str | Path, communes: Sequence[str] = (), overwrite: bool = False
) -> list[Path]:
    """Writes one package per commune (all communes of the build when none are named);
    returns the package folders and zips written."""
    build_dir, dest = Path(build_dir), Path(dest)
    model, source_file = read_build_output(build_dir)
    names = _commune_names(model)
    present = sorted({str(b.attributes["commune"]) for b in model.buildings if b.attributes.get("commune")})
    if not present:
        raise InputError(
            f"{build_dir}: its buildings have no commune; build them with --communes <commune polygons> first"
        )
    chosen = list(dict.fromkeys(communes)) or present
    for code in chosen:
        if code not in present and code not in names:
            raise InputError(
                f"--commune {code}: unknown commune; {build_dir} has buildings in {', '.join(present)}"
            )
        if code not in present:
            raise InputError(
                f"--commune {code} ({names[code]}): no building of {build_dir} lies in it; "
                f"communes with buildings: {', '.join(present)}"
            )
    _check_writable(dest)
    for code in chosen:
        for existing in (dest / code, dest / f"{code}.zip"):
            if existing.exists() and not overwrite:
                raise InputError(f"{existing} already exists; pass --overwrite to replace it")
    written = []
    for code in chosen:
        written += _write_package(model, source_file, code, names.get(code, ""), dest)
    return written


def commune_model(model: CityModel, code: str, name: str) -> CityModel:
    buildings = tuple(b for b in model.buildings if b.attributes.get("commune") == code)
    label = f"{name} ({code})" if name else code
    metadata = {
        **model.metadata,
        "title": f"Buildings of {label}",
        "identifier": f"{model.metadata.get('identifier') or 'twin'}-{code}",
        "commune": {"code": code, "name": name},
        "building_count": len(buildings),
    }
    communes = tuple(c for c in model.communes if c.code == code)
    return replace(model, buildings=buildings, metadata=metadata, communes=communes)


def _commune_names(model: CityModel) -> dict[str, str]:
    names = dict(((model.metadata.get("inputs") or {}).get("communes") or {}).get("names") or {})
    names.update({c.code: c.name for c in model.communes})
    return names


def _check_writable(dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dest, prefix=".twin-write-test"):
            pass
    except OSError as error:
        raise InputError(f"{dest}: cannot write packages there ({error.strerror}); choose another --dest") from None


def _write_package(model: CityModel, source_file: Path, code: str, name: str, dest: Path) -> list[Path]:
    commune = commune_model(model, code, name)
    folder, archive = dest / code, dest / f"{code}.zip"
    staging = Path(tempfile.mkdtemp(prefix=f".{code}.", suffix=".tmp", dir=dest))
    try:
        for format_name in PACKAGE_FORMATS:
            exporters.get(format_name).write(commune, staging)
        with atomic_output(staging / README_FILE) as stream:
            stream.write(readme(commune))
        metadata = package_metadata(commune, source_file, staging)
        with atomic_output(staging / METADATA_FILE) as stream:
            json.dump(metadata, stream, indent=2, ensure_ascii=False, default=str)
            stream.write("\n")
        with atomic_path(archive) as temporary:
            _zip(staging, temporary, code)
        _replace_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [folder, archive]


def _zip(folder: Path, path: Path, root: str) -> None:
    """A zip with fixed dates and modes, entries sorted, so it is the same from run to run."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.iterdir()):
            info = zipfile.ZipInfo(f"{root}/{file.name}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(file, "rb") as stream, archive.open(info, "w") as entry:
                shutil.copyfileobj(stream, entry)


def _replace_folder(staging: Path, folder: Path) -> None:
    os.chmod(staging, 0o755)
    if not folder.exists():
        os.replace(staging, folder)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
    os.replace(folder, retired / folder.name)
    os.replace(staging, folder)
    with contextlib.suppress(OSError):
        shutil.rmtree(retired)


def sources(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The build's input data with their dates and licences, as far as twin can tell them."""
    inputs = metadata.get("inputs") or {}
    found = []
    for points in inputs.get("points") or []:
        name = Path(str(points.get("path", ""))).name
        is_lidar_hd = bool(_LIDAR_HD_NAME.search(name))
        found.append({
            "kind": "points",
            "file": name,
            "provider": "IGN, LiDAR HD" if is_lidar_hd else None,
            "dates": sorted(set(points.get("acquisition_dates") or [])),
            "licence": IGN_LICENCE if is_lidar_hd else UNKNOWN_LICENCE,
        })
    footprints = inputs.get("footprints")
    if footprints:
        name = Path(str(footprints.get("path", ""))).name
        is_bd_topo = footprints.get("id_field") == "cleabs" or "bdtopo" in name.lower().replace("_", "")
        found.append({
            "kind": "footprints",
            "file": name,
            "provider": "IGN, BD TOPO" if is_bd_topo else None,
            "dates": [],
            "licence": IGN_LICENCE if is_bd_topo else UNKNOWN_LICENCE,
        })
    return found


def _crs_description(model: CityModel) -> dict[str, Any]:
    crs = model.crs
    vertical = crs.sub_crs_list[1] if crs.is_compound else None
    return {
        "uri": srs_name(crs),
        "name": crs.name,
        "horizontal": f"{horizontal_part(crs).name} (EPSG:{horizontal_part(crs).to_epsg()})",
        "vertical_datum": f"{vertical.name} (EPSG:{vertical.to_epsg()})" if vertical is not None else None,
    }


def package_metadata(model: CityModel, source_file: Path, folder: Path) -> dict[str, Any]:
    metadata = model.metadata
    files = []
    for file in sorted(folder.iterdir()):
        if file.name == METADATA_FILE:
            continue
        files.append({"file": file.name, "bytes": file.stat().st_size,
                      "sha256": hashlib.sha256(file.read_bytes()).hexdigest()})
    return {
        "commune": metadata["commune"],
        "title": metadata["title"],
        "building_count": len(model.buildings),
        "crs": _crs_description(model),
        "reference_date": metadata.get("reference_date"),
        "sources": sources(metadata),
        "software": metadata.get("software") or {"name": "twin", "version": software_version()},
        "packaged_with": {"name": "twin", "version": software_version(), "from": source_file.name},
        "parameters": metadata.get("parameters"),
        "notes": metadata.get("notes") or [],
        "files": files,
    }


_FILE_DESCRIPTIONS = (
    ("buildings.gpkg", "GeoPackage for QGIS/ArcGIS: layer 'buildings' (footprints with every attribute, "
     "typed) and, with LoD2 roofs, layer 'roof_faces' (3D roof faces with slope, azimuth and area, for "
     "solar studies)."),
    ("buildings.citygml3.gml", "CityGML 3.0 (3DCityDB 5, FME, citygml-tools...)."),
    ("buildings.citygml2.gml", "CityGML 2.0 (3DCityDB 4, FZKViewer, most CityGML software)."),
    ("buildings.city.json", "CityJSON 2.0 (QGIS CityJSON loader, ninja.cityjson.org, cjio)."),
    ("buildings.obj", "Wavefront OBJ mesh for 3D modellers and CAD (Blender, Rhino, SketchUp...): one object "
     "per building, highest LoD; coordinates minus the origin written in its first line, z up."),
    ("report.html", "What the data is worth: maps by height and quality, histograms, counts, fallbacks, inputs. "
     "Opens in any browser, offline."),
    (METADATA_FILE, "Machine-readable metadata: CRS, sources, dates, licences, software, parameters, checksums."),
)


def _roof_percentile(metadata: Mapping[str, Any]) -> str:
    percentile = ((metadata.get("parameters") or {}).get("lod1") or {}).get("roof_percentile")
    return f"{percentile:g}th percentile" if isinstance(percentile, (int, float)) else "chosen percentile"


def readme(model: CityModel) -> str:
    metadata = model.metadata
    commune = metadata["commune"]
    crs = _crs_description(model)
    counts: dict[str, int] = {}
    for building in model.buildings:
        counts[str(building.status)] = counts.get(str(building.status), 0) + 1
    lines = [
        metadata["title"],
        "=" * len(metadata["title"]),
        "",
        f"{len(model.buildings)} buildings of commune {commune['code']}"
        + (f" ({commune['name']})" if commune.get("name") else "")
        + ": " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".",
        f"Data of {metadata.get('reference_date') or 'an unknown date'} (LiDAR acquisition).",
        "",
        "Files",
        "-----",
    ]
    lines += [f"- {name}: {text}" for name, text in _FILE_DESCRIPTIONS]
    lines += [
        "",
        "Coordinates",
        "-----------",
        f"CRS {crs['name']} ({crs['uri']}): horizontal {crs['horizontal']}, heights in metres above "
        f"{crs['vertical_datum'] or 'the CRS vertical datum'}. The GeoPackage footprints are 2D in the horizontal CRS.",
        "",
        "Levels of detail",
        "----------------",
        f"LOD1.2: each building as one block from the ground to the {_roof_percentile(metadata)} of its roof. "
        "LOD1.3: blocks split where the roof steps (BuildingParts in CityGML). "
        "LoD2.2 (where built): roof faces with their slopes. "
        "Heights, volumes, point density, acquisition date and validity (val3dity error codes, "
        "empty when valid) are attributes of every building.",
        "",
        "Sources and licences",
        "--------------------",
    ]
    for source in sources(metadata):
        dates = ", ".join(source["dates"]) or "date not recorded"
        provider = f" ({source['provider']})" if source["provider"] else ""
        lines.append(f"- {source['kind']}: {source['file']}{provider}, {dates}; licence: {source['licence']}")
    software = metadata.get("software") or {}
    lines += [
        "",
        "Made by",
        "-------",
        f"twin {software.get('version', software_version())}, an open-source builder of 3D city models; "
        "parameters in metadata.json.",
        "",
    ]
    return "\n".join(lines)
