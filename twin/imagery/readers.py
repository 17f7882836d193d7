"""Readers of camera orientations: the project's own JSON form and common photogrammetric forms.

Every reader returns `FrameCamera` objects (twin.imagery.camera) in a projected world CRS,
with each camera's `image` resolved against the orientation file's folder.

The project's camera file ("twin-cameras", version 1) is a JSON document::

    {
      "type": "twin-cameras",
      "version": 1,
      "crs": "EPSG:32651",                 # or the CRS's WKT when it has no EPSG code
      "cameras": [
        {
          "name": "100_0005_0018",
          "image": "images/100_0005_0018.tif",   # relative to the JSON file's folder, or null
          "width": 1368, "height": 912,          # image size in pixels
          "fx": 911.7, "fy": 911.7,              # focal lengths in pixels
          "cx": 681.4, "cy": 459.8,              # principal point in pixels (top-left pixel centre at 0, 0)
          "k1": -0.264, "k2": 0.102, "k3": -0.026, "p1": 0.00073, "p2": 0.00026,   # Brown, OpenCV's meaning
          "center": [292746.19, 2731093.47, 186.56],     # projection centre in the CRS
          "rotation": [[...], [...], [...]]              # world -> camera, row-major
        }
      ]
    }

The camera axes are OpenCV's (x right, y down, z forward along the view) and
`p_camera = rotation @ (p_world - center)`. Distortion coefficients may be left out (0).
The writer sorts the cameras by name and writes every number with 15 significant digits,
so that the same cameras always give the same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyproj

from twin.errors import InputError
from twin.imagery.camera import FrameCamera, Intrinsics

CAMERAS_JSON_TYPE = "twin-cameras"
CAMERAS_JSON_VERSION = 1
_DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2")
_REQUIRED_CAMERA_KEYS = ("name", "width", "height", "fx", "fy", "cx", "cy", "center", "rotation")


def _number(value: float) -> float:
    """A float rounded to 15 significant digits: written and read back, it stays the same value."""
    return float(f"{float(value):.15g}")


def crs_text(crs: pyproj.CRS) -> str:
    """"EPSG:code" when the CRS is exactly an EPSG one, its WKT otherwise."""
    authority = crs.to_authority(min_confidence=100)
    if authority is not None:
        return f"{authority[0]}:{authority[1]}"
    return crs.to_wkt()


def parse_crs(text: str, source: str) -> pyproj.CRS:
    """A CRS from user text (EPSG:xxxx, WKT, PROJ string); InputError naming `source` otherwise."""
    try:
        return pyproj.CRS.from_user_input(text)
    except pyproj.exceptions.CRSError as error:
        raise InputError(f"{source}: cannot read the CRS {str(text)[:80]!r} ({error}); give it as EPSG:code or WKT") from None


def write_cameras_json(cameras: list[FrameCamera], path: str | os.PathLike) -> None:
    """Write cameras in the project's JSON form (see the module docstring); they must share one CRS."""
    path = Path(path)
    crs_list = [camera.crs for camera in cameras]
    if not cameras or crs_list[0] is None or any(crs != crs_list[0] for crs in crs_list):
        raise ValueError("write_cameras_json needs at least one camera and one CRS shared by all cameras")
    entries = []
    for camera in sorted(cameras, key=lambda c: c.name):
        intrinsics = camera.intrinsics
        image = None
        if camera.image is not None:
            image = Path(os.path.relpath(Path(camera.image).absolute(), path.absolute().parent)).as_posix()
        entry = {"name": camera.name, "image": image, "width": intrinsics.width, "height": intrinsics.height}
        for key in ("fx", "fy", "cx", "cy", *_DISTORTION_KEYS):
            entry[key] = _number(getattr(intrinsics, key))
        entry["center"] = [_number(v) for v in camera.center]
        entry["rotation"] = [[_number(v) for v in row] for row in camera.rotation]
        entries.append(entry)
    header = {"type": CAMERAS_JSON_TYPE, "version": CAMERAS_JSON_VERSION, "crs": crs_text(crs_list[0])}
    # One line per camera field, arrays kept on their line: a file people can read and diff.
    lines = ["{"] + [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in header.items()]
    lines.append('  "cameras": [')
    for number, entry in enumerate(entries):
        fields = [f"    {json.dumps(key)}: {json.dumps(value)}" for key, value in entry.items()]
        lines += ["   {", ",\n".join(fields), "   }" + ("," if number < len(entries) - 1 else "")]
    lines += ["  ]", "}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_cameras_json(path: str | os.PathLike) -> list[FrameCamera]:
    """Read the project's JSON camera form (see the module docstring)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read it as JSON ({error})") from None
    if not isinstance(document, dict) or document.get("type") != CAMERAS_JSON_TYPE:
        raise InputError(f'{path}: not a camera file (its "type" must be "{CAMERAS_JSON_TYPE}")')
    if document.get("version") != CAMERAS_JSON_VERSION:
        raise InputError(
            f'{path}: camera file version {document.get("version")!r} is not supported; this version of twin reads version {CAMERAS_JSON_VERSION}'
        )
    if not document.get("crs"):
        raise InputError(f'{path}: no "crs"; add the cameras\' CRS as "crs": "EPSG:code" or as WKT')
    crs = parse_crs(document["crs"], str(path))
    entries = document.get("cameras")
    if not isinstance(entries, list) or not entries:
        raise InputError(f'{path}: "cameras" must be a non-empty list of cameras')
    cameras = []
    for index, entry in enumerate(entries):
        where = f"{path}: camera {index + 1}" + (f" ({entry.get('name')!r})" if isinstance(entry, dict) and "name" in entry else "")
        if not isinstance(entry, dict):
            raise InputError(f"{where}: must be a JSON object")
        missing = [key for key in _REQUIRED_CAMERA_KEYS if key not in entry]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}; every camera needs {', '.join(_REQUIRED_CAMERA_KEYS)}")
        try:
            intrinsics = Intrinsics(
                width=int(entry["width"]),
                height=int(entry["height"]),
                **{key: float(entry[key]) for key in ("fx", "fy", "cx", "cy")},
                **{key: float(entry.get(key, 0.0)) for key in _DISTORTION_KEYS},
            )
            center = np.asarray(entry["center"], dtype=float)
            rotation = np.asarray(entry["rotation"], dtype=float)
            if center.shape != (3,) or rotation.shape != (3, 3) or not np.all(np.isfinite(center)):
                raise ValueError('"center" must be 3 numbers and "rotation" a 3 x 3 row-major matrix')
            image = entry.get("image")
            camera = FrameCamera(
                name=str(entry["name"]),
                intrinsics=intrinsics,
                center=center,
                rotation=rotation,
                crs=crs,
                image=os.path.normpath(path.parent / image) if image else None,
            )
        except (TypeError, ValueError) as error:
            raise InputError(f"{where}: {error}") from None
        cameras.append(camera)
    _check_unique_names(cameras, path)
    return cameras


def _check_unique_names(cameras: list[FrameCamera], path: Path) -> None:
    seen = set()
    for camera in cameras:
        if camera.name in seen:
            raise InputError(f"{path}: camera {camera.name!r} appears twice; give each image one orientation")
        seen.add(camera.name)


__all__ = ["read_cameras_json", "write_cameras_json", "crs_text", "parse_crs"]
