"""Read records from a flow's data sources: map each row to record fields and an id.

Each kind of source is its own module giving ``(location, row)`` pairs: ``type: file``
(:mod:`.source_file`), ``text`` (:mod:`.source_text`), ``sql`` (:mod:`.source_sql`),
``huggingface`` (:mod:`.source_hf`) and ``batch`` (:mod:`.source_batch`). This module
keeps the rows a source's ``where`` asks for, and maps them to records.

Rows are streamed, and a row becomes a :class:`Record` only when asked (``to_record``),
so planning can look at every id of a large file while keeping few records in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from buttermilk import values
from buttermilk.errors import DataSourceError, SourceUnavailableError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import (
    BatchSource,
    DataSource,
    FileSource,
    HuggingFaceSource,
    SourceBase,
    SqlSource,
    TextSource,
)
from buttermilk.flows.where import WhereTally, closed_after, kept_rows
from buttermilk.records import Record

if TYPE_CHECKING:
    from buttermilk.store.store import Store

# Without a column mapping, a record's id comes from "record_id" or "id", its content from
# "content" or "text" (see iter_source); a row with neither an id nor a content field is
# refused (a CSV with another delimiter reads as one such column).
_DELIMITERS = (";", "\t", "|", ",")


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Which source field feeds each record field, for one source."""

    record_id: str | None
    content: str | None
    uri: str | None
    ground_truth: str | None
    id_prefix: str

    @classmethod
    def for_source(cls, source: SourceBase) -> FieldMap:
        cols = source.columns
        return cls(
            record_id=cols.get("record_id"),
            content=cols.get("content"),
            uri=cols.get("uri"),
            ground_truth=cols.get("ground_truth"),
            id_prefix=source.id_prefix,
        )


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One raw row of a source, with the record id it maps to."""

    record_id: str
    fields: dict[str, Any]
    content_field: str | None
    uri_field: str | None
    truth_field: str | None
    id_field: str | None
    location: str

    def to_record(self) -> Record:
        used = {self.id_field, self.content_field, self.uri_field, self.truth_field}
        return Record(
            record_id=self.record_id,
            content=self.fields.get(self.content_field) if self.content_field else None,
            metadata={k: v for k, v in self.fields.items() if k not in used},
            uri=self.fields.get(self.uri_field) if self.uri_field else None,
            ground_truth=self.fields.get(self.truth_field) if self.truth_field else None,
        )


def content_hash(value: Any) -> str:
    """A stable id for a record without one: a hash of its content."""
    data = value.encode() if isinstance(value, str) else values.dumps(value, sort_keys=True)
    return hashlib.sha256(data).hexdigest()[:16]


MAX_ID_LENGTH = 512  # the store's record_id column


def _record_id(raw: Any, field: str, location: str) -> str:
    """A record id as text: from text or an integer, exactly as written (a decimal without
    a fractional part, as a SQL ``numeric(40,0)`` column gives, is the integer it is)."""
    if raw is None or raw == "":
        raise DataSourceError(f"{location}: empty record id in field {field!r}")
    if isinstance(raw, Decimal) and raw.is_finite() and raw == raw.to_integral_value():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise DataSourceError(
            f"{location}: the record id in field {field!r} is {type(raw).__name__} "
            f"{str(raw)[:40]!r}; ids must be text or integers (map another column to record_id)"
        )
    record_id = str(raw)
    if "\x00" in record_id:  # PostgreSQL's text columns cannot hold it: refused everywhere
        raise DataSourceError(
            f"{location}: the record id in field {field!r} holds a NUL character; ids cannot"
        )
    return record_id


def _check_length(record_id: str, prefix: str, field: str | None, location: str) -> str:
    """``record_id`` (the prefix included) when it fits the store's column."""
    if len(record_id) > MAX_ID_LENGTH:
        what = f"the record id in field {field!r}" if field else "the record id (a hash)"
        with_prefix = f" with its id_prefix ({len(prefix):,})" if prefix else ""
        raise DataSourceError(
            f"{location}: {what} is {len(record_id):,} characters long{with_prefix}; "
            f"at most {MAX_ID_LENGTH}"
        )
    return record_id


def _no_content(location: str, fmt: str, row: dict[str, Any]) -> DataSourceError:
    """One line for a row without a content field, guessing a CSV's delimiter."""
    names = ", ".join(repr(name) for name in list(row)[:10])
    more = ", ..." if len(row) > 10 else ""
    hint = "map the content field: columns: {content: NAME}"
    if fmt == "csv":
        location = location.rsplit(":", 1)[0] + ":1"  # the header names the fields
        header = ",".join(row)
        counts = {d: header.count(d) for d in _DELIMITERS}
        likely = max(counts, key=lambda d: counts[d])
        if counts[likely] and (len(row) == 1 or likely != ","):
            if likely == "\t":
                guess = 'is it tab-separated? set delimiter: "\\t"'
            else:
                guess = f"is it '{likely}'-separated? set delimiter: '{likely}'"
            hint = f"{guess}; or {hint}"
    return DataSourceError(
        f"{location}: no field 'content' or 'text' (fields: {names}{more}); {hint}"
    )


def _check_uri(raw: Any, field: str, location: str) -> None:
    """A uri is text (or absent): any other value is refused, never turned into text."""
    if raw is not None and not isinstance(raw, str):
        raise DataSourceError(
            f"{location}: the uri in field {field!r} is {type(raw).__name__} {repr(raw)[:40]}; "
            "a uri must be text (map another column to uri, or make it text)"
        )


def _row_groups(
    name: str, source: DataSource, store: Store | None
) -> Iterator[tuple[str, Iterator[Row]]]:
    """The source's rows, in groups (a file each) with the format they were read as."""
    if isinstance(source, FileSource):
        from buttermilk.flows import source_file

        return source_file.row_groups(name, source)
    if isinstance(source, TextSource):
        from buttermilk.flows import source_text

        return source_text.row_groups(name, source)
    if isinstance(source, SqlSource):
        from buttermilk.flows import source_sql

        return source_sql.row_groups(name, source)
    if isinstance(source, HuggingFaceSource):
        from buttermilk.flows import source_hf

        return source_hf.row_groups(name, source)
    from buttermilk.flows import source_batch

    return source_batch.row_groups(name, source, store)


def check_source(name: str, source: DataSource, store: Store | None = None) -> None:
    """Fail early, before reading rows, where a source's kind can tell: no file, an
    unknown format, a missing package, an unknown batch."""
    if isinstance(source, FileSource):
        from buttermilk.flows import source_file

        source_file.check(name, source)
    elif isinstance(source, TextSource):
        from buttermilk.flows.locations import resolve

        resolve(name, source.path, source.timeout)
    elif isinstance(source, HuggingFaceSource):
        from buttermilk.flows import source_hf

        source_hf.check(name, source)
    elif isinstance(source, BatchSource):
        from buttermilk.flows import source_batch

        source_batch.check(name, source, store)


def iter_source(name: str, source: DataSource, store: Store | None = None) -> Iterator[SourceRow]:
    """Stream the rows of one source (those its ``where`` keeps), with their record ids.

    ``store``: where a ``type: batch`` source reads the earlier batch. Raises
    DataSourceError for a row that cannot be a record, and for a ``where`` field that no
    row holds (once every row was read).
    """
    fields = FieldMap.for_source(source)
    tally = WhereTally()
    filtered = bool(source.where) and not isinstance(source, BatchSource)
    try:
        for fmt, group in _row_groups(name, source, store):
            rows = kept_rows(source, group, tally) if filtered else group
            # Closed when left early (a planned sample that needs no more rows): a file,
            # cursor or connection is let go now, not when the garbage collector comes.
            with closed_after(group), closed_after(rows):
                yield from _mapped(rows, fields, fmt)
    except (DataSourceError, SourceUnavailableError) as exc:
        raise _named(name, exc) from None
    missing = sorted(set(source.where) - tally.found) if filtered else []
    if missing:
        raise DataSourceError(
            f"data source {name!r}: where: no row has the field {missing[0]!r} "
            "(a field name, or NAME.KEY into an object)"
        )
    if filtered and tally.read and not tally.kept:
        raise DataSourceError(
            f"data source {name!r}: where {dict(source.where)!r} kept none of its "
            f"{tally.read:,} rows (values are compared with their type: the text '1' is not "
            "the number 1, and a CSV field is text)"
        )


def _named(
    name: str, exc: DataSourceError | SourceUnavailableError
) -> DataSourceError | SourceUnavailableError:
    """``exc`` named by its source (``data source 'NAME': PATH:LINE: ...``), unless its
    message already starts so."""
    prefix = f"data source {name!r}"
    if str(exc).startswith(prefix):
        return exc
    return type(exc)(f"{prefix}: {exc}")


def _mapped(rows: Iterator[Row], fields: FieldMap, fmt: str) -> Iterator[SourceRow]:
    """Each row with its record id and the fields that feed the record."""
    for location, row in rows:
        if not isinstance(row, dict):
            raise DataSourceError(f"{location}: expected an object, got {type(row).__name__}")
        # Written out rather than looped: this runs for every row of every source.
        id_field = fields.record_id
        if id_field is None:
            id_field = "record_id" if "record_id" in row else ("id" if "id" in row else None)
        elif id_field not in row:
            raise DataSourceError(f"{location}: no field {id_field!r} (mapped in columns)")
        content_field = fields.content
        if content_field is None:
            if "content" in row:
                content_field = "content"
            elif "text" in row:
                content_field = "text"
            elif id_field is None:  # nothing in the row says what it is
                raise _no_content(location, fmt, row)
        elif content_field not in row:
            raise DataSourceError(f"{location}: no field {content_field!r} (mapped in columns)")
        if id_field is not None:
            record_id = _record_id(row[id_field], id_field, location)
        else:
            record_id = content_hash(row.get(content_field) if content_field else row)
        if fields.id_prefix:
            record_id = fields.id_prefix + record_id
        uri_field = fields.uri or ("uri" if "uri" in row else None)
        if uri_field is not None:
            _check_uri(row.get(uri_field), uri_field, location)
        yield SourceRow(
            record_id=_check_length(record_id, fields.id_prefix, id_field, location),
            fields=row,
            content_field=content_field,
            uri_field=uri_field,
            truth_field=fields.ground_truth or ("ground_truth" if "ground_truth" in row else None),
            id_field=id_field,
            location=location,
        )


def iter_flow_rows(flow: FlowConfig, store: Store | None = None) -> Iterator[SourceRow]:
    """Stream the rows of every source of a flow, in config order."""
    if not flow.data:
        raise DataSourceError(f"flow {flow.name!r} has no data sources (its data: is empty)")
    for name, source in flow.data.items():
        yield from iter_source(name, source, store)


def check_sources(flow: FlowConfig, store: Store | None = None) -> None:
    """Fail early, before reading rows, when a source has no file, an unknown format, a
    missing package or an unknown batch."""
    if not flow.data:
        raise DataSourceError(f"flow {flow.name!r} has no data sources (its data: is empty)")
    for name, source in flow.data.items():
        check_source(name, source, store)
