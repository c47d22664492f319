"""Exact JSON for every value a source or an agent can hold.

Records, results and messages are stored and sent as JSON. JSON holds text, booleans, null,
finite numbers, lists and objects; what a source may also hold is written as a one-key object
(a *tag*) and read back as the Python value it was:

=====================================  ====================================================
``{"$bytes": "<base64>"}``              :class:`bytes` (a Parquet binary column, an image)
``{"$int": "<decimal digits>"}``        an integer outside ``[-2**63, 2**64)`` (JSON readers
                                        and orjson would turn it into a float)
``{"$float": "nan" | "inf" | "-inf"}``  a float that is not finite (read back as
                                        :class:`NonFiniteFloat`)
``{"$decimal": "<text>"}``              :class:`decimal.Decimal`
``{"$nul": ["a", "b"]}``                a string holding NUL characters, split at each of them
                                        (PostgreSQL's ``jsonb`` refuses ``\\u0000``)
``{"$items": [[key, value], ...]}``    an object with a key holding NUL characters
``{"$object": {...}}``                  an object of the data whose one key is one of these
                                        tags, so that it is never mistaken for one
=====================================  ====================================================

Dates and times are written as ISO 8601 text (Python's ``isoformat``, which keeps a UTC
offset of seconds that orjson would round) and read back as text.
The common case costs one orjson call: tags are looked for only when the JSON text holds
``{"$`` (or ``\\u0000``) or orjson refuses a value.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
from decimal import Decimal
from typing import Any

import orjson

TAGS = frozenset({"$bytes", "$int", "$float", "$decimal", "$nul", "$items", "$object"})
MAX_DEPTH = 200
"""Deepest nesting of lists and objects a value may have (orjson writes at most 254 levels,
and the store adds a few around a record)."""
JSON_DEPTH = 254  # orjson writes no deeper
INT_RANGE = (-(2**63), 2**64)  # what orjson reads and writes as an integer
_MARK = b'{"$'
_MARK_TEXT = '{"$'
_NUL = b"\\u0000"
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


class NonFiniteFloat(float):
    """A NaN or infinite float read from a source: a float in every way, but kept exact
    through JSON (orjson would write it as null)."""

    __slots__ = ()


class TooDeepError(ValueError):
    """Raised when a value is nested deeper than :data:`MAX_DEPTH` levels."""


def _default(value: Any) -> Any:
    """What orjson cannot write itself (it calls this for any other type)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, float):  # subclasses: NonFiniteFloat, numpy.float64
        return {"$float": repr(float(value))} if not math.isfinite(value) else float(value)
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.date | dt.time):  # datetime is a date; pandas' Timestamp one too
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} values cannot be kept as JSON")


def _tag_walk(value: Any, depth: int = 0) -> Any:
    """The slow path: a copy of ``value`` with every tag written out, for what orjson's
    fast path cannot see (big integers, NUL characters, objects that look like tags)."""
    if depth > JSON_DEPTH:
        raise TooDeepError(f"nested too deeply to keep as JSON (at most {JSON_DEPTH} levels)")
    if isinstance(value, str):
        return {"$nul": value.split("\x00")} if "\x00" in value else value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        low, high = INT_RANGE
        return value if low <= value < high else {"$int": str(value)}
    if isinstance(value, dict):
        if any(isinstance(key, str) and "\x00" in key for key in value):
            pairs = [[_tag_walk(k, depth + 2), _tag_walk(v, depth + 2)] for k, v in value.items()]
            return {"$items": pairs}
        copied = {key: _tag_walk(item, depth + 1) for key, item in value.items()}
        if len(copied) == 1 and next(iter(copied)) in TAGS:
            return {"$object": copied}
        return copied
    if isinstance(value, list | tuple):
        return [_tag_walk(item, depth + 1) for item in value]
    return value  # floats, bytes, Decimal, dates: orjson and _default write them


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """``value`` as JSON bytes, with tags where JSON cannot hold a value exactly.

    Raises TooDeepError for values nested deeper than :data:`MAX_DEPTH`, and TypeError for
    a value of a type that has no exact JSON form (a set, an arbitrary object).
    """
    options = _OPTIONS | orjson.OPT_SORT_KEYS if sort_keys else _OPTIONS
    try:
        encoded = orjson.dumps(value, default=_default, option=options)
    except orjson.JSONEncodeError as exc:
        reason = str(exc)
        if "Recursion limit" in reason:
            raise TooDeepError(
                f"nested too deeply to keep as JSON (at most {JSON_DEPTH} levels)"
            ) from None
        if "Integer exceeds" not in reason:
            raise TypeError(reason) from None
        encoded = b""
    if not encoded or _MARK in encoded or _NUL in encoded:
        encoded = orjson.dumps(_tag_walk(value), default=_default, option=options)
    return encoded


def dumps_text(value: Any) -> str:
    """:func:`dumps` as a str (for text columns and SQL drivers)."""
    return dumps(value).decode()


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        key, inner = next(iter(value.items()))
        if key in TAGS:
            return _decode_tag(key, inner)
    return {key: _untag(item) for key, item in value.items()}


def _decode_tag(tag: str, inner: Any) -> Any:
    if tag == "$bytes":
        return base64.b64decode(inner)
    if tag == "$int":
        return int(inner)
    if tag == "$float":
        return NonFiniteFloat(inner)
    if tag == "$decimal":
        return Decimal(inner)
    if tag == "$nul":
        return "\x00".join(inner)
    if tag == "$items":
        return {_untag(key): _untag(item) for key, item in inner}
    return {key: _untag(item) for key, item in inner.items()}  # $object: its keys as they are


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Read JSON written by :func:`dumps`, tags turned back into the values they stand for.

    Raises ValueError (orjson's JSONDecodeError among them) for text that is not JSON or
    holds a malformed tag.
    """
    value = orjson.loads(data)
    if isinstance(data, str):
        has_tag = _MARK_TEXT in data
    else:
        has_tag = _MARK in (data if isinstance(data, bytes) else bytes(data))
    if not has_tag:
        return value
    try:
        return _untag(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"a malformed tag in JSON: {exc}") from None


def json_ready(value: Any) -> Any:
    """``value`` with tags written out as plain objects, for a JSON encoder that knows no
    tags (pydantic's, FastAPI's)."""
    return orjson.loads(dumps(value))


def non_finite_at(value: Any, path: str) -> str | None:
    """Where in ``value`` (``path.key[0]``) a NaN or infinite float is, or None.

    For configuration (flow parameters, agent arguments): pydantic and JSON write such a
    float as null, so it is refused there rather than changed.
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = non_finite_at(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = non_finite_at(item, f"{path}[{index}]")
            if found:
                return found
    return None


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)
    return False


def refuse_non_finite(value: Any, path: str) -> None:
    """Raise ValueError when ``value`` holds a NaN or infinite float (JSON would store null)."""
    found = non_finite_at(value, path)
    if found:
        raise ValueError(
            f"{found} is not a finite number; NaN and infinities cannot be stored with a "
            "batch (they would become null): use a finite number or null"
        )
