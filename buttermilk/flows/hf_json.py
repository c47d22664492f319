"""Integers the ``json`` builder of ``datasets`` would read as floats: refused, named.

The builder reads JSON through Arrow, which types a column of numbers as float when any
of its values is not an integer (``1.5``) or does not fit 64 bits; an integer beyond
2**53 in such a column comes out as another number (``9007199254740993`` as
``9007199254740992.0``). A ``type: file`` source keeps it exact; here it is refused.

Before the rows are read, the source's local JSON files are scanned for integers beyond
2**53 (a line is only parsed when it holds a run of 16 digits; JSON strings cannot span
lines, so a line is always read from outside a string). While the rows are read, a float
equal to one of those integers (past 2**53, a float cannot tell it from its neighbours)
is refused, naming the file, line and field. Files at URLs are not scanned.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

from buttermilk.errors import DataSourceError
from buttermilk.flows.hf_local import saved_kind
from buttermilk.flows.source_models import HuggingFaceSource

EXACT_FLOAT_INTS = 2**53  # every integer up to this is exact as a float
_DIGITS = re.compile(rb"\d{16}")  # |n| > 2**53 has at least 16 digits
# A JSON string (skipped whole, so that digits inside it are not numbers), or an integer
# of 16 digits or more that is not part of a float (no '.', exponent, or letter around).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|(?<![\w.+-])(-?\d{16,})(?![\w.])')
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")

Candidates = dict[float, list[tuple[int, str]]]  # float(n) -> [(n, "file:line")]


def _files(source: HuggingFaceSource) -> list[str]:
    """The local JSON files a json-builder source (or a local folder of JSON files) reads."""
    if source.path == "json":
        given = source.data_files or []
        patterns = [given] if isinstance(given, str) else list(given)
        found: list[str] = []
        for pattern in patterns:
            if "://" in pattern:
                continue
            path = os.path.expanduser(pattern)
            matched = glob.glob(path, recursive=True) if glob.has_magic(path) else [path]
            found.extend(sorted(p for p in matched if os.path.isfile(p)))
        return found
    folder = os.path.expanduser(source.path)
    if saved_kind(folder) is not None:  # Arrow files, typed when they were written
        return []
    if source.data_files is None and os.path.isdir(folder):  # the library picks its files
        matched = glob.glob(os.path.join(folder, "**", "*"), recursive=True)
        return sorted(p for p in matched if p.endswith(_JSON_SUFFIXES) and os.path.isfile(p))
    return []


def scan(paths: list[str]) -> Candidates:
    """Every integer beyond 2**53 (in magnitude) in the files, by its float value."""
    found: Candidates = {}
    for path in paths:
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if _DIGITS.search(line) is None:
                    continue
                for match in _TOKEN.finditer(line):
                    digits = match.group(1)
                    if digits is None or len(digits) > 300:  # a string, or past any float
                        continue
                    number = int(digits)
                    if abs(number) > EXACT_FLOAT_INTS:
                        found.setdefault(float(number), []).append((number, f"{path}:{lineno}"))
    return found


def _floats(value: Any, path: str) -> Iterator[tuple[str, float]]:
    """Every float of ``value`` beyond 2**53, with its field path (``a.b``, ``a[2]``)."""
    if isinstance(value, float):
        if math.isfinite(value) and abs(value) >= EXACT_FLOAT_INTS:
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _floats(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _floats(item, f"{path}[{index}]")


def checker(where: str, source: HuggingFaceSource) -> Callable[[dict[str, Any]], None] | None:
    """A check of each row for an integer the builder turned into a float, or None when
    the source's local JSON files hold no integer beyond 2**53 (nothing to check).
    The check raises DataSourceError naming the file, the line and the field."""
    candidates = scan(_files(source))
    if not candidates:
        return None

    def check(row: dict[str, Any]) -> None:
        for field, value in _floats(row, ""):
            found = candidates.get(value)
            if found:  # exact or not, an integer read as a float past 2**53 is not kept
                number, location = found[0]
                raise DataSourceError(
                    f"{where}: {location}: the integer {number} in field {field!r} would "
                    f"become {value!r} (the json builder reads its column as floats, "
                    "exact only up to 2**53); read the file with type: file, which "
                    "keeps integers exact, or write the number as text"
                )

    return check
