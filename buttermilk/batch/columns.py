"""Export rows as flat columns, without losing or merging a value.

Nested objects become dotted columns (``outputs.vader.compound``). Lists, empty objects
and objects with keys that are not text are one cell holding their JSON. Two different
keys that would make the same column (a key ``"a.b"`` beside a key ``b`` inside ``a``) are
refused (:class:`ColumnClashError`): one column would hold both.

A column holding one type of value keeps it (CSV: text that reads back as that type;
Parquet: a column of that type). A column whose values are of several types (``"1"`` in
one row and ``1`` in another) holds every value as its JSON text instead, so that each
reads back as what it was; the one exception is integers with floats, which stay numbers
(Parquet: ``double``, when every integer is exact in one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from buttermilk import values
from buttermilk.errors import UsageError

NESTED = frozenset({"outputs", "timings", "metadata", "axes"})  # flattened into dotted columns
EXACT_FLOAT_INTS = 2**53  # integers a float64 holds exactly


class ColumnClashError(UsageError):
    """Raised when two different keys of a batch's results would become one column."""


KeyPath = tuple[str, ...]


def flatten(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, KeyPath]]:
    """``row`` as flat columns, and the keys that lead to each column.

    Nested objects become dotted keys; every other value (lists and empty objects
    included) is kept as it is, for a cell of its own. A top-level ``outputs``, ``timings``
    or ``metadata`` that is null (a job without a result) gives no column.
    ColumnClashError when two of the row's keys make one column.
    """
    flat: dict[str, Any] = {}
    paths: dict[str, KeyPath] = {}
    stack: list[tuple[KeyPath, Any]] = [
        ((key,), value)
        for key, value in reversed(row.items())
        if not (value is None and key in NESTED)  # the job's status says why it has none
    ]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            stack.extend(((*path, key), item) for key, item in reversed(value.items()))
            continue
        name = ".".join(path)
        if name in paths:
            raise _clash(name, paths[name], path, row)
        flat[name] = value
        paths[name] = path
    return flat, paths


def _describe(path: KeyPath) -> str:
    return path[0] + "".join(f"[{key!r}]" for key in path[1:])


def _clash(name: str, first: KeyPath, second: KeyPath, row: dict[str, Any]) -> ColumnClashError:
    return ColumnClashError(
        f"cannot flatten the results into columns: column {name!r} would hold both "
        f"{_describe(first)} and {_describe(second)} (record {row.get('record_id')!r}); "
        "export to .jsonl, which keeps them apart"
    )


@dataclass
class Column:
    """What one flattened column holds: its value types, its integers' range, and whether
    it holds both empty text and null (which CSV cannot tell apart)."""

    path: KeyPath
    kinds: set[type] = field(default_factory=set)
    low: int = 0
    high: int = 0
    filled: int = 0
    empty_text: bool = False

    def add(self, value: Any) -> None:
        if value is None:
            return
        self.filled += 1
        kind = float if isinstance(value, float) else type(value)  # NonFiniteFloat too
        self.kinds.add(kind)
        if kind is int:
            self.low, self.high = min(self.low, value), max(self.high, value)
        elif kind is str and not value:
            self.empty_text = True

    @property
    def numbers(self) -> bool:
        """Integers and floats only, every integer exact as a float."""
        exact = self.low >= -EXACT_FLOAT_INTS and self.high <= EXACT_FLOAT_INTS
        return self.kinds == {int, float} and exact

    def as_json(self, rows: int, *, csv: bool) -> bool:
        """Whether the column holds each value's JSON text (see the module's doc)."""
        if len(self.kinds) > 1:
            return not (csv and self.kinds == {int, float}) and not self.numbers
        if self.kinds & {list, dict}:
            return True
        return csv and self.empty_text and self.filled < rows  # "" and null, both empty


class Columns:
    """Every column of an export, in order of first appearance, gathered row by row."""

    def __init__(self) -> None:
        self.found: dict[str, Column] = {}
        self.rows = 0

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Take one row (as exported); returns it flattened. ColumnClashError when one of
        its columns was made by other keys before (in this row or an earlier one)."""
        flat, paths = flatten(row)
        self.rows += 1
        for name, value in flat.items():
            column = self.found.get(name)
            if column is None:
                column = self.found[name] = Column(paths[name])
            elif column.path != paths[name]:
                raise _clash(name, column.path, paths[name], row)
            column.add(value)
        return flat


def text_cell(value: Any, as_json: bool) -> Any:
    """A value as a text cell: JSON text in a JSON column, else text that reads back as
    the column's type (``true``/``false``, a decimal's own digits, bytes as their tag)."""
    if value is None:
        return None
    if as_json or isinstance(value, bytes | list | dict):
        return values.dumps_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    return value
