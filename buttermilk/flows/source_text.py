"""``type: text``: one record per file of a glob (a local path or any fsspec URL).

A row is ``{record_id: PATH, content: TEXT, uri: NAME}``: the path relative to the glob's
fixed folder (``corpus/**/*.txt`` -> ``a/b.txt``), the file's whole text, and its path
or URL. Bytes the encoding cannot read are refused, naming the file and the byte offset;
a byte-order mark of the encoding is dropped.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

from buttermilk.errors import DataSourceError
from buttermilk.flows.locations import Location, resolve
from buttermilk.flows.readers import Row, check_start, drop_bom
from buttermilk.flows.source_models import TextSource


def row_groups(name: str, source: TextSource) -> Iterator[tuple[str, Iterator[Row]]]:
    """One group: every file of the source, a row each, in path order."""
    yield "text", _rows(resolve(name, source.path, source.timeout), source.encoding)


def _rows(locations: list[Location], encoding: str) -> Iterator[Row]:
    for location in locations:
        yield (
            location.name,
            {
                "record_id": location.relative,
                "content": read_text(location, encoding),
                "uri": location.name,
            },
        )


def read_text(location: Location, encoding: str) -> str:
    """The whole file as text; DataSourceError naming the file and the first bad byte."""
    with location.open() as fh:
        check_start(fh, location.name, encoding)
        try:
            raw = fh.read()
        except OSError as exc:
            raise DataSourceError(f"{location.name}: cannot read it ({exc})") from None
    try:
        text = raw.decode("utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        raise DataSourceError(
            f"{location.name}: not valid {encoding} at byte offset {exc.start} "
            f"(byte 0x{raw[exc.start]:02x}); set encoding: in the data source"
        ) from None
    return drop_bom(text, encoding)
