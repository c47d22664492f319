"""Read the rows of one data file, exactly as the file holds them, or refuse it.

Each reader takes an opened binary stream (a local file, or an fsspec file at any URL)
and the name its messages give it, and yields ``(location, row)``: ``location`` is
``file:line`` (the physical line a row starts on) for JSONL and CSV, ``file[index]``
for a JSON array and Parquet. Nothing is dropped, merged, padded or converted: a CSV
row with another number of fields than its header, an unclosed quote, bytes that are
not valid in the file's encoding, or a value
nested too deeply to store is a :class:`DataSourceError` naming the file and the line.

Values keep their types: integers of any size, Parquet's bytes, decimals and non-finite
floats included (the store keeps them through :mod:`buttermilk.values`).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from buttermilk.errors import DataSourceError
from buttermilk.flows.location_errors import is_transport_failure
from buttermilk.flows.parquet import iter_parquet
from buttermilk.flows.text_codecs import (
    UTF8_HINT,
    check_start,
    drop_bom,
    encoding_error,
    is_utf8,
    text_encoding,
)
from buttermilk.values import MAX_DEPTH, depth_exceeds

Row = tuple[str, Any]  # (location, the parsed row)

# orjson reads integers outside [-2**63, 2**64) as floats; any run of 19 digits may be
# one, and then the standard library's parser (exact integers) reads the text again.
_LONG_NUMBER = re.compile(rb"\d{19}")
_LONG_NUMBER_TEXT = re.compile(r"\d{19}")

csv.field_size_limit(sys.maxsize)  # no cap: a document for an LLM may be megabytes


def _open_error(path: str, exc: OSError) -> DataSourceError:
    return DataSourceError(f"{path}: cannot read it ({exc.strerror or exc})")


def _text(fh: IO[bytes], encoding: str, newline: str) -> io.TextIOWrapper:
    """``fh`` decoded as ``encoding``; the wrapper leaves ``fh`` open when it goes."""

    class _Kept(io.TextIOWrapper):
        def __del__(self) -> None:  # closing the wrapper would close fh
            if not self.closed:
                self.detach()

    return _Kept(fh, encoding=encoding, newline=newline)


# -- JSON --------------------------------------------------------------------------------


class _FloatOverflow(Exception):
    """Raised (inside the standard library's parser) for a number no float can hold."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _FloatOverflow(text)
    return value


def _exact_json(text: bytes | str, where: str) -> Any:
    """The standard library's parser: exact integers of any length up to what Python reads
    (orjson reads integers beyond 64 bits as floats, and none beyond ~309 digits)."""
    try:
        return json.loads(text, parse_float=_finite_float)
    except _FloatOverflow as exc:
        number = str(exc)
        shown = number if len(number) <= 30 else f"{number[:20]}...({len(number)} characters)"
        raise DataSourceError(
            f"{where}: the number {shown} is too large for a float (it would become "
            "infinity); write it as text"
        ) from None
    except RecursionError:
        raise DataSourceError(
            f"{where}: nested more than {MAX_DEPTH} levels deep, more than the store keeps"
        ) from None
    except ValueError as exc:  # JSONDecodeError, or an integer too long for int()
        if "digits" in str(exc) and not isinstance(exc, json.JSONDecodeError):
            raise DataSourceError(
                f"{where}: an integer has more than {sys.get_int_max_str_digits()} digits, "
                "more than Python reads; write it as text"
            ) from None
        raise DataSourceError(f"{where}: not valid JSON ({exc})") from None


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
        if "number is infinity" not in str(exc):
            raise DataSourceError(f"{where}: not valid JSON ({exc})") from None
        value = _exact_json(text, where)  # an integer of hundreds of digits (or 1e999)
    else:
        if isinstance(text, bytes):
            long_number = _LONG_NUMBER.search(text) is not None
        else:
            long_number = _LONG_NUMBER_TEXT.search(text) is not None
        if long_number:
            value = _exact_json(text, where)
    if isinstance(text, bytes):
        brackets = text.count(b"[") + text.count(b"{")
    else:
        brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH and depth_exceeds(value):
        raise DataSourceError(
            f"{where}: nested more than {MAX_DEPTH} levels deep, more than the store keeps"
        )
    return value


def iter_jsonl(fh: IO[bytes], path: str, encoding: str = "utf-8") -> Iterator[Row]:
    """One JSON object per line; blank lines are skipped; a byte-order mark is dropped."""
    check_start(fh, path, encoding)
    lines: Iterator[tuple[int, bytes | str]]
    if is_utf8(encoding):
        lines = enumerate(fh, start=1)
    else:  # JSON Lines end with \n only
        lines = enumerate(_text(fh, encoding, "\n"), start=1)
    try:
        for lineno, line in lines:
            if lineno == 1:
                if isinstance(line, bytes):
                    line = line.removeprefix(codecs.BOM_UTF8)
                else:
                    line = drop_bom(line, encoding)
            if line.strip():
                where = f"{path}:{lineno}"
                yield where, parse_json(line, where)
    except UnicodeDecodeError as exc:
        raise encoding_error(fh, path, encoding, exc, universal=False) from None


def iter_json(fh: IO[bytes], path: str, encoding: str = "utf-8") -> Iterator[Row]:
    """A JSON array of objects; a byte-order mark is dropped."""
    check_start(fh, path, encoding)
    try:
        raw = fh.read()
    except OSError as exc:
        if is_transport_failure(exc):
            raise  # the server's failure, not the file's: Location.open names it
        raise _open_error(path, exc) from None
    try:  # decoded first, so that a bad byte is reported with its line
        text = drop_bom(raw.decode(text_encoding(encoding)), encoding)
    except UnicodeDecodeError as exc:
        raise encoding_error(fh, path, encoding, exc, universal=False) from None
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


def iter_csv(
    fh: IO[bytes], path: str, encoding: str = "utf-8", delimiter: str = ","
) -> Iterator[Row]:
    """A header line, then one row per record (quoted fields may span lines).

    Parsed strictly: every row has exactly the header's number of fields, quotes are
    closed, and fields may be of any length. Every value is text, as written.
    """
    check_start(fh, path, encoding)
    text = _text(fh, text_encoding(encoding), "")
    start = 1  # the physical line the row being read starts on
    reader = csv.reader(_without_bom(text, encoding), delimiter=delimiter, strict=True)
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
        raise encoding_error(fh, path, encoding, exc, universal=True) from None


def _without_bom(lines: Iterable[str], encoding: str) -> Iterator[str]:
    first = True
    for line in lines:
        yield drop_bom(line, encoding) if first else line
        first = False


def _check_header(path: str, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataSourceError(
                f"{path}:1: the header names column {name!r} twice; column names must be unique"
            )
        seen.add(name)


READERS = {"jsonl": iter_jsonl, "json": iter_json, "csv": iter_csv, "parquet": iter_parquet}
