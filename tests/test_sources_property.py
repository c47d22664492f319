"""A standing guard: generated source files with hostile content have two outcomes only.

Either every record reads back, from the store, exactly as the file was written, or
``create`` refuses the file with a :class:`DataSourceError` naming the file and the line
(or row) at fault, and nothing is stored or published. Files are CSV, JSONL, JSON and
Parquet, in several encodings, with odd quoting, line breaks, NUL characters, huge
numbers, bytes, NaN and deep nesting; broken ones lose or gain a field, leave a quote open
or hold a byte their encoding cannot read.
"""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchRequest
from buttermilk.errors import DataSourceError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.store.store import Store

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COLUMNS = ["text", "label", "note"]

# Text of every kind a file may hold: quotes, separators, line breaks of all three
# styles, NUL, byte-order marks, and any other character (no lone surrogates: no
# encoding can write them).
hostile_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(",;\"'\r\n\t\x00\ufeff\\{}[]$ ")),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=30,
)
huge_int = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**130),
    st.integers(min_value=-(2**130), max_value=-(2**62)),
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    huge_int,
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_text, inner, max_size=3)
    ),
    max_leaves=12,
)


@dataclass
class Planned:
    service: BatchService
    store: Store
    queue: LocalQueue
    path: Path


@contextmanager
def planner(suffix: str, encoding: str = "utf-8") -> Iterator[Planned]:
    """A real service over a SQLite store and the local queue, and the file it reads."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / f"data{suffix}"
        flow = FlowConfig.model_validate(
            {
                "name": "f",
                "data": {"d": {"type": "file", "path": str(path), "encoding": encoding}},
                "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
            }
        )
        store = Store(f"sqlite:///{root}/batches.db")
        queue = LocalQueue(root / "queue.db")
        try:
            yield Planned(
                BatchService(store, queue, StaticFlowCatalog({"f": flow})), store, queue, path
            )
        finally:
            anyio.run(queue.aclose)
            store.close()


def create(planned: Planned) -> dict[str, Record] | DataSourceError:
    """The stored records of a new batch by id, or the refusal (then nothing was created)."""
    try:
        created = anyio.run(planned.service.create, BatchRequest(flow="f", shuffle=False))
    except DataSourceError as exc:
        assert planned.store.list_batches() == []
        assert planned.queue.depth() == 0
        return exc
    jobs = planned.store.iter_jobs(created.batch.id)
    return {job.record_id: job.record for job in jobs if job.record is not None}


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN and types compared too (1 is not 1.0 nor True)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if type(a) is not type(b) and not (isinstance(a, float) and isinstance(b, float)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- well-formed files read back exactly ---------------------------------------------------

ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "cp1252", "latin-1"]


def encodable(rows: list[dict[str, str]], encoding: str) -> bool:
    try:
        for row in rows:
            for value in row.values():
                value.encode(encoding)
    except UnicodeEncodeError:
        return False
    return True


csv_rows = st.lists(st.fixed_dictionaries({c: hostile_text for c in COLUMNS}), max_size=6)


def with_ids(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": f"r{n}", **row} for n, row in enumerate(rows)]


@SETTINGS
@given(rows=csv_rows, encoding=st.sampled_from(ENCODINGS))
def test_a_csv_reads_back_exactly_in_any_encoding(
    rows: list[dict[str, str]], encoding: str
) -> None:
    rows = with_ids(rows)
    if not encodable(rows, encoding):
        return
    with planner(".csv", encoding) as planned:
        with planned.path.open("w", newline="", encoding=encoding) as fh:
            writer = csv.DictWriter(fh, fieldnames=["id", *COLUMNS])
            writer.writeheader()
            writer.writerows(rows)

        got = create(planned)

    if not rows:
        assert isinstance(got, DataSourceError) and "hold no records" in str(got)
        return
    assert isinstance(got, dict), got
    assert list(got) == [row["id"] for row in rows]
    for row in rows:
        record = got[row["id"]]
        assert record.content == row["text"]
        assert record.metadata == {"label": row["label"], "note": row["note"]}


@SETTINGS
@given(rows=st.lists(st.dictionaries(hostile_text, json_value, max_size=4), max_size=5))
def test_jsonl_and_json_read_back_exactly_big_integers_included(
    rows: list[dict[str, Any]],
) -> None:
    rows = [
        {
            k: v
            for k, v in row.items()
            if k not in ("id", "record_id", "content", "text", "uri", "ground_truth")
        }
        for row in rows
    ]
    rows = with_ids(rows)
    for suffix in (".jsonl", ".json"):
        with planner(suffix) as planned:
            if suffix == ".jsonl":
                text = "".join(json.dumps(row) + "\n" for row in rows)
            else:
                text = json.dumps(rows, indent=1)
            planned.path.write_text(text, encoding="utf-8")

            got = create(planned)

        if not rows:
            assert isinstance(got, DataSourceError)
            continue
        assert isinstance(got, dict), got
        for row in rows:
            expected = {k: v for k, v in row.items() if k != "id"}
            assert same(got[row["id"]].metadata, expected), (got[row["id"]].metadata, expected)


parquet_rows = st.lists(
    st.fixed_dictionaries(
        {
            "text": hostile_text,
            "blob": st.binary(max_size=20),
            "big": st.integers(min_value=0, max_value=2**64 - 1),
            "score": st.floats(),  # NaN and infinities included
            "tags": st.lists(hostile_text, max_size=3),
        }
    ),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(rows=parquet_rows)
def test_parquet_bytes_integers_and_nan_read_back_exactly(rows: list[dict[str, Any]]) -> None:
    rows = with_ids(rows)
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("text", pa.string()),
            ("blob", pa.binary()),
            ("big", pa.uint64()),
            ("score", pa.float64()),
            ("tags", pa.list_(pa.string())),
        ]
    )
    with planner(".parquet") as planned:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), planned.path)

        got = create(planned)

    assert isinstance(got, dict), got
    for row in rows:
        record = got[row["id"]]
        assert record.content == row["text"]
        expected = {k: v for k, v in row.items() if k not in ("id", "text")}
        assert same(record.metadata, expected), (record.metadata, expected)


# -- broken files are refused naming the line ------------------------------------------------


def physical_line(text: str) -> int:
    """The line (1-based) that starts after ``text``, counting every kind of line break."""
    return len(io.StringIO(text, newline="").readlines()) + 1


@SETTINGS
@given(
    rows=st.lists(
        st.fixed_dictionaries({c: hostile_text for c in COLUMNS}), min_size=1, max_size=6
    ),
    data=st.data(),
)
def test_a_csv_row_that_gains_or_loses_a_field_is_refused_naming_its_line(
    rows: list[dict[str, str]], data: st.DataObject
) -> None:
    rows = with_ids(rows)
    broken = data.draw(st.integers(0, len(rows) - 1))
    mutation = data.draw(st.sampled_from(["extra", "missing", "bad-byte"]))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["id", *COLUMNS])
    start = 0
    for n, row in enumerate(rows):
        cells = [row["id"], *(row[c] for c in COLUMNS)]
        if n == broken:
            start = len(buffer.getvalue())
            if mutation == "extra":
                cells.append("more")
            elif mutation == "missing":
                cells.pop()
        writer.writerow(cells)
    text = buffer.getvalue()
    raw = text.encode("utf-8")
    line = physical_line(text[:start])
    if mutation == "bad-byte":  # the row's id starts with a byte UTF-8 cannot read
        offset = len(text[:start].encode("utf-8"))
        raw = raw[:offset] + b"\xff" + raw[offset:]

    with planner(".csv") as planned:
        planned.path.write_bytes(raw)

        got = create(planned)

    assert isinstance(got, DataSourceError), got
    assert f"{planned.path}:{line}:" in str(got), (str(got), line)


@SETTINGS
@given(
    rows=st.lists(
        st.fixed_dictionaries({c: hostile_text for c in COLUMNS}), min_size=1, max_size=6
    ),
    data=st.data(),
)
def test_a_csv_quote_left_open_is_refused_naming_the_line_it_opens_on(
    rows: list[dict[str, str]], data: st.DataObject
) -> None:
    rows = with_ids(rows)
    broken = data.draw(st.integers(0, len(rows) - 1))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    writer.writerow(["id", *COLUMNS])
    for row in rows[:broken]:
        writer.writerow([row["id"], *(row[c] for c in COLUMNS)])
    start = buffer.getvalue()
    # The rest of the file sits inside a quote that never closes.
    tail = f'"{rows[broken]["id"]}","' + "".join(
        c for row in rows[broken:] for c in row["text"] if c != '"'
    )

    with planner(".csv") as planned:
        planned.path.write_text(start + tail, encoding="utf-8", newline="")

        got = create(planned)

    assert isinstance(got, DataSourceError), got
    assert f"{planned.path}:{physical_line(start)}:" in str(got), str(got)


@SETTINGS
@given(
    rows=st.lists(st.dictionaries(hostile_text, json_value, max_size=3), min_size=1, max_size=5),
    data=st.data(),
)
def test_a_jsonl_line_cut_short_or_with_a_bad_byte_is_refused_naming_its_line(
    rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    lines = [json.dumps({**row, "id": f"r{n}"}).encode() for n, row in enumerate(rows)]
    broken = data.draw(st.integers(0, len(lines) - 1))
    if data.draw(st.booleans()):
        lines[broken] = lines[broken][:-1]  # the closing brace is lost
    else:
        lines[broken] = b"\xff" + lines[broken]

    with planner(".jsonl") as planned:
        planned.path.write_bytes(b"\n".join(lines) + b"\n")

        got = create(planned)

    assert isinstance(got, DataSourceError), got
    assert f"{planned.path}:{broken + 1}:" in str(got), str(got)


def test_the_guard_itself_tells_nan_and_types_apart() -> None:
    assert same({"a": [float("nan")]}, {"a": [float("nan")]})
    assert not same(1, 1.0) and not same(1, True) and not same(b"a", "a")
