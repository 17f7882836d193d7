"""Readers of camera orientations: the project's own JSON form and common photogrammetric forms.

Every reader returns `FrameCamera` objects (twin.imagery.camera) in a projected world CRS,
sorted by name, with each camera's `image` resolved to a path. The forms that hold WGS 84
ellipsoidal heights (OpenSfM, latitude longitude altitude) give the cameras either in a
CRS with a vertical datum, heights converted with PROJ's geoid grid, or in a 3D projected
CRS whose heights say they are ellipsoidal: never altitudes labelled with a datum they are
not in. `load_cameras` picks the reader from the file's content:

- the project's camera JSON (below): complete, nothing else needed;
- an OpenSfM / ODM `reconstruction.json` (`read_opensfm`): interior and exterior; CRS by
  default the UTM zone of its reference_lla; images in ODM's ../images folder;
- an x y z omega phi kappa table (`read_opk_csv`: comma, space, tab separated, quoted or
  not, with a `filename x y z omega phi kappa [camera]` header (Pix4D's `imageName X Y Z
  Omega Phi Kappa` too) or none in that order),
  angles in degrees, with interior parameters (orthority YAML or reconstruction.json) and
  the CRS of a sibling .prj file or given;
- an orthority exterior GeoJSON (`read_opk_geojson`: xyz, opk in radians, world_crs);
- a latitude longitude altitude roll pitch yaw table (`read_lla_rpy_csv`): WGS 84 with
  ellipsoidal altitude, Pix4D's roll/pitch/yaw (see `rotation_from_rpy`), with interior
  parameters; CRS by default the UTM zone of the cameras.
Images named without a suffix are found by their stem in the image folder.

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
          "cx": 681.385, "cy": 462.001,             # principal point in pixels (top-left pixel centre at 0, 0)
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

import csv
import glob
import json
import math
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pyproj
import yaml
from pyproj.transformer import TransformerGroup

from twin.errors import InputError
from twin.heights import GEOGRAPHIC_3D, PROJ_DATA_ENV, add_env_proj_data_dirs, missing_grids, needs_geoid, transformer_grids
from twin.imagery.camera import FrameCamera, Intrinsics, rotation_from_opk, rotation_from_rpy

CAMERAS_JSON_TYPE = "twin-cameras"
CAMERAS_JSON_VERSION = 1
_DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2")
_REQUIRED_CAMERA_KEYS = ("name", "width", "height", "fx", "fy", "cx", "cy", "center", "rotation")


def _number(value: float) -> float:
    """A float rounded to 15 significant digits: written and read back, it stays the same value."""
    return float(f"{float(value):.15g}")


def crs_text(crs: pyproj.CRS) -> str:
    """The CRS as "EPSG:code" when it is exactly an EPSG one, as WKT otherwise."""
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


def _read_json(path: Path):
    """The JSON document of a file; InputError naming the file when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot read it as JSON ({error})") from None


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


def read_cameras_json(path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> list[FrameCamera]:
    """Read the project's JSON camera form (see the module docstring).

    The file declares its CRS. Images are resolved against the file's folder, or, with
    `image_dir`, looked up by their file name in that folder.
    """
    path = Path(path)
    document = _read_json(path)
    if not isinstance(document, dict) or document.get("type") != CAMERAS_JSON_TYPE:
        raise InputError(f'{path}: not a camera file (its "type" must be "{CAMERAS_JSON_TYPE}")')
    if document.get("version") != CAMERAS_JSON_VERSION:
        raise InputError(
            f'{path}: camera file version {document.get("version")!r} is not supported; this version of twin reads version {CAMERAS_JSON_VERSION}'
        )
    if not document.get("crs"):
        raise InputError(f'{path}: no "crs"; add the cameras\' CRS as "crs": "EPSG:code" or as WKT')
    crs = _projected(document["crs"], str(path))
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
                image=_cameras_json_image(image, path, image_dir),
            )
        except (TypeError, ValueError) as error:
            raise InputError(f"{where}: {error}") from None
        cameras.append(camera)
    _check_unique_names(cameras, path)
    return sorted(cameras, key=lambda c: c.name)


def _cameras_json_image(image, path: Path, image_dir) -> str | None:
    if not image:
        return None
    if not isinstance(image, str):
        raise ValueError('"image" must be a file path or null')
    if image_dir is not None:
        return _image_path(image, Path(image_dir))
    return os.path.normpath(path.parent / image)


def _check_unique_names(cameras: list[FrameCamera], path: Path) -> None:
    seen = set()
    for camera in cameras:
        if camera.name in seen:
            raise InputError(f"{path}: camera {camera.name!r} appears twice; give each image one orientation")
        seen.add(camera.name)


# --- Geodesy shared by the photogrammetric readers ---------------------------------------

def utm_crs_of(longitude: float, latitude: float) -> pyproj.CRS:
    """The WGS 84 UTM zone holding a point (any longitude, e.g. 0..360, is brought to -180..180)."""
    longitude = (longitude + 180.0) % 360.0 - 180.0
    zone = min(int((longitude + 180.0) // 6.0) + 1, 60)
    return pyproj.CRS(f"EPSG:{(32600 if latitude >= 0 else 32700) + zone}")


def _projected(crs: pyproj.CRS | str, source: str) -> pyproj.CRS:
    crs = crs if isinstance(crs, pyproj.CRS) else parse_crs(crs, source)
    if not crs.is_projected:
        raise InputError(f"{source}: the world CRS {crs.name!r} is not projected; give a projected CRS (UTM, a national grid...)")
    return crs


def _geographic_to(crs: pyproj.CRS) -> pyproj.Transformer:
    """Longitude, latitude (EPSG:4979) to `crs`, heights left as they are."""
    return pyproj.Transformer.from_crs(GEOGRAPHIC_3D, crs, always_xy=True)


def _ellipsoidal_to(source: pyproj.CRS | str, target: pyproj.CRS, where: str) -> tuple[pyproj.Transformer, pyproj.CRS]:
    """The transformation of `source` (a 3D CRS with ellipsoidal heights) into `target`, and the
    CRS of the cameras it gives.

    A target with a vertical datum (a compound CRS such as Lambert-93 + NGF-IGN69) turns the
    heights into its altitudes with a geoid grid; without the grid PROJ would quietly keep
    the ellipsoidal heights (a "ballpark" transformation, some 44 m off in France), so that
    is refused, naming the grid. A target without a vertical datum keeps the ellipsoidal
    heights and is given in its 3D form, so that the cameras' CRS says so.
    """
    if not needs_geoid(target):
        target = target.to_3d()
        return pyproj.Transformer.from_crs(source, target, always_xy=True), target
    add_env_proj_data_dirs()
    with warnings.catch_warnings():  # pyproj warns about missing grids; the error below says more
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(source, target, always_xy=True)
    with_grid = [transformer for transformer in group.transformers if transformer_grids(transformer)]
    if with_grid:
        return with_grid[0], target
    vertical = target.sub_crs_list[-1] if target.is_compound else target
    missing = missing_grids(group)
    if not missing:
        raise InputError(
            f"{where}: PROJ knows no geoid grid to turn the cameras' ellipsoidal heights into {vertical.name}; "
            "give a CRS without a vertical datum (the heights stay ellipsoidal) or one whose geoid PROJ knows"
        )
    raise InputError(
        f"{where}: converting the cameras' ellipsoidal heights to {vertical.name} needs the geoid grid "
        f"{' or '.join(missing)}, which PROJ cannot find; download it (e.g. `projsync --file {missing[-1]}`) "
        f"or put it in a folder and pass --proj-data FOLDER (or set {PROJ_DATA_ENV})"
    )


def _topocentric_to_geographic(longitude: float, latitude: float, height: float) -> pyproj.Transformer:
    """East, north, up metres around a WGS 84 point (OpenSfM's local frame) to EPSG:4979."""
    return pyproj.Transformer.from_pipeline(
        "+proj=pipeline"
        f" +step +inv +proj=topocentric +ellps=WGS84 +lon_0={longitude!r} +lat_0={latitude!r} +h_0={height!r}"
        " +step +inv +proj=cart +ellps=WGS84"
        " +step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )


def _chain(*transformers: pyproj.Transformer):
    def apply(points: np.ndarray) -> np.ndarray:
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        for transformer in transformers:
            x, y, z = transformer.transform(x, y, z)
        return np.column_stack([x, y, z])

    return apply


def local_pose_to_world(center_local: np.ndarray, rotation_local: np.ndarray, to_world) -> tuple[np.ndarray, np.ndarray]:
    """Carry a camera pose from a local Cartesian frame (topocentric east-north-up...) into a world CRS.

    The centre goes through `to_world` ((n, 3) -> (n, 3)) exactly. The map projection is not
    a rotation of the local frame: its axes turn by the meridian convergence (-0.86 degree
    for the drone set in UTM 51N) and scale by the projection's scale factor. The attitude
    takes the rotation nearest to the local Jacobian of `to_world` at the camera (its polar
    factor); what is left, the scale factor's departure from 1 (1.3e-4 there), moves
    projections by well under a pixel over a scene a few hundred metres across.
    """
    step = 1.0
    offsets = np.vstack([np.eye(3) * step, -np.eye(3) * step])
    moved = to_world(center_local[None, :] + np.vstack([np.zeros(3), offsets]))
    if not np.all(np.isfinite(moved)):
        raise ValueError("the pose lies outside the area of the transformation into the world CRS")
    jacobian = ((moved[1:4] - moved[4:]) / (2.0 * step)).T  # column i: world image of local axis i
    u, _, vt = np.linalg.svd(jacobian)
    nearest_rotation = u @ vt
    return moved[0], rotation_local @ nearest_rotation.T


# --- Interior orientation ---------------------------------------------------------------

_OPENSFM_DISTORTION = {"perspective": ("k1", "k2"), "brown": ("k1", "k2", "k3", "p1", "p2"), "simple_radial": ("k1",), "radial": ("k1", "k2")}


def _opensfm_intrinsics(name: str, camera: dict, source: str) -> Intrinsics:
    """OpenSfM camera: focal and principal point normalised by max(width, height), the principal
    point relative to the image centre, pixel centres at (u + 0.5) / size."""
    where = f"{source}: camera {name!r}"
    projection = camera.get("projection_type")
    if projection not in _OPENSFM_DISTORTION:
        raise InputError(f"{where}: projection_type {projection!r} is not supported; use one of {', '.join(_OPENSFM_DISTORTION)}")
    try:
        width, height = int(camera["width"]), int(camera["height"])
        size = max(width, height)
        fx = float(camera.get("focal_x", camera.get("focal")))
        fy = float(camera.get("focal_y", camera.get("focal")))
        return Intrinsics(
            width=width,
            height=height,
            fx=fx * size,
            fy=fy * size,
            cx=(width - 1) / 2.0 + float(camera.get("c_x", 0.0)) * size,
            cy=(height - 1) / 2.0 + float(camera.get("c_y", 0.0)) * size,
            **{key: float(camera.get(key, 0.0)) for key in _OPENSFM_DISTORTION[projection]},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{where}: needs width, height and focal (or focal_x, focal_y) numbers ({error})") from None


_YAML_TYPES = {"pinhole": (), "brown": ("k1", "k2", "p1", "p2", "k3"), "opencv": ("k1", "k2", "p1", "p2", "k3")}
_OPENCV_EXTRA = ("k4", "k5", "k6", "s1", "s2", "s3", "s4", "tx", "ty")


def _yaml_intrinsics(name: str, entry: dict, source: str) -> Intrinsics:
    """Orthority-style interior parameters: im_size [w, h]; focal_len (one or two values) in the
    units of sensor_size [w, h], or without sensor_size normalised by the image width; cx, cy
    principal point offsets from the image centre normalised by max(w, h); Brown coefficients."""
    where = f"{source}: camera {name!r}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a mapping of interior parameters (type, im_size, focal_len...)")
    kind = str(entry.get("type", "")).lower()
    if kind not in _YAML_TYPES:
        raise InputError(f"{where}: type {entry.get('type')!r} is not supported; use pinhole, brown or opencv")
    extra = [key for key in _OPENCV_EXTRA if entry.get(key) not in (None, 0, 0.0)]
    if extra:
        raise InputError(f"{where}: the coefficients {', '.join(extra)} of OpenCV's rational and thin-prism models are not supported; calibrate with k1, k2, k3, p1, p2")
    try:
        width, height = (int(v) for v in entry["im_size"])
        focal = np.broadcast_to(np.asarray(entry["focal_len"], dtype=float), (2,))
        if entry.get("sensor_size") is not None:
            sensor = np.asarray(entry["sensor_size"], dtype=float).reshape(2)
            fx, fy = focal * np.array([width, height]) / sensor
        else:
            fx, fy = focal * width
        size = max(width, height)
        return Intrinsics(
            width=width,
            height=height,
            fx=float(fx),
            fy=float(fy),
            cx=(width - 1) / 2.0 + float(entry.get("cx", 0.0)) * size,
            cy=(height - 1) / 2.0 + float(entry.get("cy", 0.0)) * size,
            **{key: float(entry.get(key, 0.0)) for key in _YAML_TYPES[kind]},
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{where}: needs im_size [width, height] and focal_len (with sensor_size, or normalised by the width) ({error})") from None


def _opensfm_camera_id(name: str) -> str:
    # OpenSfM prefixes its camera ids with a model version ("v2 "); ODM's tables drop it.
    return name[3:] if name.startswith("v2 ") else name


def read_interior(path: str | os.PathLike) -> dict[str, Intrinsics]:
    """Interior orientations by camera id, from an orthority-style YAML file (also the legacy
    simple-ortho `camera:` form) or from the cameras of an OpenSfM reconstruction.json /
    ODM cameras.json."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        document = _read_json(path)
        cameras = document[0].get("cameras") if isinstance(document, list) and document and isinstance(document[0], dict) else document
        if not isinstance(cameras, dict) or not cameras or not all(isinstance(v, dict) for v in cameras.values()):
            raise InputError(f"{path}: no cameras found; give an OpenSfM reconstruction.json or an ODM cameras.json")
        return {_opensfm_camera_id(name): _opensfm_intrinsics(name, camera, str(path)) for name, camera in cameras.items()}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InputError(f"{path}: cannot read it as YAML ({error}); give camera ids mapping to type, im_size, focal_len, sensor_size, cx, cy, k1...") from None
    if isinstance(document, dict) and isinstance(document.get("camera"), dict):  # legacy simple-ortho config.yaml
        legacy = document["camera"]
        document = {str(legacy.get("name", "camera")): legacy}
    if not isinstance(document, dict) or not document:
        raise InputError(f"{path}: expected camera ids mapping to interior parameters (type, im_size, focal_len...)")
    if "im_size" in document:  # one camera without an id
        document = {str(document.get("name", "camera")): document}
    return {str(name): _yaml_intrinsics(str(name), entry, str(path)) for name, entry in document.items()}


def _interiors(interior, source: str) -> dict[str, Intrinsics]:
    """{camera id: Intrinsics}; a lone Intrinsics serves every row under the id None."""
    if interior is None:
        raise InputError(f"{source}: this orientation table has no interior orientation; give the camera's interior parameters (YAML or reconstruction.json)")
    if isinstance(interior, Intrinsics):
        return {None: interior}
    if isinstance(interior, dict):
        return interior
    return read_interior(interior)


def _interior_for(interiors: dict, camera_id: str | None, where: str, interior) -> Intrinsics:
    interior_source = str(interior) if isinstance(interior, (str, os.PathLike)) else "the interior parameters"
    if None in interiors:
        return interiors[None]
    if camera_id:
        camera_id = _opensfm_camera_id(camera_id)
        if camera_id in interiors:
            return interiors[camera_id]
        raise InputError(f"{where}: unknown camera {camera_id!r}; the cameras known in {interior_source} are {', '.join(sorted(map(repr, interiors)))}")
    if len(interiors) == 1:
        return next(iter(interiors.values()))
    raise InputError(f"{where}: no camera column, and several cameras are defined in {interior_source}; add a 'camera' column naming one of them")


# --- Images -----------------------------------------------------------------------------

_IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".webp", ".bmp")


def _split_image_name(filename: str) -> tuple[str, str]:
    """(camera name, image file name): the name drops a known image suffix."""
    base = Path(filename.replace("\\", "/")).name
    stem, suffix = os.path.splitext(base)
    return (stem, base) if suffix.lower() in _IMAGE_SUFFIXES else (base, base)


def _image_path(filename: str, folder: Path) -> str:
    """The image's path in `folder`; a name without a suffix finds the image file of that stem."""
    name, base = _split_image_name(filename)
    candidate = folder / base
    if base == name and not candidate.is_file():
        matches = sorted(p for p in folder.glob(f"{glob.escape(name)}.*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if matches:
            candidate = matches[0]
    return os.path.normpath(candidate)


# --- OpenSfM ----------------------------------------------------------------------------


def opensfm_local_cameras(path: str | os.PathLike, image_dir: str | os.PathLike | None = None) -> tuple[list[FrameCamera], dict]:
    """The cameras of an OpenSfM reconstruction.json in the file's own frame (crs None), and the
    frame's origin {"latitude", "longitude", "altitude"} (its reference_lla)."""
    path = Path(path)
    document = _read_json(path)
    if not isinstance(document, list) or not document or not all(isinstance(r, dict) and "shots" in r for r in document):
        raise InputError(f"{path}: not an OpenSfM reconstruction (a list of reconstructions with cameras and shots)")
    folder = Path(image_dir) if image_dir is not None else _opensfm_image_dir(path)
    reference = None
    cameras = []
    for number, reconstruction in enumerate(document):
        lla = reconstruction.get("reference_lla")
        if not isinstance(lla, dict) or not {"latitude", "longitude"} <= set(lla):
            raise InputError(f"{path}: reconstruction {number + 1} has no reference_lla; export it from a georeferenced OpenSfM/ODM run")
        try:
            lla = {"latitude": float(lla["latitude"]), "longitude": float(lla["longitude"]), "altitude": float(lla.get("altitude", 0.0))}
        except (TypeError, ValueError):
            raise InputError(f"{path}: reconstruction {number + 1}: reference_lla's latitude, longitude and altitude must be numbers") from None
        if not all(math.isfinite(value) for value in lla.values()):
            raise InputError(f"{path}: reconstruction {number + 1}: reference_lla's latitude, longitude and altitude must be finite numbers")
        if reference is not None and lla != reference:
            raise InputError(f"{path}: its reconstructions have different reference_lla; give one reconstruction per file")
        reference = lla
        camera_entries, shots = reconstruction.get("cameras", {}), reconstruction["shots"]
        if not isinstance(camera_entries, dict) or not all(isinstance(c, dict) for c in camera_entries.values()):
            raise InputError(f"{path}: reconstruction {number + 1}: \"cameras\" must map camera ids to camera objects")
        if not isinstance(shots, dict):
            raise InputError(f"{path}: reconstruction {number + 1}: \"shots\" must map image names to shot objects")
        interiors = {name: _opensfm_intrinsics(name, camera, str(path)) for name, camera in camera_entries.items()}
        for shot_name, shot in shots.items():
            where = f"{path}: shot {shot_name!r}"
            if not isinstance(shot, dict):
                raise InputError(f"{where}: must be an object with camera, rotation and translation")
            if not isinstance(shot.get("camera"), str) or shot["camera"] not in interiors:
                raise InputError(f"{where}: unknown camera {shot.get('camera')!r}; the reconstruction's cameras are {', '.join(map(repr, interiors))}")
            try:
                rotation = cv2.Rodrigues(np.asarray(shot["rotation"], dtype=float).reshape(3, 1))[0]
                translation = np.asarray(shot["translation"], dtype=float).reshape(3)
            except (KeyError, TypeError, ValueError, cv2.error) as error:
                raise InputError(f"{where}: needs rotation and translation as 3 numbers each ({error})") from None
            metadata = {}
            if isinstance(shot.get("gps_position"), list) and len(shot["gps_position"]) == 3:
                metadata["gps_position"] = [float(v) for v in shot["gps_position"]]
            name, _ = _split_image_name(shot_name)
            cameras.append(
                FrameCamera(
                    name=name,
                    intrinsics=interiors[shot["camera"]],
                    center=-rotation.T @ translation,  # x_camera = R x + t
                    rotation=rotation,
                    image=_image_path(shot_name, folder),
                    metadata=metadata,
                )
            )
    _check_unique_names(cameras, path)
    return sorted(cameras, key=lambda c: c.name), reference


def _opensfm_image_dir(path: Path) -> Path:
    """ODM's layout keeps the images in ../images next to the opensfm/ folder."""
    images = path.parent.parent / "images"
    return images if images.is_dir() else path.parent


OPENSFM_FRAMES = ("auto", "topocentric", "utm-offset")


def _opensfm_frame(cameras: list[FrameCamera], reference: dict, utm: pyproj.CRS, offset: np.ndarray) -> str:
    """Which frame a reconstruction.json is in: OpenSfM's topocentric frame, or the UTM grid
    shifted by the UTM coordinates of reference_lla, as ODM rewrites it after georeferencing
    (`export_geocoords --reconstruction` with ODM's whole-metre offset).

    The shots' `gps_position` stay topocentric in both: the frame in which the camera centres
    lie nearest their GPS positions wins. Without GPS, an offset in whole metres betrays ODM.
    """
    with_gps = [c for c in cameras if "gps_position" in c.metadata]
    if with_gps:
        centers = np.array([c.center for c in with_gps])
        gps = np.array([c.metadata["gps_position"] for c in with_gps])
        to_utm = _chain(_topocentric_to_geographic(reference["longitude"], reference["latitude"], reference["altitude"]), _geographic_to(utm))
        off_topocentric = np.median(np.linalg.norm(centers - gps, axis=1))
        off_utm = np.median(np.linalg.norm(centers - (to_utm(gps) - offset), axis=1))
        return "utm-offset" if off_utm < off_topocentric else "topocentric"
    return "utm-offset" if np.allclose(offset[:2], np.round(offset[:2]), rtol=0, atol=1e-3) else "topocentric"


def read_opensfm(path: str | os.PathLike, crs=None, image_dir: str | os.PathLike | None = None, frame: str = "auto") -> list[FrameCamera]:
    """Cameras of an OpenSfM / ODM reconstruction.json in a projected world CRS.

    Shots carry an axis-angle `rotation` (world -> camera, OpenCV axes) and a `translation`
    with x_camera = R x + t. Their world frame is either
    - "topocentric": OpenSfM's east-north-up metres around `reference_lla` (WGS 84, ellipsoidal
      height). Centres go through pyproj (topocentric -> geographic -> `crs`), attitudes turn
      with the map grid (`local_pose_to_world`); or
    - "utm-offset": the UTM grid of reference_lla's zone minus the UTM coordinates of
      reference_lla, the form ODM leaves in opensfm/reconstruction.json once georeferenced.
    "auto" tells them apart (see `_opensfm_frame`); the frame used is in each camera's
    metadata["opensfm_frame"].

    Heights in the file are ellipsoidal (WGS 84). `crs` defaults to the UTM zone of
    reference_lla. A `crs` with a vertical datum (compound, e.g. "EPSG:2154+5720") gets
    altitudes through PROJ's geoid grid, and InputError names the grid when PROJ lacks it;
    a `crs` without one keeps the ellipsoidal heights and the cameras carry its 3D form
    (`crs.to_3d()`, e.g. "WGS 84 / UTM zone 51N" with an ellipsoidal height axis), so that
    the heights' datum stays known. Images are looked up in `image_dir`, by default ODM's
    ../images folder or else the file's folder.
    """
    path = Path(path)
    if frame not in OPENSFM_FRAMES:
        raise ValueError(f"frame must be one of {OPENSFM_FRAMES}, got {frame!r}")
    local_cameras, reference = opensfm_local_cameras(path, image_dir)
    utm = utm_crs_of(reference["longitude"], reference["latitude"])
    target = utm if crs is None else _projected(crs, str(path))
    offset = np.array([*_geographic_to(utm).transform(reference["longitude"], reference["latitude"]), 0.0])
    if frame == "auto":
        frame = _opensfm_frame(local_cameras, reference, utm, offset)
    if frame == "topocentric":
        transformer, world_crs = _ellipsoidal_to(GEOGRAPHIC_3D, target, str(path))
        to_world = _chain(_topocentric_to_geographic(reference["longitude"], reference["latitude"], reference["altitude"]), transformer)
    elif target == utm:
        to_world, world_crs = None, utm.to_3d()  # a shift: the attitudes are already on the grid
    else:
        transformer, world_crs = _ellipsoidal_to(utm.to_3d(), target, str(path))
        to_world = _chain(transformer)
    cameras = []
    for camera in local_cameras:
        try:
            if to_world is None:
                center, rotation = camera.center + offset, camera.rotation
            elif frame == "topocentric":
                center, rotation = local_pose_to_world(camera.center, camera.rotation, to_world)
            else:
                center, rotation = local_pose_to_world(camera.center + offset, camera.rotation, to_world)
        except ValueError as error:
            raise InputError(f"{path}: shot {camera.name!r}: {error} ({world_crs.name}); give a CRS that covers the cameras") from None
        metadata = {**camera.metadata, "opensfm_frame": frame}
        cameras.append(FrameCamera(camera.name, camera.intrinsics, center, rotation, world_crs, camera.image, metadata))
    return cameras


# --- Orientation tables (CSV) ------------------------------------------------------------

_LEGACY_FIELDS = ["filename", "x", "y", "z", "omega", "phi", "kappa"]
# Other names of the image column: Pix4D's "imageName", ODM's and orthority's variants.
_FILENAME_ALIASES = ("filename", "imagename", "image", "name", "photoid", "label")


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Field names (lower case) and (line number, row) of a delimited orientation table: comma,
    semicolon, tab or space separated, quoted with ' or ", with a header naming the fields (the
    image column as filename or one of its aliases: imageName, image, name, photoID, label) or
    without one in the legacy order filename x y z omega phi kappa [camera]."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it ({error})") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"{path}: the table is empty")
    try:
        dialect = csv.Sniffer().sniff("\n".join(line for _, line in lines[:20]), delimiters=",;\t ")
    except csv.Error:
        raise InputError(f"{path}: cannot tell its column separator; separate the columns with commas") from None
    dialect.skipinitialspace = True
    rows = [(number, [field.strip() for field in next(csv.reader([line], dialect))]) for number, line in lines]
    first = ["filename" if field.lower() in _FILENAME_ALIASES else field.lower() for field in rows[0][1]]
    if "filename" in first:
        fields, rows = first, rows[1:]
    elif len(rows[0][1]) > len(_LEGACY_FIELDS):
        fields = _LEGACY_FIELDS + ["camera"]
    else:
        fields = _LEGACY_FIELDS
    records = []
    for number, values in rows:
        if len(values) < len(fields):
            raise InputError(f"{path}: line {number} has {len(values)} values for the {len(fields)} columns {' '.join(fields)}")
        records.append((number, dict(zip(fields, values))))
    return fields, records


def _require_fields(path: Path, fields: list[str], needed: tuple[str, ...], form: str) -> None:
    missing = [field for field in needed if field not in fields]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; a {form} table has the columns {' '.join(needed)} (and optionally camera)")


def _numbers(path: Path, number: int, row: dict[str, str], keys: tuple[str, ...]) -> list[float]:
    try:
        values = [float(row[key]) for key in keys]
    except ValueError:
        raise InputError(f"{path}: line {number}: {', '.join(keys)} must be numbers, got {' '.join(row[k] for k in keys)}") from None
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"{path}: line {number}: {', '.join(keys)} must be finite numbers")
    return values


def _table_crs(path: Path, crs) -> pyproj.CRS:
    if crs is not None:
        return _projected(crs, str(path))
    prj = path.with_suffix(".prj")
    if prj.is_file():
        try:
            text = prj.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{prj}: cannot read it as UTF-8 text ({error}); save the CRS's WKT as UTF-8") from None
        return _projected(text, str(prj))
    raise InputError(f"{path}: no CRS for its x y z; put the CRS (WKT or PROJ string) in {prj.name} next to it, or pass the CRS (EPSG:code)")


def read_opk_csv(path: str | os.PathLike, interior, crs=None, image_dir: str | os.PathLike | None = None) -> list[FrameCamera]:
    """Cameras of an x y z omega phi kappa table (angles in degrees, the classical aerial
    convention of `rotation_from_opk`, about the axes of the world CRS).

    `interior`: an orthority-style YAML file, an OpenSfM reconstruction.json / cameras.json, or
    a {camera id: Intrinsics} mapping; a `camera` column picks the interior of each row. The
    CRS is `crs`, else the WKT/PROJ text of a sibling .prj file. Images are looked up in
    `image_dir` (default: the table's folder).
    """
    path = Path(path)
    fields, rows = _read_table(path)
    _require_fields(path, fields, ("filename", "x", "y", "z", "omega", "phi", "kappa"), "x y z omega phi kappa")
    world_crs = _table_crs(path, crs)
    interiors = _interiors(interior, str(path))
    folder = Path(image_dir) if image_dir is not None else path.parent
    cameras = []
    for number, row in rows:
        where = f"{path}: line {number}"
        x, y, z, omega, phi, kappa = _numbers(path, number, row, ("x", "y", "z", "omega", "phi", "kappa"))
        name, _ = _split_image_name(row["filename"])
        cameras.append(
            FrameCamera(
                name=name,
                intrinsics=_interior_for(interiors, row.get("camera"), where, interior),
                center=np.array([x, y, z]),
                rotation=rotation_from_opk(omega, phi, kappa),
                crs=world_crs,
                image=_image_path(row["filename"], folder),
            )
        )
    _check_unique_names(cameras, path)
    return sorted(cameras, key=lambda c: c.name)


def read_lla_rpy_csv(path: str | os.PathLike, interior, crs=None, image_dir: str | os.PathLike | None = None) -> list[FrameCamera]:
    """Cameras of a latitude longitude altitude roll pitch yaw table (degrees; WGS 84 with
    ellipsoidal altitude, EPSG:4979; angles as in `rotation_from_rpy`, relative to the local
    north-east-down frame at each camera) in the projected `crs` (default: the UTM zone of
    the cameras' mean position). Each pose is set in the local east-north-up frame at its
    camera, then carried into `crs` by `local_pose_to_world`. Heights as in `read_opensfm`:
    converted with the geoid grid when `crs` has a vertical datum (InputError naming the
    grid when PROJ lacks it), else kept ellipsoidal, the cameras in `crs.to_3d()`."""
    path = Path(path)
    fields, rows = _read_table(path)
    _require_fields(path, fields, ("filename", "latitude", "longitude", "altitude", "roll", "pitch", "yaw"), "latitude longitude altitude roll pitch yaw")
    interiors = _interiors(interior, str(path))
    values = [(number, row, _numbers(path, number, row, ("latitude", "longitude", "altitude", "roll", "pitch", "yaw"))) for number, row in rows]
    for number, _, (latitude, longitude, *_) in values:
        if not (-90.0 <= latitude <= 90.0 and -180.0 <= longitude <= 360.0):
            raise InputError(f"{path}: line {number}: latitude {latitude}, longitude {longitude} are not geographic degrees")
    if crs is None:
        mean = np.mean([v[:2] for _, _, v in values], axis=0)
        target = utm_crs_of(float(mean[1]), float(mean[0]))
    else:
        target = _projected(crs, str(path))
    to_world_crs, world_crs = _ellipsoidal_to(GEOGRAPHIC_3D, target, str(path))
    folder = Path(image_dir) if image_dir is not None else path.parent
    cameras = []
    for number, row, (latitude, longitude, altitude, roll, pitch, yaw) in values:
        where = f"{path}: line {number}"
        to_world = _chain(_topocentric_to_geographic(longitude, latitude, altitude), to_world_crs)
        try:
            center, rotation = local_pose_to_world(np.zeros(3), rotation_from_rpy(roll, pitch, yaw), to_world)
        except ValueError as error:
            raise InputError(f"{where}: {error} ({world_crs.name}); give a CRS that covers the cameras") from None
        name, _ = _split_image_name(row["filename"])
        cameras.append(
            FrameCamera(
                name=name,
                intrinsics=_interior_for(interiors, row.get("camera"), where, interior),
                center=center,
                rotation=rotation,
                crs=world_crs,
                image=_image_path(row["filename"], folder),
            )
        )
    _check_unique_names(cameras, path)
    return sorted(cameras, key=lambda c: c.name)


def read_opk_geojson(path: str | os.PathLike, interior, crs=None, image_dir: str | os.PathLike | None = None) -> list[FrameCamera]:
    """Cameras of an orthority exterior-parameter GeoJSON: one point feature per image whose
    properties hold filename, camera, xyz (in the collection's `world_crs`) and opk (radians)."""
    path = Path(path)
    document = _read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("features", []), list):
        raise InputError(f"{path}: not a GeoJSON FeatureCollection; give an orthority exterior-parameter file (an object with world_crs and a list of features)")
    if crs is None and not document.get("world_crs"):
        raise InputError(f"{path}: no world_crs; add \"world_crs\": \"EPSG:code\" to the collection or pass the CRS")
    world_crs = _projected(crs if crs is not None else document["world_crs"], str(path))
    interiors = _interiors(interior, str(path))
    folder = Path(image_dir) if image_dir is not None else path.parent
    cameras = []
    for number, feature in enumerate(document.get("features") or [], start=1):
        where = f"{path}: feature {number}"
        properties = feature.get("properties") if isinstance(feature, dict) else None
        if not isinstance(properties, dict) or not {"filename", "xyz", "opk"} <= set(properties):
            raise InputError(f"{where}: its properties need filename, xyz and opk")
        try:
            center = np.asarray(properties["xyz"], dtype=float).reshape(3)
            omega, phi, kappa = np.degrees(np.asarray(properties["opk"], dtype=float).reshape(3))
        except (TypeError, ValueError):
            raise InputError(f"{where}: xyz and opk must be 3 numbers each") from None
        name, _ = _split_image_name(str(properties["filename"]))
        cameras.append(
            FrameCamera(
                name=name,
                intrinsics=_interior_for(interiors, properties.get("camera"), where, interior),
                center=center,
                rotation=rotation_from_opk(omega, phi, kappa),
                crs=world_crs,
                image=_image_path(str(properties["filename"]), folder),
            )
        )
    if not cameras:
        raise InputError(f"{path}: no features; give one point feature per image")
    _check_unique_names(cameras, path)
    return sorted(cameras, key=lambda c: c.name)


CAMERA_FORMS = (
    "the project's camera JSON (twin-cameras)",
    "an OpenSfM/ODM reconstruction.json",
    "an orthority exterior GeoJSON (with interior parameters)",
    "a filename x y z omega phi kappa table (with interior parameters and a CRS)",
    "a filename latitude longitude altitude roll pitch yaw table (with interior parameters)",
)


def load_cameras(
    path: str | os.PathLike, interior=None, crs=None, image_dir: str | os.PathLike | None = None, into_crs=None
) -> list[FrameCamera]:
    """Cameras from any supported orientation file, the reader chosen by the file's content.

    `interior` (a YAML file, a reconstruction.json / cameras.json, or {id: Intrinsics}) is
    needed by the tables and the GeoJSON. `crs` is the world CRS: the CRS of the x y z of
    the tables and the GeoJSON (tables without a .prj need it); the CRS OpenSfM and latitude
    longitude altitude cameras are carried into, their ellipsoidal heights converted when it
    has a vertical datum (see `read_opensfm`); ignored for the project's camera JSON, whose
    file declares its CRS. `into_crs`, when given, is where the forms that convert (OpenSfM,
    latitude longitude altitude) carry their cameras, whatever `crs` says; the forms in
    projected coordinates keep theirs (`crs` or their own declaration), so that a caller that
    wants one CRS can pass it here without relabelling another file's coordinates.
    `image_dir` is where the images are (each reader has a default). InputError when the
    file holds no camera.
    """
    cameras = _load_cameras(Path(path), interior, crs, image_dir, into_crs if into_crs is not None else crs)
    if not cameras:
        raise InputError(f"{path}: holds no cameras; give one orientation per image")
    return cameras


def _load_cameras(path: Path, interior, crs, image_dir, converted_crs) -> list[FrameCamera]:
    if not path.is_file():
        raise InputError(f"{path}: camera file not found")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        raise InputError(f"{path}: this holds interior parameters; give it as the interior orientation of an exterior orientation file ({'; '.join(CAMERA_FORMS)})")
    if suffix in (".json", ".geojson"):
        document = _read_json(path)
        if isinstance(document, dict) and document.get("type") == CAMERAS_JSON_TYPE:
            return read_cameras_json(path, image_dir=image_dir)
        if isinstance(document, list):
            return read_opensfm(path, crs=converted_crs, image_dir=image_dir)
        if isinstance(document, dict) and document.get("type") == "FeatureCollection":
            return read_opk_geojson(path, interior, crs=crs, image_dir=image_dir)
        raise InputError(f"{path}: not a known camera file; give {'; '.join(CAMERA_FORMS)}")
    fields, _ = _read_table(path)
    if {"latitude", "longitude", "altitude"} <= set(fields) or {"roll", "pitch", "yaw"} <= set(fields):
        return read_lla_rpy_csv(path, interior, crs=converted_crs, image_dir=image_dir)
    return read_opk_csv(path, interior, crs=crs, image_dir=image_dir)
