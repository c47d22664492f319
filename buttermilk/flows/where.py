"""A source's ``where``: keep the rows whose fields equal a value (or one of a list), and
the small helpers every kind of source shares (a field at a dotted path, closing a row
iterator left early)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import DataSource

MISSING: Any = object()
T = TypeVar("T")


@contextlib.contextmanager
def closed_after(rows: Iterator[T]) -> Iterator[Iterator[T]]:
    """``rows``, closed on leaving the block when it is a generator (its file, cursor or
    connection let go at once, even when it was not read to its end)."""
    try:
        yield rows
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


def field_at(row: dict[str, Any], path: str) -> Any:
    """The value at ``path`` (a field, or a dotted path into nested objects), or MISSING."""
    if path in row:
        return row[path]
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value


def same(value: Any, wanted: Any) -> bool:
    """Equal as the source holds them: ``True`` is not ``1``, ``"1"`` is not ``1``."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return type(value) is type(wanted) and value == wanted
    return bool(value == wanted)


def matches(value: Any, wanted: Any) -> bool:
    """``value`` equals ``wanted``, or one of its values when ``wanted`` is a list."""
    if isinstance(wanted, list):
        return any(same(value, one) for one in wanted)
    return same(value, wanted)


@dataclass
class WhereTally:
    """What a source's ``where`` saw: the where fields some row has, rows read and kept."""

    found: set[str] = field(default_factory=set)
    read: int = 0
    kept: int = 0


def kept_rows(source: DataSource, rows: Iterator[Row], tally: WhereTally) -> Iterator[Row]:
    """The rows ``source.where`` keeps, counted in ``tally``."""
    where = source.where
    found = tally.found
    for location, row in rows:
        tally.read += 1
        keep = True
        for key, wanted in where.items():
            value = field_at(row, key) if isinstance(row, dict) else MISSING
            if value is MISSING:
                keep = False
                continue
            found.add(key)
            keep = keep and matches(value, wanted)
        if keep:
            tally.kept += 1
            yield location, row
