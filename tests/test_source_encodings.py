"""A local file or text source read with the wrong ``encoding:``: one error naming the
source, the file and the line, for every kind (JSONL, CSV, JSON, text folders), in any
encoding (UTF-16 counts its lines too), and never other text than the file holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import iter_source
from buttermilk.records import Record

# The same three records in each kind; "é" is on the file's third line.
TEXTS = {
    "jsonl": '{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n{"id": "3", "text": "café"}\n',
    "csv": "id,text\n1,a\n2,café\n",
    "json": '[{"id": "1", "text": "a"},\n {"id": "2", "text": "b"},\n {"id": "3", "text": "café"}]',
    "txt": "a title\nby someone\ncafé\n",
}


def read(path: Path, encoding: str) -> list[Record]:
    kind = "text" if path.suffix == ".txt" else "file"
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"posts": {"type": kind, "path": str(path), "encoding": encoding}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )
    return [row.to_record() for row in iter_source("posts", flow.data["posts"])]


def refusal(path: Path, encoding: str) -> str:
    with pytest.raises(DataSourceError) as refused:
        read(path, encoding)
    return str(refused.value)


def write(tmp_path: Path, kind: str, data: bytes) -> Path:
    path = tmp_path / f"posts.{kind}"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", list(TEXTS))
def test_a_byte_the_encoding_cannot_read_names_source_file_and_line(
    tmp_path: Path, kind: str
) -> None:
    path = write(tmp_path, kind, TEXTS[kind].encode("utf-8"))
    assert refusal(path, "ascii") == (
        f"data source 'posts': {path}:3: not valid ascii (byte 0xc3); "
        "check the data source's encoding"
    )
    assert "café" in str([r.content for r in read(path, "utf-8")])


@pytest.mark.parametrize("kind", list(TEXTS))
def test_utf8_declared_as_a_legacy_encoding_is_refused_not_read_as_other_text(
    tmp_path: Path, kind: str
) -> None:
    path = write(tmp_path, kind, TEXTS[kind].encode("utf-8"))

    for encoding, wrong in (("cp1252", "Ã©"), ("latin-1", "Ã©"), ("shift_jis", "ﾃｩ")):
        assert refusal(path, encoding) == (
            f"data source 'posts': {path}:3: looks like UTF-8, not {encoding} (bytes c3 a9 "
            f"are 'é' in UTF-8, {wrong!r} in {encoding}); set encoding: utf-8 in the data source"
        )
    # A file that is cp1252 reads as cp1252: é is one byte there, not valid UTF-8.
    cp1252 = tmp_path / f"cp1252.{kind}"
    cp1252.write_bytes(TEXTS[kind].encode("cp1252"))
    assert "café" in str([r.content for r in read(cp1252, "cp1252")])


@pytest.mark.parametrize("kind", list(TEXTS))
def test_utf16_without_a_byte_order_mark_is_refused_unless_its_order_is_given(
    tmp_path: Path, kind: str
) -> None:
    path = write(tmp_path, kind, TEXTS[kind].encode("utf-16-le"))  # no mark

    for family in ("utf-16", "utf-32"):
        assert refusal(path, family) == (
            f"data source 'posts': {path}:1: does not start with a byte-order mark, so "
            f"encoding: {family} cannot tell its byte order; set encoding: {family}-le or "
            f"{family}-be if it is {family.upper()}, or else the file's own encoding"
        )
    assert "café" in str([r.content for r in read(path, "utf-16-le")])


@pytest.mark.parametrize("kind", ["jsonl", "csv", "txt"])
def test_a_bad_sequence_in_utf16_is_named_by_its_line(tmp_path: Path, kind: str) -> None:
    good, last = TEXTS[kind].rstrip("\n").rsplit("\n", 1)
    # A lone surrogate (0xD800) on the third line: no character of UTF-16.
    data = (good + "\n").encode("utf-16") + b"\x00\xd8" + (last + "\n").encode("utf-16-le")
    path = write(tmp_path, kind, data)

    assert refusal(path, "utf-16") == (
        f"data source 'posts': {path}:3: not valid utf-16 (byte 0x00); "
        "check the data source's encoding"
    )


def test_csv_lines_ended_by_lone_carriage_returns_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "csv", "id,text\r1,a\r2,b\r3,café\r".encode("cp1252"))

    assert refusal(path, "utf-8").startswith(
        f"data source 'posts': {path}:4: not valid UTF-8 (byte 0xe9); set encoding:"
    )


def test_a_text_file_that_ends_inside_a_character_names_its_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, "txt", "one\ntwo é\nthree ".encode() + b"\xc3")

    assert refusal(path, "utf-8").startswith(
        f"data source 'posts': {path}:3: not valid UTF-8 (byte 0xc3); set encoding:"
    )
