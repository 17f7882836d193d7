"""CRS handling: every dataset's horizontal and vertical reference, made explicit.

Heights are the classic failure of city models: a point cloud whose header names only
a horizontal CRS still has heights in some vertical datum. Lambert-93 (EPSG:2154) data
of mainland France, IGN LiDAR HD among them, uses NGF-IGN69 (EPSG:5720); that is the
only datum assumed, and the assumption is reported. Any other horizontal-only CRS needs
`--vertical-crs`.
"""

from __future__ import annotations

import pyproj

from twin.errors import InputError

LAMBERT_93 = 2154
NGF_IGN69 = 5720
OGC_EPSG_URI = "https://www.opengis.net/def/crs/EPSG/0/{code}"


def resolve_compound_crs(
    crs: pyproj.CRS, vertical_crs: str | None, source: str
) -> tuple[pyproj.CRS, list[str]]:
    """The compound CRS of a dataset, with notes on anything assumed."""
    vertical = _parse(vertical_crs, "--vertical-crs") if vertical_crs else None
    if vertical is not None and not vertical.is_vertical:
        raise InputError(f"--vertical-crs {vertical_crs}: {vertical.name} is not a vertical CRS (e.g. EPSG:5720)")
    if crs.is_compound:
        if vertical is not None and not crs.sub_crs_list[1].equals(vertical):
            raise InputError(
                f"{source}: the header's heights are in {crs.sub_crs_list[1].name} but --vertical-crs says "
                f"{vertical.name}; drop --vertical-crs or fix the file"
            )
        return crs, []
    if not crs.is_projected:
        raise InputError(
            f"{source}: {crs.name} is not a projected CRS; reproject to a metric CRS such as Lambert-93 (EPSG:2154)"
        )
    if vertical is not None:
        return compound(crs, vertical), []
    if crs.to_epsg() == LAMBERT_93:
        note = (
            f"{source}: the CRS gives no vertical datum; heights taken as NGF-IGN69 (EPSG:{NGF_IGN69}), "
            "the datum of Lambert-93 data of mainland France; pass --vertical-crs if that is wrong"
        )
        return compound(crs, pyproj.CRS.from_epsg(NGF_IGN69)), [note]
    raise InputError(
        f"{source}: the CRS {crs.name} gives no vertical datum for the heights; "
        "pass it with --vertical-crs (e.g. EPSG:5720 for NGF-IGN69)"
    )


def compound(horizontal: pyproj.CRS, vertical: pyproj.CRS) -> pyproj.CRS:
    """The compound CRS, as its EPSG definition where one exists (2154 + 5720 = 5698)."""
    built = pyproj.crs.CompoundCRS(f"{horizontal.name} + {vertical.name}", [horizontal, vertical])
    code = built.to_epsg(min_confidence=90)
    return pyproj.CRS.from_epsg(code) if code else built


def horizontal_part(crs: pyproj.CRS) -> pyproj.CRS:
    return crs.sub_crs_list[0] if crs.is_compound else crs


def crs_uri(crs: pyproj.CRS) -> str:
    """The OGC URI of a CRS; compound CRSs without a single EPSG code get a compound URI."""
    code = crs.to_epsg(min_confidence=90)
    if code:
        return OGC_EPSG_URI.format(code=code)
    if crs.is_compound:
        parts = [horizontal_part(crs), crs.sub_crs_list[1]]
        codes = [part.to_epsg(min_confidence=90) for part in parts]
        if all(codes):
            uris = "&".join(f"{i}={OGC_EPSG_URI.format(code=c)}" for i, c in enumerate(codes, start=1))
            return f"https://www.opengis.net/def/crs-compound?{uris}"
    raise InputError(f"{crs.name} has no EPSG code, so the outputs could not name it; use an EPSG CRS")


def _parse(value: str, option: str) -> pyproj.CRS:
    try:
        return pyproj.CRS(value)
    except pyproj.exceptions.CRSError as error:
        raise InputError(f"{option} {value}: not a CRS pyproj knows ({error})") from None
