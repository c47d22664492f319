"""Exporting a batch's jobs to JSONL, CSV and Parquet from a real SQLite store."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from buttermilk.batch.export import export_jobs
from buttermilk.domain import BatchRequest, JobInfo, JobStatus
from buttermilk.errors import InvalidOptionError
from buttermilk.records import Record
from buttermilk.store.store import Claim, Claimed, Store

BATCH = "exp123"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A batch of three jobs: one completed, one failed, one still pending."""
    s = Store(f"sqlite:///{tmp_path}/batches.db")
    records = [
        Record(record_id="r1", content="great value", metadata={"lang": "en"}, ground_truth="pos"),
        Record(record_id="r2", content="it broke", metadata={"lang": "fr"}, ground_truth="neg"),
        Record(record_id="r3", content="not run yet"),
    ]
    s.create_batch(
        batch_id=BATCH, request=BatchRequest(flow="t"), flow_snapshot={}, seed=1, records=records
    )
    s.mark_published(BATCH)
    ok, bad = s.claim([Claim(BATCH, "r1"), Claim(BATCH, "r2")], worker="w", lease=30)
    assert isinstance(ok, Claimed) and isinstance(bad, Claimed)
    s.finish(
        [
            ok.outcome(
                JobStatus.COMPLETED,
                duration=0.25,
                result={
                    "outputs": {
                        "vader": {"compound": 0.8, "label": "positive"},
                        "topics": {"counts": {"price": 1}, "categories": ["price", "value"]},
                    },
                    "timings": {"vader": 0.01, "topics": 0.002},
                },
            ),
            bad.outcome(
                JobStatus.FAILED, duration=0.1, error_type="AgentError", error_message="boom"
            ),
        ]
    )
    yield s
    s.close()


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["record_id"]: row for row in rows}


def test_jsonl_export_keeps_ids_and_nested_outputs(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "out" / "results.jsonl"

    count = export_jobs(store, BATCH, out)

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == 3
    assert [row["record_id"] for row in rows] == ["r1", "r2", "r3"]  # planned order
    assert {row["batch_id"] for row in rows} == {BATCH}
    r1, r2, r3 = rows
    assert r1["status"] == "completed"
    assert r1["outputs"]["vader"] == {"compound": 0.8, "label": "positive"}
    assert r1["outputs"]["topics"]["categories"] == ["price", "value"]
    assert r1["content"] == "great value"
    assert r1["metadata"] == {"lang": "en"}
    assert r1["ground_truth"] == "pos"
    assert (r2["status"], r2["error_type"], r2["error_message"]) == ("failed", "AgentError", "boom")
    assert r3["status"] == "pending" and r3["outputs"] is None


def test_csv_export_flattens_outputs_into_dotted_columns(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"

    assert export_jobs(store, BATCH, out) == 3

    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        rows = by_id(list(reader))
    assert {"batch_id", "record_id", "status", "error_message"} <= set(columns)
    assert {
        "outputs.vader.compound",
        "outputs.vader.label",
        "outputs.topics.counts.price",
        "outputs.topics.categories",
        "timings.vader",
        "metadata.lang",
    } <= set(columns)
    # Flattened: no column holds the outputs as one nested blob.
    assert all(not rows["r1"].get(c) for c in ("outputs", "timings"))
    r1 = rows["r1"]
    assert r1["batch_id"] == BATCH
    assert float(r1["outputs.vader.compound"]) == 0.8
    assert r1["outputs.vader.label"] == "positive"
    assert json.loads(r1["outputs.topics.categories"]) == ["price", "value"]
    assert rows["r2"]["error_message"] == "boom"
    assert rows["r2"]["outputs.vader.label"] == ""


def test_parquet_export_flattens_outputs_and_keeps_number_types(
    store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "results.parquet"

    assert export_jobs(store, BATCH, out) == 3

    table = pq.read_table(out)
    rows = by_id(table.to_pylist())
    assert {"batch_id", "record_id", "outputs.vader.compound", "outputs.topics.categories"} <= set(
        table.column_names
    )
    assert str(table.schema.field("outputs.vader.compound").type) == "double"
    assert str(table.schema.field("attempts").type) == "int64"
    r1 = rows["r1"]
    assert r1["batch_id"] == BATCH
    assert r1["outputs.vader.compound"] == 0.8
    assert json.loads(r1["outputs.topics.categories"]) == ["price", "value"]
    assert rows["r2"]["outputs.vader.compound"] is None
    assert rows["r2"]["error_type"] == "AgentError"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_export_of_a_batch_without_results_still_writes_a_readable_file(
    tmp_path: Path, suffix: str
) -> None:
    s = Store(f"sqlite:///{tmp_path}/batches.db")
    s.create_batch(
        batch_id="empty",
        request=BatchRequest(flow="t"),
        flow_snapshot={},
        seed=1,
        records=[Record(record_id="only")],
    )
    out = tmp_path / f"results{suffix}"
    try:
        assert export_jobs(s, "empty", out) == 1
    finally:
        s.close()
    if suffix == ".parquet":
        assert pq.read_table(out).column("record_id").to_pylist() == ["only"]
    else:
        assert "only" in out.read_text()


@pytest.mark.parametrize("name", ["results.txt", "results.xlsx", "results"])
def test_an_unknown_extension_is_refused_before_anything_is_written(
    store: Store, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "exports" / name

    with pytest.raises(InvalidOptionError, match=r"\.jsonl, \.csv or \.parquet") as caught:
        export_jobs(store, BATCH, out)

    assert "batch.output" in str(caught.value)
    assert not out.exists()


class FailingStore(Store):
    """A real store whose job listing breaks after ``good`` jobs in all (a lost disk, say)."""

    good = 1

    def iter_jobs(self, batch_id: str, **kwargs: Any) -> Iterator[JobInfo]:
        for job in super().iter_jobs(batch_id, **kwargs):
            if self.good <= 0:
                raise OSError("disk went away")
            self.good -= 1
            yield job


# Broken after two of the three jobs: JSONL has written them; CSV and Parquet have spooled
# them (the temporary output file exists already in every case).
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_a_failed_export_leaves_no_partial_file_and_keeps_an_older_one(
    store: Store, tmp_path: Path, suffix: str
) -> None:
    failing = FailingStore(store.url)
    folder = tmp_path / "exports"
    folder.mkdir()
    fresh = folder / f"fresh{suffix}"
    older = folder / f"older{suffix}"
    older.write_text("an earlier export\n")
    try:
        for target in (fresh, older):
            failing.good = 2
            with pytest.raises(OSError, match="disk went away"):
                export_jobs(failing, BATCH, target)
    finally:
        failing.close()

    assert sorted(p.name for p in folder.iterdir()) == [older.name]  # no temp files left
    assert older.read_text() == "an earlier export\n"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_an_exported_file_gets_the_usual_permissions_of_a_new_file(
    store: Store, tmp_path: Path, suffix: str
) -> None:
    # Written via a temporary file, but it should end up like any file the user creates
    # (readable by the group when the umask allows), not private like a temp file.
    out = tmp_path / f"results{suffix}"
    old = os.umask(0o022)
    try:
        export_jobs(store, BATCH, out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_a_second_export_replaces_the_first(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("stale\n")
    export_jobs(store, BATCH, out)
    assert "stale" not in out.read_text()
    assert len(out.read_text().splitlines()) == 3
