"""``type: text``: one record per file of a glob (a local path or any fsspec URL).

A row is ``{record_id: PATH, content: TEXT, uri: NAME}``: the path relative to the glob's
fixed folder (``corpus/**/*.txt`` -> ``a/b.txt``), the file's whole text, and its path
or URL. Bytes the encoding cannot read are refused, naming the file and the line; a
byte-order mark of the encoding is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

from buttermilk.flows.locations import Location, resolve
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import TextSource
from buttermilk.flows.text_codecs import check_start, drop_bom, encoding_error, text_encoding


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
    """The whole file as text. Raises DataSourceError naming the file and the line of the
    first byte ``encoding`` cannot read (``PATH:LINE: not valid ...``)."""
    with location.open() as fh:
        check_start(fh, location.name, encoding)
        raw = fh.read()  # a failure to read is named by Location.open
        try:
            text = raw.decode(text_encoding(encoding))
        except UnicodeDecodeError as exc:
            raise encoding_error(fh, location.name, encoding, exc, universal=True) from None
    return drop_bom(text, encoding)
