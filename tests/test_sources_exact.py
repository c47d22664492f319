"""Issue 9 follow-ups, in process: values stay exact or the input is refused in one line
naming file, line (or row) and field."""

from __future__ import annotations

import codecs
import datetime as dt
import json
import zoneinfo
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from buttermilk import values
from buttermilk.batch.planner import plan_records
from buttermilk.domain import BatchRequest
from buttermilk.errors import DataSourceError, DuplicateRecordIdError
from buttermilk.flows.models import FileSource, FlowConfig
from buttermilk.flows.sources import iter_source


def rows(path: Path, **options: Any) -> list[dict[str, Any]]:
    source = FileSource(path=str(path), **options)
    return [row.fields for row in iter_source("src", source)]


def refusal(path: Path, **options: Any) -> str:
    with pytest.raises(DataSourceError) as caught:
        rows(path, **options)
    return str(caught.value)


# -- 1. non-finite numbers in configuration ---------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_parameters_and_agent_arguments_are_refused_naming_where(bad: float) -> None:
    agent = {"name": "a", "_target_": "buttermilk.agents.testing.noop"}
    with pytest.raises(ValidationError, match=r"parameters\.t\[1\] is not a finite number"):
        FlowConfig.model_validate({"name": "f", "agents": [agent], "parameters": {"t": [1, bad]}})
    with pytest.raises(ValidationError, match=r"threshold\.x is not a finite number"):
        FlowConfig.model_validate({"name": "f", "agents": [{**agent, "threshold": {"x": bad}}]})
    with pytest.raises(ValidationError, match=r"parameters\.x is not a finite number"):
        BatchRequest(flow="f", parameters={"x": bad})


# -- 2. UTC offsets with seconds ----------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, seconds=15))),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=15, microseconds=5))),
        dt.datetime(1900, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Amsterdam")),  # +00:19:32
        dt.datetime(2020, 1, 1, 0, 0, 0, 5),
        dt.date(2020, 1, 2),
        dt.time(1, 2, 3, 4),
    ],
)
def test_dates_and_times_are_written_as_their_isoformat(value: dt.date | dt.time) -> None:
    assert values.loads(values.dumps({"t": value})) == {"t": value.isoformat()}


# -- 3 and 7. Parquet temporal values ------------------------------------------------------


def test_nanosecond_parquet_timestamps_and_times_are_read_as_exact_iso_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.parquet"
    ns = [-1, 1_000_000_000_123_456_789, None, 5_000]
    pq.write_table(
        pa.table(
            {
                "text": ["a", "b", "c", "d"],
                "aware": pa.array(ns, pa.timestamp("ns", tz="+05:30")),
                "zone": pa.array(ns, pa.timestamp("ns", tz="America/New_York")),
                "naive": pa.array(ns, pa.timestamp("ns")),
                "time": pa.array([86_399_999_999_999, 1_000_000_123, None, 5_000], pa.time64("ns")),
            }
        ),
        path,
    )

    got = rows(path)

    assert [(r["aware"], r["zone"], r["naive"], r["time"]) for r in got] == [
        (
            "1970-01-01T05:29:59.999999999+05:30",
            "1969-12-31T18:59:59.999999999-05:00",
            "1969-12-31T23:59:59.999999999",
            "23:59:59.999999999",
        ),
        (
            "2001-09-09T07:16:40.123456789+05:30",
            "2001-09-08T21:46:40.123456789-04:00",
            "2001-09-09T01:46:40.123456789",
            "00:00:01.000000123",
        ),
        (None, None, None, None),
        (  # whole microseconds: the same text as a microsecond column gives
            "1970-01-01T05:30:00.000005+05:30",
            "1969-12-31T19:00:00.000005-05:00",
            "1970-01-01T00:00:00.000005",
            "00:00:00.000005",
        ),
    ]


@pytest.mark.parametrize(
    ("arrow_type", "value"),
    [
        (pa.timestamp("us"), 400_000_000_000_000_000),
        (pa.timestamp("s", tz="UTC"), 400_000_000_000),
        (pa.date32(), 3_000_000),
        (pa.date64(), 400_000_000_000_000),
    ],
)
def test_a_parquet_date_beyond_year_9999_is_refused_naming_row_and_column(
    tmp_path: Path, arrow_type: Any, value: int
) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "when": pa.array([0, value], arrow_type)}), path)

    assert refusal(path) == (
        f"data source 'src': {path}[1]: column 'when' cannot be read exactly (a date outside "
        "the years 1 to 9999, which Python cannot hold); cast the column to text first"
    )


def test_nanosecond_times_inside_a_list_are_refused_naming_the_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"l": pa.array([[1]], pa.list_(pa.timestamp("ns")))}), path)

    assert "column 'l' holds timestamp[ns] values inside" in refusal(path)


# -- 4 and 10. byte-order marks and UTF-16 -------------------------------------------------

BODIES = {
    "csv": "id,text\n1,hé\n",
    "jsonl": '{"id": "1", "text": "hé"}\n',
    "json": '[{"id": "1", "text": "hé"}]',
}


@pytest.mark.parametrize("fmt", list(BODIES))
@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", codecs.BOM_UTF8),
        ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE),
        ("utf-16", b""),  # the codec writes its own mark
    ],
)
def test_a_byte_order_mark_of_the_declared_encoding_is_dropped_in_every_format(
    tmp_path: Path, fmt: str, encoding: str, bom: bytes
) -> None:
    path = tmp_path / f"d.{fmt}"
    path.write_bytes(bom + BODIES[fmt].encode(encoding))

    assert rows(path, encoding=encoding) == [{"id": "1", "text": "hé"}]


@pytest.mark.parametrize("fmt", list(BODIES))
@pytest.mark.parametrize(
    ("data", "declared", "message"),
    [
        (
            codecs.BOM_UTF8 + BODIES["csv"].encode(),
            "cp1252",
            "starts with a UTF-8 byte-order mark, so it is not cp1252; set encoding: utf-8",
        ),
        (
            codecs.BOM_UTF16_LE + BODIES["csv"].encode("utf-16-le"),
            "utf-8",
            "starts with a UTF-16 (little-endian) byte-order mark, so it is not UTF-8; "
            "set encoding: utf-16",
        ),
        (
            BODIES["csv"].encode("utf-16-le"),
            "utf-8",
            "looks like UTF-16 text (a NUL byte beside every character), not UTF-8; "
            "set encoding: utf-16-le",
        ),
        (
            BODIES["csv"].encode("utf-16-be"),
            "latin-1",
            "looks like UTF-16 text (a NUL byte beside every character), not latin-1; "
            "set encoding: utf-16-be",
        ),
    ],
)
def test_a_file_whose_first_bytes_show_another_encoding_is_refused_with_it(
    tmp_path: Path, fmt: str, data: bytes, declared: str, message: str
) -> None:
    path = tmp_path / f"d.{fmt}"
    path.write_bytes(data)

    assert refusal(path, encoding=declared) == (
        f"data source 'src': {path}:1: {message} in the data source"
    )


def test_a_byte_another_encoding_cannot_read_has_no_stray_colon_in_its_hint(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"id,text\n1,caf\xe9\n")

    assert refusal(path, encoding="ascii") == (
        f"data source 'src': {path}:2: not valid ascii (byte 0xe9); "
        "check the data source's encoding"
    )


# -- 6. text encodings only ----------------------------------------------------------------


@pytest.mark.parametrize("codec", ["rot13", "base64", "zlib", "hex", "bz2"])
def test_a_codec_that_is_not_a_text_encoding_is_refused(codec: str) -> None:
    with pytest.raises(ValidationError, match=f"not a text encoding '{codec}'"):
        FileSource(path="x.csv", encoding=codec)


# -- 8 and 9. JSON numbers and whole-file JSON ----------------------------------------------


@pytest.mark.parametrize("digits", [310, 1000, 4300])
def test_an_integer_of_hundreds_of_digits_is_read_exactly(tmp_path: Path, digits: int) -> None:
    big = int("7" * digits)
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "n": 1}\n' + json.dumps({"text": "b", "n": [-big]}) + "\n")

    got = rows(path)

    assert got[1]["n"] == [-big]
    assert values.loads(values.dumps(got[1])) == got[1]


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("7" * 4301, "an integer has more than 4300 digits, more than Python reads"),
        ("1e999", "the number 1e999 is too large for a float (it would become infinity)"),
    ],
)
def test_a_number_python_cannot_hold_is_refused_saying_so(
    tmp_path: Path, number: str, message: str
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b", "n": ' + number + "}\n")

    assert refusal(path) == f"data source 'src': {path}:2: {message}; write it as text"


def test_whole_file_json_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"text": "a"},\n{"text": "caf\xe9"}\n]')

    assert refusal(path).startswith(
        f"data source 'src': {path}:3: not valid UTF-8 (byte 0xe9); set encoding:"
    )


# -- 11 and 12. ids -----------------------------------------------------------------------


def flow_over(**sources: dict[str, Any]) -> FlowConfig:
    agent = {"name": "noop", "_target_": "buttermilk.agents.testing.noop"}
    return FlowConfig.model_validate({"name": "t", "data": sources, "agents": [agent]})


def test_ids_that_collide_after_normalising_name_both_lines_and_the_id(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": "x", "text": "b"}\n{"id": "1", "text": "c"}\n')

    with pytest.raises(DuplicateRecordIdError) as caught:
        plan_records(flow_over(s={"path": str(path)}), shuffle=False, max_records=None)

    assert str(caught.value).startswith(
        f"duplicate record ids: {path}:1 and {path}:3 share the record id '1'; "
    )


def test_rows_with_the_same_content_and_no_id_name_both_lines_and_say_why(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "same", "n": 1}\n{"text": "other"}\n{"text": "same", "n": 2}\n')

    with pytest.raises(DuplicateRecordIdError) as caught:
        plan_records(flow_over(s={"path": str(path)}), shuffle=False, max_records=None)

    assert f"{path}:1 and {path}:3 share the record id '" in str(caught.value)
    assert "(a hash of their content: they have no id field and the same content)" in str(
        caught.value
    )


def test_id_prefix_counts_in_the_id_length_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "a" * 500, "text": "x"}) + "\n")

    assert len(rows(path, id_prefix="p" * 12)[0]["id"]) == 500  # 512 in all: allowed
    assert refusal(path, id_prefix="p" * 13) == (
        f"data source 'src': {path}:1: the record id in field 'id' is 513 characters long "
        "with its id_prefix (13); at most 512"
    )
