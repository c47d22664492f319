"""Exports hold every value exactly: nothing merged, dropped or made ambiguous."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from buttermilk.api.results import result_stream
from buttermilk.batch.columns import ColumnClashError
from buttermilk.batch.export import export_jobs
from buttermilk.domain import BatchRequest, JobInfo, JobStatus
from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FileSource
from buttermilk.flows.sources import iter_source
from buttermilk.records import Record
from buttermilk.store.store import Claim, Claimed, Store
from buttermilk.values import NonFiniteFloat

BATCH = "exact1"


def make_store(tmp_path: Path, outputs: list[Any], records: list[Record] | None = None) -> Store:
    """A real SQLite store with one completed job per entry of ``outputs`` (the output of
    an agent named ``a``; None: the job is left pending)."""
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    records = records or [Record(record_id=f"r{i}", content="x") for i in range(len(outputs))]
    store.create_batch(
        batch_id=BATCH, request=BatchRequest(flow="t"), flow_snapshot={}, seed=1, records=records
    )
    store.mark_published(BATCH)
    done = [(r.record_id, out) for r, out in zip(records, outputs, strict=True) if out is not None]
    claims = store.claim([Claim(BATCH, rid) for rid, _ in done], worker="w", lease=30)
    store.finish(
        [
            c.outcome(JobStatus.COMPLETED, duration=0.1, result={"outputs": {"a": out}})
            for c, (_, out) in zip(claims, done, strict=True)
            if isinstance(c, Claimed)
        ]
    )
    return store


@pytest.fixture
def tmp_store(tmp_path: Path) -> Iterator[list[Store]]:
    made: list[Store] = []
    yield made
    for store in made:
        store.close()


def exported(store: Store, tmp_path: Path, suffix: str) -> list[dict[str, Any]]:
    out = tmp_path / f"out{suffix}"
    export_jobs(store, BATCH, out)
    if suffix == ".jsonl":
        return [json.loads(line) for line in out.read_text().splitlines()]
    if suffix == ".csv":
        with out.open(newline="") as fh:
            return list(csv.DictReader(fh))
    rows: list[dict[str, Any]] = pq.read_table(out).to_pylist()
    return rows


# -- the record's uri -----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_records_uri_is_exported_as_read(
    tmp_path: Path, tmp_store: list[Store], suffix: str
) -> None:
    uri = 's3://bucket/a b/ü,"q".txt'
    records = [Record(record_id="r0", content="x", uri=uri), Record(record_id="r1", content="y")]
    store = make_store(tmp_path, [{"v": 1}, {"v": 2}], records)
    tmp_store.append(store)

    rows = exported(store, tmp_path, suffix)

    assert rows[0]["uri"] == uri
    assert rows[1]["uri"] == ("" if suffix == ".csv" else None)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(5, "int 5"), (True, "bool True"), (1.5, "float 1.5"), ({"u": "x"}, "dict"), (["x"], "list")],
)
def test_a_uri_that_is_not_text_is_refused_at_read_naming_file_line_and_field(
    tmp_path: Path, value: Any, shown: str
) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [{"id": "a", "text": "t", "link": "http://ok"}, {"id": "b", "text": "t", "link": value}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    source = FileSource(path=str(path), columns={"uri": "link"})

    with pytest.raises(DataSourceError) as caught:
        list(iter_source("src", source))

    message = str(caught.value)
    assert message.startswith(f"data source 'src': {path}:2: the uri in field 'link' is {shown}")
    assert "a uri must be text" in message


def test_a_parquet_uri_column_of_integers_is_refused_at_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": ["a"], "uri": [7]}), path)

    with pytest.raises(
        DataSourceError, match=r"rows\.parquet\[0\]: the uri in field 'uri' is int 7"
    ):
        list(iter_source("src", FileSource(path=str(path))))


def test_a_text_uri_reaches_the_record_exactly(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('id,uri\na," http://x/ü?q=1 "\nb,\n')

    found = [row.to_record() for row in iter_source("src", FileSource(path=str(path)))]

    assert [r.uri for r in found] == [" http://x/ü?q=1 ", ""]


# -- flattening -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize(
    "outputs",
    [
        [{"a.b": 1, "a": {"b": 2}}],  # in one row
        [{"a.b": 1}, {"a": {"b": 2}}],  # in two rows
    ],
    ids=["one-row", "two-rows"],
)
def test_two_keys_that_would_make_one_column_are_refused_naming_it(
    tmp_path: Path, tmp_store: list[Store], suffix: str, outputs: list[Any]
) -> None:
    store = make_store(tmp_path, [{"x": out} for out in outputs])
    tmp_store.append(store)
    out = tmp_path / f"out{suffix}"

    with pytest.raises(ColumnClashError) as caught:
        export_jobs(store, BATCH, out)

    message = str(caught.value)
    assert "column 'outputs.a.x.a.b' would hold both" in message
    assert "outputs['a']['x']['a.b']" in message and "outputs['a']['x']['a']['b']" in message
    assert ".jsonl" in message
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if not p.name.startswith("batches.db")]


def test_a_jsonl_export_keeps_keys_that_flattening_would_merge(
    tmp_path: Path, tmp_store: list[Store]
) -> None:
    store = make_store(tmp_path, [{"a.b": 1, "a": {"b": 2}}])
    tmp_store.append(store)

    (row,) = exported(store, tmp_path, ".jsonl")

    assert row["outputs"]["a"] == {"a.b": 1, "a": {"b": 2}}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_empty_objects_and_lists_keep_a_column(
    tmp_path: Path, tmp_store: list[Store], suffix: str
) -> None:
    store = make_store(tmp_path, [{"none": {}, "nothing": [], "deep": {"e": {}}}, {"none": {}}])
    tmp_store.append(store)

    rows = exported(store, tmp_path, suffix)

    empty = "" if suffix == ".csv" else None
    assert [row["outputs.a.none"] for row in rows] == ["{}", "{}"]
    assert [row["outputs.a.nothing"] for row in rows] == ["[]", empty]
    assert [row["outputs.a.deep.e"] for row in rows] == ["{}", empty]
    assert [row["metadata"] for row in rows] == ["{}", "{}"]


# -- one type per column, or JSON text ----------------------------------------------------

MIXED = [
    {"n": "1", "b": True, "e": "", "t": "true"},
    {"n": 1, "b": "true", "e": None, "t": "false"},
    {"n": None, "b": None, "t": None},
]


def test_a_csv_column_of_several_types_holds_json_so_each_value_reads_back(
    tmp_path: Path, tmp_store: list[Store]
) -> None:
    store = make_store(tmp_path, MIXED)
    tmp_store.append(store)

    rows = exported(store, tmp_path, ".csv")

    def column(name: str) -> list[Any]:
        return [json.loads(r[name]) if r[name] else None for r in rows]

    assert column("outputs.a.n") == ["1", 1, None]
    assert column("outputs.a.b") == [True, "true", None]
    assert column("outputs.a.e") == ["", None, None]  # empty text and null, told apart
    assert [r["outputs.a.t"] for r in rows] == ["true", "false", ""]  # text only: as it is


def test_a_parquet_column_of_several_types_holds_json_so_each_value_reads_back(
    tmp_path: Path, tmp_store: list[Store]
) -> None:
    store = make_store(tmp_path, MIXED)
    tmp_store.append(store)
    out = tmp_path / "out.parquet"

    export_jobs(store, BATCH, out)

    table = pq.read_table(out)
    rows = table.to_pylist()
    assert [json.loads(r["outputs.a.n"]) if r["outputs.a.n"] else None for r in rows] == [
        "1",
        1,
        None,
    ]
    assert [json.loads(r["outputs.a.b"]) if r["outputs.a.b"] else None for r in rows] == [
        True,
        "true",
        None,
    ]
    assert [r["outputs.a.e"] for r in rows] == ["", None, None]  # Parquet has nulls
    assert str(table.schema.field("outputs.a.e").type) == "string"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_booleans_decimals_and_numbers_keep_their_type_and_digits(
    tmp_path: Path, tmp_store: list[Store], suffix: str
) -> None:
    outputs = [
        {"ok": True, "price": Decimal("1.50"), "score": 1, "nan": NonFiniteFloat("nan")},
        {"ok": False, "price": Decimal("-0.000"), "score": 0.25, "nan": 2.0},
    ]
    store = make_store(tmp_path, outputs)
    tmp_store.append(store)

    rows = exported(store, tmp_path, suffix)

    assert [r["outputs.a.price"] for r in rows] == ["1.50", "-0.000"]
    if suffix == ".csv":
        assert [r["outputs.a.ok"] for r in rows] == ["true", "false"]
        assert [r["outputs.a.score"] for r in rows] == ["1", "0.25"]
        assert [r["outputs.a.nan"] for r in rows] == ["nan", "2.0"]
    else:
        assert [r["outputs.a.ok"] for r in rows] == [True, False]
        assert [r["outputs.a.score"] for r in rows] == [1.0, 0.25]
        table = pq.read_table(tmp_path / "out.parquet")
        assert str(table.schema.field("outputs.a.ok").type) == "bool"
        assert str(table.schema.field("outputs.a.price").type) == "string"


# -- one read of the store ----------------------------------------------------------------


class FinishingStore(Store):
    """A real store in which job r1 finishes (with an output of a new column) while the
    export reads the jobs, right after it was handed job r0."""

    finished = False

    def iter_jobs(self, batch_id: str, **kwargs: Any) -> Iterator[JobInfo]:
        for job in super().iter_jobs(batch_id, **kwargs):
            yield job
            if not self.finished:
                self.finished = True
                (claimed,) = self.claim([Claim(batch_id, "r1")], worker="w", lease=30)
                assert isinstance(claimed, Claimed)
                result = {"outputs": {"late": {"label": "new"}}}
                self.finish([claimed.outcome(JobStatus.COMPLETED, duration=0.1, result=result)])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_job_that_ends_during_an_export_is_in_it_whole_or_not_at_all(
    tmp_path: Path, tmp_store: list[Store], suffix: str
) -> None:
    store = make_store(tmp_path, [{"v": 1}, None])
    store.close()
    finishing = FinishingStore(store.url)
    tmp_store.append(finishing)

    rows = exported(finishing, tmp_path, suffix)

    assert finishing.finished
    r1 = rows[1]
    if r1["status"] == "completed":
        assert r1["outputs.late.label"] == "new"
    else:
        assert r1["status"] == "pending"
        assert "outputs.late.label" not in r1  # no column that nothing in the export fills
    again = exported(finishing, tmp_path, suffix)  # after: the output is there
    assert again[1]["status"] == "completed" and again[1]["outputs.late.label"] == "new"


# -- the API's results stream: the same rows, the same refusals ----------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def streamed(store: Store) -> str:
    stream = await result_stream(store, BATCH, "csv")
    return "".join([str(chunk) async for chunk in stream])


@pytest.mark.anyio
async def test_the_apis_csv_is_the_exported_csv(tmp_path: Path, tmp_store: list[Store]) -> None:
    store = make_store(tmp_path, [*MIXED, *[{"v": i} for i in range(1_200)]])
    tmp_store.append(store)
    out = tmp_path / "out.csv"
    export_jobs(store, BATCH, out)

    assert await streamed(store) == out.read_bytes().decode()


@pytest.mark.anyio
async def test_the_apis_csv_is_refused_before_it_starts_when_keys_would_merge(
    tmp_path: Path, tmp_store: list[Store]
) -> None:
    store = make_store(tmp_path, [{"a.b": 1}, {"a": {"b": 2}}])
    tmp_store.append(store)

    with pytest.raises(ColumnClashError, match=r"column 'outputs\.a\.a\.b' would hold both"):
        await result_stream(store, BATCH, "csv")
