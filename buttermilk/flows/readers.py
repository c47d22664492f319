"""Read the rows of one data file, exactly as the file holds them, or refuse it.

Each reader yields ``(location, row)``: ``location`` is ``file:line`` (the physical line a
row starts on) for JSONL and CSV, ``file[index]`` for a JSON array and Parquet. Nothing
is dropped, merged, padded or converted: a CSV row with another number of fields than its
header, an unclosed quote, bytes that are not valid in the file's encoding, or a value
nested too deeply to store is a :class:`DataSourceError` naming the file and the line.

Values keep their types: integers of any size, Parquet's bytes, decimals and non-finite
floats included (the store keeps them through :mod:`buttermilk.values`).
"""

from __future__ import annotations

import codecs
import csv
import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from buttermilk.errors import DataSourceError
from buttermilk.values import MAX_DEPTH, NonFiniteFloat, depth_exceeds

Row = tuple[str, Any]  # (location, the parsed row)

# orjson reads integers outside [-2**63, 2**64) as floats; any run of 19 digits may be
# one, and then the standard library's parser (exact integers) reads the text again.
_LONG_NUMBER = re.compile(rb"\d{19}")
_LONG_NUMBER_TEXT = re.compile(r"\d{19}")

csv.field_size_limit(sys.maxsize)  # no cap: a document for an LLM may be megabytes


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def _text_encoding(encoding: str) -> str:
    """The codec to open a text file with: UTF-8 drops a byte-order mark (Excel writes one)."""
    return "utf-8-sig" if _is_utf8(encoding) else encoding


def _open_error(path: Path, exc: OSError) -> DataSourceError:
    return DataSourceError(f"{path}: cannot read it ({exc.strerror or exc})")


# -- encodings ---------------------------------------------------------------------------


def _bad_byte_line(path: Path, encoding: str, universal: bool) -> tuple[int, int] | None:
    """The line (1-based) of the first byte sequence not valid in ``encoding``, and that
    byte; None when lines cannot be told apart in the raw bytes (UTF-16, UTF-32).

    ``universal``: a lone carriage return ends a line too (as the csv module counts).
    """
    if "\n".encode(encoding) != b"\n":
        return None
    decoder = codecs.getincrementaldecoder(_text_encoding(encoding))()
    lineno = 1
    with path.open("rb") as fh:
        for piece in fh:  # up to and with each b"\n"
            try:
                decoder.decode(piece)
            except UnicodeDecodeError as exc:
                before = piece[: exc.start]
                return lineno + (_lone_returns(before) if universal else 0), piece[exc.start]
            lineno += 1 + (_lone_returns(piece) if universal else 0)
    return None


def _lone_returns(piece: bytes) -> int:
    """Carriage returns not followed by a line feed (each one ends a line)."""
    return piece.count(b"\r") - piece.count(b"\r\n")


def encoding_error(
    path: Path, encoding: str, exc: UnicodeDecodeError, *, universal: bool
) -> DataSourceError:
    """One line naming the file, the line and the byte that ``encoding`` cannot read."""
    name = "UTF-8" if _is_utf8(encoding) else encoding
    found = _bad_byte_line(path, encoding, universal)
    if found is None:
        where, byte = f"{path} (near byte {exc.start})", exc.object[exc.start]
    else:
        where, byte = f"{path}:{found[0]}", found[1]
    hint = UTF8_HINT if _is_utf8(encoding) else "check the data source's encoding:"
    return DataSourceError(f"{where}: not valid {name} (byte 0x{byte:02x}); {hint}")


# -- JSON --------------------------------------------------------------------------------


UTF8_HINT = "set encoding: in the data source (e.g. encoding: cp1252) or save the file as UTF-8"


def parse_json(text: bytes | str, where: str) -> Any:
    """One JSON text, integers exact and nesting within what the store keeps."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if isinstance(text, bytes) and not text.isascii():
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as bad:
                byte = text[bad.start]
                raise DataSourceError(
                    f"{where}: not valid UTF-8 (byte 0x{byte:02x}); {UTF8_HINT}"
                ) from None
        raise DataSourceError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(text, bytes):
        brackets = text.count(b"[") + text.count(b"{")
        long_number = _LONG_NUMBER.search(text) is not None
    else:
        brackets = text.count("[") + text.count("{")
        long_number = _LONG_NUMBER_TEXT.search(text) is not None
    if brackets > MAX_DEPTH and depth_exceeds(value):
        raise DataSourceError(
            f"{where}: nested more than {MAX_DEPTH} levels deep, more than the store keeps"
        )
    return json.loads(text) if long_number else value  # the standard parser: exact integers


def iter_jsonl(path: Path, encoding: str = "utf-8") -> Iterator[Row]:
    """One JSON object per line; blank lines are skipped; a byte-order mark is dropped."""
    lines: Iterator[tuple[int, bytes | str]]
    try:
        if _is_utf8(encoding):
            fh: Any = path.open("rb")
            lines = enumerate(fh, start=1)
        else:
            fh = path.open(encoding=encoding, newline="\n")  # JSON Lines end with \n only
            lines = enumerate(fh, start=1)
    except OSError as exc:
        raise _open_error(path, exc) from None
    with fh:
        try:
            for lineno, line in lines:
                if lineno == 1:
                    line = _drop_bom(line)
                if line.strip():
                    where = f"{path}:{lineno}"
                    yield where, parse_json(line, where)
        except UnicodeDecodeError as exc:
            raise encoding_error(path, encoding, exc, universal=False) from None


def _drop_bom(text: bytes | str) -> bytes | str:
    if isinstance(text, bytes):
        return text.removeprefix(codecs.BOM_UTF8)
    return text.removeprefix("\ufeff")


def iter_json(path: Path, encoding: str = "utf-8") -> Iterator[Row]:
    """A JSON array of objects; a byte-order mark is dropped."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise _open_error(path, exc) from None
    try:
        text = _drop_bom(raw if _is_utf8(encoding) else raw.decode(encoding))
    except UnicodeDecodeError as exc:
        raise encoding_error(path, encoding, exc, universal=False) from None
    data = parse_json(text, str(path))
    if not isinstance(data, list):
        raise DataSourceError(f"{path}: a JSON source must hold an array of objects")
    for index, row in enumerate(data):
        yield f"{path}[{index}]", row


# -- CSV ---------------------------------------------------------------------------------


def _csv_problem(message: str) -> str:
    if message.startswith("unexpected end of data"):
        return "a quoted field is never closed (its quote opens on this line)"
    return message


def iter_csv(path: Path, encoding: str = "utf-8") -> Iterator[Row]:
    """A header line, then one row per record (quoted fields may span lines).

    Parsed strictly: every row has exactly the header's number of fields, quotes are
    closed, and fields may be of any length. Every value is text, as written.
    """
    try:
        fh = path.open(encoding=_text_encoding(encoding), newline="")
    except OSError as exc:
        raise _open_error(path, exc) from None
    start = 1  # the physical line the row being read starts on
    with fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return
            _check_header(path, header)
            start = reader.line_num + 1
            for row in reader:
                where = f"{path}:{start}"
                start = reader.line_num + 1
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    hint = "an unquoted comma?" if len(row) > len(header) else "a missing field?"
                    raise DataSourceError(
                        f"{where}: {len(row)} fields, the header has {len(header)} ({hint})"
                    )
                yield where, dict(zip(header, row, strict=True))
        except csv.Error as exc:
            raise DataSourceError(f"{path}:{start}: {_csv_problem(str(exc))}") from None
        except UnicodeDecodeError as exc:
            raise encoding_error(path, encoding, exc, universal=True) from None


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataSourceError(
                f"{path}:1: the header names column {name!r} twice; column names must be unique"
            )
        seen.add(name)


# -- Parquet -----------------------------------------------------------------------------

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


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats marked, so that JSON keeps them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else NonFiniteFloat(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def iter_parquet(path: Path, encoding: str = "utf-8") -> Iterator[Row]:
    """Rows of a Parquet file; ``encoding`` does not apply (Parquet text is UTF-8)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except OSError as exc:
        raise _open_error(path, exc) from None
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise DataSourceError(f"{path}: not a readable Parquet file ({exc})") from None
    import pyarrow.types as pat

    schema = parquet.schema_arrow
    floats = False
    for field in schema:
        for leaf in _leaf_types(field.type):
            if not _exact(leaf):
                raise DataSourceError(
                    f"{path}: column {field.name!r} holds {leaf} values, which a record "
                    "cannot keep exactly; cast the column (to numbers or text) first"
                )
            floats = floats or pat.is_floating(leaf)
    names = schema.names
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise DataSourceError(f"{path}: column names must be unique; repeated: {twice}")
    index = 0
    batches = parquet.iter_batches(batch_size=ROW_BATCH)
    while True:
        try:
            chunk = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise DataSourceError(
                f"{path}[{index}]: cannot read the rows from here ({exc})"
            ) from None
        if chunk is None:
            return
        columns = []
        for name, column in zip(names, chunk.columns, strict=True):
            try:
                columns.append(column.to_pylist())
            except (pa.ArrowException, ValueError) as exc:
                raise DataSourceError(
                    f"{path}[{index}]: column {name!r} cannot be read exactly ({exc})"
                ) from None
        for values in zip(*columns, strict=True):
            row = dict(zip(names, values, strict=True))
            yield f"{path}[{index}]", _finite(row) if floats else row
            index += 1


READERS = {"jsonl": iter_jsonl, "json": iter_json, "csv": iter_csv, "parquet": iter_parquet}
