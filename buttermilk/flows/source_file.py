"""``type: file``: the rows of JSONL, JSON, CSV and Parquet files at a path, glob or URL,
each file read by :mod:`buttermilk.flows.readers` from a binary stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

from buttermilk.errors import DataSourceError
from buttermilk.flows.locations import Location, resolve
from buttermilk.flows.parquet import iter_parquet
from buttermilk.flows.readers import Row, iter_csv, iter_json, iter_jsonl
from buttermilk.flows.source_models import FileFormat, FileSource

EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def file_format(name: str, source: FileSource, location: Location) -> FileFormat:
    """The source's format, or the one its file's extension names."""
    if source.format is not None:
        return source.format
    fmt = EXTENSIONS.get(PurePosixPath(location.path).suffix.lower())
    if fmt is None:
        allowed = ", ".join(sorted(EXTENSIONS))
        raise DataSourceError(
            f"data source {name!r}: cannot tell the format of {location.name!r} from its "
            f"extension (known: {allowed}); set format: jsonl|json|csv|parquet"
        )
    return fmt


def check(name: str, source: FileSource) -> None:
    """Fail before any reading when the source has no file or an unknown format."""
    for location in resolve(name, source.path, source.timeout):
        file_format(name, source, location)


def row_groups(name: str, source: FileSource) -> Iterator[tuple[str, Iterator[Row]]]:
    """Per file: its format and its rows (read while the file is open)."""
    for location in resolve(name, source.path, source.timeout):
        fmt = file_format(name, source, location)
        yield fmt, _rows(location, fmt, source)


def _rows(location: Location, fmt: FileFormat, source: FileSource) -> Iterator[Row]:
    with location.open() as fh:
        if fmt == "csv":
            yield from iter_csv(fh, location.name, source.encoding, source.delimiter)
        elif fmt == "parquet":
            yield from iter_parquet(fh, location.name, source.encoding)
        elif fmt == "json":
            yield from iter_json(fh, location.name, source.encoding)
        else:
            yield from iter_jsonl(fh, location.name, source.encoding)
