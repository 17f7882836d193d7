"""The official CityGML 2.0 and 3.0 XML schemas, loaded offline for validating outputs.

Schema URLs under http://schemas.opengis.net/ map onto the local copies in the shared
validators folder; any other remote URL is refused, so validation never touches the network.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from lxml import etree

from twin.gml import CITYGML2, CITYGML3, SCHEMAS

_LOCAL_LAYOUT = (
    (re.compile(rf"^{re.escape(SCHEMAS)}/citygml/3\.0/(.+)$"), "citygml/3.0/{0}"),
    (re.compile(rf"^{re.escape(SCHEMAS)}/citygml/(?:[a-zA-Z]+/)?2\.0/(.+)$"), "citygml/2.0/{0}"),
    (re.compile(rf"^{re.escape(SCHEMAS)}/gml/3\.2\.1/(.+)$"), "gml/3.2/{0}"),
    (re.compile(rf"^{re.escape(SCHEMAS)}/gml/3\.1\.1/base/(.+)$"), "gml/3.1/base/{0}"),
    (re.compile(r"^https?://www\.w3\.org/(?:2001|2009/01)/xml\.xsd$"), "xml/xml.xsd"),
    (re.compile(r"^https?://www\.w3\.org/1999/xlink\.xsd$"), "xlink/xlink.xsd"),
)


class _OfflineResolver(etree.Resolver):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self._root = root

    def resolve(self, url, public_id, context):
        if url.startswith(("http://", "https://")):
            for pattern, local in _LOCAL_LAYOUT:
                match = pattern.match(url)
                if match:
                    return self.resolve_filename(str(self._root / local.format(*match.groups())), context)
            raise ValueError(f"refusing to fetch {url}: schemas are read from the local copies only")
        return None


def _driver(dialect) -> bytes:
    """A schema importing every module a twin file uses, so substitution groups resolve."""
    imports = "".join(
        f'<xs:import namespace="{namespace}" schemaLocation="{location}"/>'
        for namespace, location in dialect.schema_locations
    )
    return (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:twin:driver" '
        f'elementFormDefault="qualified">{imports}</xs:schema>'
    ).encode()


@functools.lru_cache(maxsize=4)
def citygml_schema(citygml_dir: Path, version: str) -> etree.XMLSchema:
    dialect = {"3.0": CITYGML3, "2.0": CITYGML2}[version]
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    parser.resolvers.add(_OfflineResolver(citygml_dir))
    driver = etree.fromstring(_driver(dialect), parser, base_url=str(citygml_dir / "driver.xsd"))
    return etree.XMLSchema(driver)


def schema_errors(schema: etree.XMLSchema, path: Path) -> list[str]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    document = etree.parse(str(path), parser)
    if schema.validate(document):
        return []
    return [f"line {e.line}: {e.message}" for e in list(schema.error_log)[:20]]
