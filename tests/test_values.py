"""The exact JSON codec (buttermilk.values): every value a source or agent holds reads back
as it was, and nothing in the data is ever taken for a tag."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from buttermilk import values
from buttermilk.values import NonFiniteFloat, TooDeepError

EXACT = [
    pytest.param(b"\xff\xfe\x00 image bytes", id="bytes"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(123456789012345678901234567890, id="30-digit-int"),
    pytest.param(-(2**63) - 1, id="below-int64"),
    pytest.param(2**64 - 1, id="uint64-max"),
    pytest.param(Decimal("1.500"), id="decimal-keeps-its-scale"),
    pytest.param("a\x00b\x00", id="nul-characters"),
    pytest.param({"$bytes": "not a tag"}, id="object-shaped-like-a-tag"),
    pytest.param({"$object": {"$int": "1"}}, id="object-shaped-like-an-escape"),
    pytest.param({"$a": 1, "b": [1, {"$int": "x"}]}, id="dollar-keys"),
    pytest.param({"x": [b"\x01", 2**70, {"y": "\x00"}]}, id="nested"),
    pytest.param("plain text ✓", id="text"),
    pytest.param([1, 2.5, True, None], id="plain-json"),
]


@pytest.mark.parametrize("value", EXACT)
def test_a_value_reads_back_exactly_with_its_type(value: Any) -> None:
    back = values.loads(values.dumps(value))

    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_a_non_finite_float_reads_back_as_a_non_finite_float(text: str) -> None:
    back = values.loads(values.dumps({"x": NonFiniteFloat(text)}))["x"]

    assert isinstance(back, NonFiniteFloat)
    assert str(back) == str(float(text))


def test_tags_are_written_where_json_cannot_hold_the_value() -> None:
    assert values.dumps(b"\xff") == b'{"$bytes":"/w=="}'
    assert values.dumps(2**64) == b'{"$int":"18446744073709551616"}'
    assert values.dumps("a\x00b") == b'{"$nul":["a","b"]}'
    assert values.dumps({"$int": "5"}) == b'{"$object":{"$int":"5"}}'
    assert values.dumps([1, "x"]) == b'[1,"x"]'  # the common case: plain orjson


def test_json_ready_gives_tags_as_plain_objects_for_other_encoders() -> None:
    assert values.json_ready({"image": b"\x00"}) == {"image": {"$bytes": "AA=="}}


def test_a_value_of_a_type_json_cannot_keep_is_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        values.dumps({1, 2})


def test_a_value_nested_too_deeply_is_refused() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]

    with pytest.raises(TooDeepError):
        values.dumps(deep)
    assert values.depth_exceeds(deep) and not values.depth_exceeds([[1]])


def test_a_malformed_tag_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        values.loads(b'{"$bytes": 5}')
