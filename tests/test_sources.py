"""File sources: formats, globs, column mapping, record id rules and errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FileSource, FlowConfig
from buttermilk.flows.sources import check_sources, iter_flow_rows, iter_source
from buttermilk.records import Record

ROWS = [
    {"id": "a1", "text": "first text", "lang": "en"},
    {"id": "a2", "text": "second text", "lang": "fr"},
    {"id": "a3", "text": "third text", "lang": "de"},
]


def records(path: Path | str, **options: Any) -> list[Record]:
    source = FileSource(path=str(path), **options)
    return [row.to_record() for row in iter_source("src", source)]


def flow_over(**sources: dict[str, Any]) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "t",
            "data": sources,
            "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
        }
    )


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows))
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv, "parquet": write_parquet}


# -- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_file_format_reads_ids_content_and_metadata(tmp_path: Path, fmt: str) -> None:
    path = WRITERS[fmt](tmp_path / f"data.{fmt}", ROWS)

    got = records(path)

    assert [r.record_id for r in got] == ["a1", "a2", "a3"]
    assert [r.content for r in got] == ["first text", "second text", "third text"]
    assert [r.metadata for r in got] == [{"lang": "en"}, {"lang": "fr"}, {"lang": "de"}]


def test_parquet_keeps_value_types(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "d.parquet", [{"id": 1, "text": "x", "score": 0.5}])
    (record,) = records(path)
    assert record.record_id == "1"
    assert record.metadata == {"score": 0.5}


@pytest.mark.parametrize(("suffix", "fmt"), [(".ndjson", "jsonl"), (".pq", "parquet")])
def test_alternative_extensions_are_recognised(tmp_path: Path, suffix: str, fmt: str) -> None:
    path = WRITERS[fmt](tmp_path / f"data{suffix}", ROWS)
    assert [r.record_id for r in records(path)] == ["a1", "a2", "a3"]


def test_an_explicit_format_overrides_an_unknown_extension(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "data.txt", ROWS)
    assert [r.record_id for r in records(path, format="jsonl")] == ["a1", "a2", "a3"]


def test_blank_lines_in_jsonl_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n   \n" + json.dumps(ROWS[1]) + "\n")
    assert [r.record_id for r in records(path)] == ["a1", "a2"]


# -- globs -----------------------------------------------------------------------------


def test_a_glob_reads_every_matching_file_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    write_jsonl(tmp_path / "parts" / "b.jsonl", [{"id": "b1", "text": "x"}])
    write_jsonl(tmp_path / "parts" / "a.jsonl", [{"id": "a1", "text": "x"}, {"id": "a2"}])
    write_jsonl(tmp_path / "parts" / "c.other", [{"id": "zz"}])

    got = records(tmp_path / "parts" / "*.jsonl")

    assert [r.record_id for r in got] == ["a1", "a2", "b1"]


def test_a_glob_may_mix_formats_by_extension(tmp_path: Path) -> None:
    write_csv(tmp_path / "one.csv", [{"id": "c1", "text": "from csv"}])
    write_parquet(tmp_path / "two.parquet", [{"id": "p1", "text": "from parquet"}])

    got = records(tmp_path / "*.*")

    assert [(r.record_id, r.content) for r in got] == [
        ("c1", "from csv"),
        ("p1", "from parquet"),
    ]


def test_a_recursive_glob_reaches_subfolders(tmp_path: Path) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    write_jsonl(tmp_path / "x" / "top.jsonl", [{"id": "t"}])
    write_jsonl(tmp_path / "x" / "y" / "deep.jsonl", [{"id": "d"}])

    got = records(tmp_path / "x" / "**" / "*.jsonl")

    assert sorted(r.record_id for r in got) == ["d", "t"]


def test_a_glob_that_matches_nothing_is_an_error_naming_the_pattern(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nothing-*.jsonl")
    with pytest.raises(DataSourceError, match="no file matches") as caught:
        records(pattern)
    assert pattern in str(caught.value)


# -- column mapping and id rules -------------------------------------------------------


def test_mapped_columns_feed_the_record_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"key": "k1", "id": "ignored", "body": "hello", "src": "http://x/1", "gold": "pos"}],
    )

    (record,) = records(
        path,
        columns={"record_id": "key", "content": "body", "uri": "src", "ground_truth": "gold"},
    )

    assert record.record_id == "k1"
    assert record.content == "hello"
    assert record.uri == "http://x/1"
    assert record.ground_truth == "pos"
    assert record.metadata == {"id": "ignored"}


def test_unmapped_uri_and_ground_truth_fields_are_picked_up_by_name(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"id": "1", "content": "c", "uri": "u", "ground_truth": 1}]
    )
    (record,) = records(path)
    assert (record.content, record.uri, record.ground_truth, record.metadata) == ("c", "u", 1, {})


def test_record_id_field_wins_over_id_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"record_id": "rid", "id": "plain", "text": "t"}])
    (record,) = records(path)
    assert record.record_id == "rid"
    assert record.metadata == {"id": "plain"}


def test_a_csv_saved_by_excel_with_a_byte_order_mark_reads_its_first_column_by_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffid,text\r\n7,hello\r\n".encode())

    (record,) = records(path)

    assert record.record_id == "7"
    assert record.content == "hello"
    assert record.metadata == {}


def test_a_numeric_id_becomes_a_string(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": 42, "text": "t"}])
    assert records(path)[0].record_id == "42"


def test_a_mapped_id_column_missing_from_a_row_is_an_error_with_its_location(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"key": "k1"}, {"other": "x"}])
    with pytest.raises(DataSourceError, match="no field 'key'") as caught:
        records(path, columns={"record_id": "key"})
    assert f"{path}:2" in str(caught.value)


@pytest.mark.parametrize("empty", [None, ""])
def test_an_empty_id_is_an_error(tmp_path: Path, empty: str | None) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": empty, "text": "t"}])
    with pytest.raises(DataSourceError, match="empty record id"):
        records(path)


def test_unknown_record_fields_in_columns_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown record field"):
        FileSource(path="x.jsonl", columns={"identifier": "id"})


def test_rows_without_an_id_get_a_hash_of_their_content(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"text": "alpha", "n": 1}, {"text": "beta", "n": 2}, {"text": "alpha", "n": 3}],
    )
    got = records(path)
    ids = [r.record_id for r in got]

    assert len(ids[0]) == 16 and all(c in "0123456789abcdef" for c in ids[0])
    assert ids[0] != ids[1]
    assert ids[0] == ids[2]  # same content, same id (the planner reports the duplicate)
    assert ids == [r.record_id for r in records(path)]  # the same in a second read


def test_content_hash_ids_are_the_same_in_another_process(tmp_path: Path) -> None:
    # Stable across runs: not Python's salted hash(). A fresh interpreter with a
    # different hash seed must give the same ids.
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "alpha"}, {"text": {"k": [1, 2]}}])
    script = (
        "import sys\n"
        "from buttermilk.flows.models import FileSource\n"
        "from buttermilk.flows.sources import iter_source\n"
        "for row in iter_source('s', FileSource(path=sys.argv[1])):\n"
        "    print(row.record_id)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    ).stdout.split()

    assert out == [r.record_id for r in records(path)]


def test_content_hash_ids_do_not_depend_on_key_order(tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    two = tmp_path / "two.jsonl"
    one.write_text('{"a": 1, "text": {"x": 1, "y": 2}}\n')
    two.write_text('{"text": {"y": 2, "x": 1}, "a": 1}\n')
    assert records(one)[0].record_id == records(two)[0].record_id
    assert records(one)[0].record_id != records(tmp_path / "one.jsonl", id_prefix="p")[0].record_id


def test_a_row_with_neither_an_id_nor_a_content_field_is_refused_naming_its_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "1", "text": "ok"}\n{"a": 1, "b": 2}\n')

    with pytest.raises(DataSourceError) as caught:
        records(path)

    assert str(caught.value) == (
        f"data source 'src': {path}:2: no field 'content' or 'text' (fields: 'a', 'b'); "
        "map the content field: columns: {content: NAME}"
    )


@pytest.mark.parametrize(
    ("header", "guess"),
    [
        ("a;b;c", "is it ';'-separated? set delimiter: ';'"),
        ("a\tb", 'is it tab-separated? set delimiter: "\\t"'),
        ("a|b", "is it '|'-separated? set delimiter: '|'"),
    ],
)
def test_a_csv_read_with_the_wrong_delimiter_is_refused_with_the_likely_one(
    tmp_path: Path, header: str, guess: str
) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"{header}\n1\n")

    with pytest.raises(DataSourceError) as caught:
        records(path)

    assert str(caught.value) == (
        f"data source 'src': {path}:1: no field 'content' or 'text' (fields: {header!r}); {guess}; "
        "or map the content field: columns: {content: NAME}"
    )


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_a_csv_delimiter_option_reads_each_field(tmp_path: Path, delimiter: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(delimiter.join(["id", "text", "n"]) + "\n" + delimiter.join(["1", "a,b", "2"]))

    got = records(path, delimiter=delimiter)

    assert [(r.record_id, r.content, r.metadata) for r in got] == [("1", "a,b", {"n": "2"})]


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n"])
def test_a_delimiter_that_is_not_one_plain_character_is_refused(delimiter: str) -> None:
    with pytest.raises(ValidationError, match="a CSV delimiter is one character"):
        FileSource(path="x.csv", delimiter=delimiter)


def test_a_mapped_content_column_feeds_the_content_hash(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "same", "n": 1}, {"body": "same", "n": 2}])
    ids = [r.record_id for r in records(path, columns={"content": "body"})]
    assert ids[0] == ids[1]


def test_id_prefix_is_prepended_to_every_kind_of_id(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "x"}, {"text": "no id"}])
    plain = [r.record_id for r in records(path)]
    prefixed = [r.record_id for r in records(path, id_prefix="src:")]
    assert prefixed == [f"src:{rid}" for rid in plain]


def test_every_source_of_a_flow_is_read_in_config_order(tmp_path: Path) -> None:
    write_csv(tmp_path / "b.csv", [{"id": "b", "text": "x"}])
    write_jsonl(tmp_path / "a.jsonl", [{"id": "a", "text": "y"}])
    flow = flow_over(
        second={"path": str(tmp_path / "b.csv")}, first={"path": str(tmp_path / "a.jsonl")}
    )
    assert [row.record_id for row in iter_flow_rows(flow)] == ["b", "a"]


# -- errors ----------------------------------------------------------------------------


def test_a_missing_file_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataSourceError, match="file not found") as caught:
        records(path)
    assert str(path) in str(caught.value)


def test_an_unknown_extension_is_an_error_naming_the_path_and_known_formats(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "data.txt", ROWS)
    with pytest.raises(DataSourceError, match="cannot tell the format") as caught:
        records(path)
    assert str(path) in str(caught.value)
    assert ".jsonl" in str(caught.value) and ".parquet" in str(caught.value)


def test_malformed_jsonl_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{broken\n")
    with pytest.raises(DataSourceError, match="not valid JSON") as caught:
        records(path)
    assert f"{path}:2" in str(caught.value)


def test_malformed_json_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[{"id": 1},')
    with pytest.raises(DataSourceError, match="not valid JSON") as caught:
        records(path)
    assert str(path) in str(caught.value)


def test_a_json_file_that_is_not_an_array_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"id": 1}')
    with pytest.raises(DataSourceError, match="array") as caught:
        records(path)
    assert str(path) in str(caught.value)


def test_a_row_that_is_not_an_object_is_an_error_naming_its_location(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": "1"}\n[1, 2]\n')
    with pytest.raises(DataSourceError, match="expected an object") as caught:
        records(path)
    assert f"{path}:2" in str(caught.value)


def test_a_file_that_is_not_parquet_is_an_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_text("this is not parquet")
    with pytest.raises(DataSourceError, match="Parquet") as caught:
        records(path)
    assert str(path) in str(caught.value)


def test_check_sources_finds_a_missing_file_before_reading_anything(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", ROWS)
    flow = flow_over(good={"path": str(good)}, bad={"path": str(tmp_path / "missing.csv")})
    with pytest.raises(DataSourceError, match=r"missing\.csv"):
        check_sources(flow)


def test_a_flow_without_sources_is_an_error() -> None:
    flow = flow_over()
    with pytest.raises(DataSourceError, match="no data sources"):
        list(iter_flow_rows(flow))
    with pytest.raises(DataSourceError, match="no data sources"):
        check_sources(flow)


# -- byte-order marks and encodings --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_utf8_byte_order_mark_is_dropped_in_every_text_format(tmp_path: Path, fmt: str) -> None:
    path = WRITERS[fmt](tmp_path / f"data.{fmt}", ROWS)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    assert [r.record_id for r in records(path)] == ["a1", "a2", "a3"]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_the_encoding_option_reads_text_saved_in_another_encoding(tmp_path: Path, fmt: str) -> None:
    rows = [{"id": "a1", "text": "déjà vu — ½", "lang": "fr"}]
    path = WRITERS[fmt](tmp_path / f"data.{fmt}", rows)
    path.write_bytes(path.read_text(encoding="utf-8").encode("cp1252"))

    got = records(path, encoding="cp1252")

    assert got[0].content == "déjà vu — ½"


def test_a_file_in_another_encoding_read_as_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes('{"id": "1"}\n{"id": "2", "text": "café"}\n'.encode("cp1252"))

    with pytest.raises(DataSourceError) as caught:
        records(path)

    assert str(caught.value) == (
        f"data source 'src': {path}:2: not valid UTF-8 (byte 0xe9); set encoding: in the data "
        "source (e.g. encoding: cp1252) or save the file as UTF-8"
    )


def test_an_unknown_encoding_is_refused_with_examples() -> None:
    with pytest.raises(ValidationError, match="unknown encoding 'utf9'"):
        FileSource(path="x.csv", encoding="utf9")


def test_a_csv_line_count_includes_quoted_line_breaks_and_lone_carriage_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b'id,text\r1,"two\nlines"\r\n2,ok\n3,too,many\n')

    with pytest.raises(DataSourceError, match=rf"{path}:5: 3 fields, the header has 2"):
        records(path)


def test_a_parquet_column_of_a_type_without_an_exact_form_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(pa.table({"id": ["a"], "wait": pa.array([1], pa.duration("s"))}), path)

    with pytest.raises(DataSourceError, match="column 'wait' holds duration"):
        records(path)
