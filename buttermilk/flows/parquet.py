"""Read the rows of a Parquet file exactly, or refuse the column that cannot be.

Values keep their Arrow types as Python values: integers of any width, bytes, decimals,
non-finite floats (marked so that JSON keeps them). Dates and times become ISO 8601 text
downstream; nanosecond timestamps and times, which Python's ``datetime`` cannot hold, are
read as that ISO text here, every digit kept, with or without pandas installed. A date
outside Python's years 1 to 9999 is refused naming the file, row and column.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from typing import IO, Any

from buttermilk.errors import DataSourceError
from buttermilk.flows.location_errors import is_transport_failure
from buttermilk.values import NonFiniteFloat

Row = tuple[str, Any]  # (location, the parsed row)
ROW_BATCH = 10_000

_EXACT_KINDS = (
    "is_null",
    "is_boolean",
    "is_integer",
    "is_floating",
    "is_decimal",
    "is_string",
    "is_large_string",
    "is_binary",
    "is_large_binary",
    "is_fixed_size_binary",
    "is_date",
    "is_time",
    "is_timestamp",
)


def _leaf_types(arrow_type: Any) -> Iterator[Any]:
    """The scalar types inside an Arrow type (lists, structs, maps and dictionaries opened)."""
    import pyarrow.types as pat

    if pat.is_dictionary(arrow_type):
        yield from _leaf_types(arrow_type.value_type)
    elif pat.is_struct(arrow_type):
        for index in range(arrow_type.num_fields):
            yield from _leaf_types(arrow_type.field(index).type)
    elif pat.is_map(arrow_type):
        yield from _leaf_types(arrow_type.key_type)
        yield from _leaf_types(arrow_type.item_type)
    elif (
        pat.is_list(arrow_type)
        or pat.is_large_list(arrow_type)
        or pat.is_fixed_size_list(arrow_type)
    ):
        yield from _leaf_types(arrow_type.value_type)
    else:
        yield arrow_type


def _exact(arrow_type: Any) -> bool:
    import pyarrow.types as pat

    return any(getattr(pat, kind)(arrow_type) for kind in _EXACT_KINDS)


def _nanoseconds(arrow_type: Any) -> bool:
    """A timestamp or time in nanoseconds: more digits than ``datetime`` keeps."""
    import pyarrow.types as pat

    temporal = bool(pat.is_timestamp(arrow_type) or pat.is_time64(arrow_type))
    return temporal and arrow_type.unit == "ns"


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats marked, so that JSON keeps them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else NonFiniteFloat(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _iso_with_nanoseconds(value: dt.datetime | dt.time, nanos: int) -> str:
    """``value.isoformat()`` with three more digits of fraction when ``nanos`` has any."""
    if not nanos:
        return value.isoformat()  # as a microsecond column gives it
    text = value.isoformat(timespec="microseconds")
    cut = text.index(".") + 7
    return f"{text[:cut]}{nanos:03d}{text[cut:]}"


def nanosecond_texts(column: Any) -> list[str | None]:
    """A nanosecond timestamp or time column as ISO 8601 text, every digit kept.

    Arrow turns the whole microseconds into ``datetime``/``time`` (time zone included); the
    last three digits are added to its text.
    """
    import pyarrow as pa

    arrow_type = column.type
    ints: list[int | None] = column.cast(pa.int64()).to_pylist()
    micros = [None if v is None else v // 1000 for v in ints]
    if pa.types.is_timestamp(arrow_type):
        coarse = pa.array(micros, pa.timestamp("us", tz=arrow_type.tz)).to_pylist()
    else:
        coarse = pa.array(micros, pa.time64("us")).to_pylist()
    return [
        None if v is None else _iso_with_nanoseconds(c, v % 1000)
        for v, c in zip(ints, coarse, strict=True)
    ]


def _check_schema(path: str, schema: Any) -> bool:
    """Refuse columns without an exact Python form; whether any column holds floats."""
    import pyarrow.types as pat

    floats = False
    for field in schema:
        for leaf in _leaf_types(field.type):
            if not _exact(leaf):
                raise DataSourceError(
                    f"{path}: column {field.name!r} holds {leaf} values, which a record "
                    "cannot keep exactly; cast the column (to numbers or text) first"
                )
            if _nanoseconds(leaf) and not _nanoseconds(field.type):
                raise DataSourceError(
                    f"{path}: column {field.name!r} holds {leaf} values inside {field.type}, "
                    "which a record cannot keep exactly; cast them to text first"
                )
            floats = floats or pat.is_floating(leaf)
    names = schema.names
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataSourceError(f"{path}: column names must be unique; repeated: {twice}")
    return floats


def _column_values(path: str, name: str, column: Any, first: int) -> list[Any]:
    """The Python values of one column of a batch whose first row is row ``first``."""
    import pyarrow as pa

    if _nanoseconds(column.type):
        return nanosecond_texts(column)
    try:
        return list(column.to_pylist())
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        offset, problem = _first_unreadable(column, exc)
    if isinstance(problem, OverflowError):
        reason = "a date outside the years 1 to 9999, which Python cannot hold"
    else:
        reason = str(problem)
    raise DataSourceError(
        f"{path}[{first + offset}]: column {name!r} cannot be read exactly ({reason}); "
        "cast the column to text first"
    )


def _first_unreadable(column: Any, error: Exception) -> tuple[int, Exception]:
    """The offset of the first value of ``column`` Python cannot hold, and why."""
    import pyarrow as pa

    for offset in range(len(column)):
        try:
            column[offset].as_py()
        except (pa.ArrowException, ValueError, OverflowError) as exc:
            return offset, exc
    return 0, error


def iter_parquet(fh: IO[bytes], path: str, encoding: str = "utf-8") -> Iterator[Row]:
    """Rows of a Parquet file opened as ``fh`` (named ``path`` in messages); ``encoding``
    does not apply (Parquet text is UTF-8)."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(fh)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        if is_transport_failure(exc):
            raise  # the server's failure, not the file's: its opener names it
        if isinstance(exc, OSError):
            raise DataSourceError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        raise DataSourceError(f"{path}: not a readable Parquet file ({exc})") from None
    # One thread: a decoding pool's threads each keep memory (60 MB more at 1M rows), and
    # batches this small decode no faster with them.
    batches = parquet.iter_batches(batch_size=ROW_BATCH, use_threads=False)
    yield from iter_arrow(path, parquet.schema_arrow, batches)


def iter_arrow(path: str, schema: Any, batches: Iterator[Any] | Iterable[Any]) -> Iterator[Row]:
    """Rows of Arrow record batches of ``schema`` (named ``path[index]``), every value
    exact or refused: Parquet files, and a Hugging Face dataset's Arrow tables."""
    import pyarrow as pa

    floats = _check_schema(path, schema)
    names = schema.names
    index = 0
    batches = iter(batches)
    while True:
        try:
            chunk = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            if is_transport_failure(exc):
                raise
            raise DataSourceError(
                f"{path}[{index}]: cannot read the rows from here ({exc})"
            ) from None
        if chunk is None:
            return
        columns = [_column_values(path, name, chunk.column(name), index) for name in names]
        for values in zip(*columns, strict=True):
            row = dict(zip(names, values, strict=True))
            yield f"{path}[{index}]", _finite(row) if floats else row
            index += 1
