"""The notebook API (``buttermilk.batches``) end to end on a private SQLite home: create,
wait (working the batch in this process), results as a DataFrame equal to the export's
rows, open by prefix, and refusals as Buttermilk's errors. In-process, as a notebook
calls it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from buttermilk import batches
from buttermilk.batch.export import export_jobs
from buttermilk.domain import BatchStatus, JobStatus
from buttermilk.errors import UnknownBatchError, UsageError
from buttermilk.store.store import Store
from buttermilk.values import dumps_text

FLOW = "sentiment_thresholds"  # the sentiment example under two VADER thresholds
RECORDS, REPEATS, THRESHOLDS = 12, 2, 2


@contextmanager
def opened(home: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{home / 'batches.db'}")
    try:
        yield store
    finally:
        store.close()


@contextmanager
def private_home(folder: Path) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BUTTERMILK_HOME", str(folder))
        patch.delenv("BUTTERMILK_DATA", raising=False)  # the bundled reviews
        patch.delenv("BUTTERMILK_STORE_URL", raising=False)
        batches.configure()
        yield folder


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    with private_home(tmp_path) as folder:
        yield folder


@pytest.fixture(scope="module")
def worked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, batches.Batch]]:
    """A sentiment_thresholds batch of 12 reviews x 2 thresholds x 2 repeats, worked here
    (once for the module's tests, which only read it)."""
    with private_home(tmp_path_factory.mktemp("home")) as folder:
        b = batches.create(FLOW, max_records=RECORDS, repeats=REPEATS, seed=3)
        summary = b.wait(progress=False)
        assert summary.batch.status == BatchStatus.COMPLETED
        yield folder, b


@pytest.fixture
def done(worked: tuple[Path, batches.Batch]) -> Iterator[batches.Batch]:
    with private_home(worked[0]):
        yield worked[1]


def test_a_batch_created_and_waited_on_here_is_completed_in_the_store(
    worked: tuple[Path, batches.Batch], done: batches.Batch
) -> None:
    home = worked[0]
    jobs = RECORDS * REPEATS * THRESHOLDS
    with opened(home) as store:
        counts = store.job_counts([done.id])[done.id]
    assert counts == {JobStatus.COMPLETED: jobs}
    assert done.status().done == jobs
    assert done.info().flow == FLOW


def test_results_are_the_exports_rows_as_a_dataframe(
    tmp_path: Path, worked: tuple[Path, batches.Batch], done: batches.Batch
) -> None:
    home = worked[0]
    frame = done.results()

    assert len(frame) == RECORDS * REPEATS * THRESHOLDS
    for column in (
        "batch_id",
        "record_id",
        "variant",
        "repeat",
        "axes.vader.threshold",
        "status",
        "ground_truth",
        "outputs.vader.label",
        "outputs.vader.compound",
    ):
        assert column in frame.columns, column
    assert set(frame["variant"]) == {"0.05", "0.3"}
    assert set(frame["repeat"]) == {0, 1}
    assert set(frame["axes.vader.threshold"]) == {0.05, 0.3}
    assert (frame["status"] == "completed").all()

    exported = tmp_path / "results.parquet"
    with opened(home) as store:
        export_jobs(store, done.id, exported)
    from_file = pd.read_parquet(exported)
    assert list(frame.columns) == list(from_file.columns)
    assert plain(frame) == plain(from_file)


def plain(frame: pd.DataFrame) -> list[dict[str, object]]:
    """Rows with pandas' missing values as None and lists as the JSON text a Parquet
    export holds them as (a DataFrame keeps them as lists)."""
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        {k: dumps_text(v) if isinstance(v, list | dict) else v for k, v in row.items()}
        for row in rows
    ]


def test_open_finds_a_batch_by_prefix_or_the_newest(done: batches.Batch) -> None:
    assert batches.open(done.id[:5]).id == done.id
    assert batches.open().id == done.id
    with pytest.raises(UnknownBatchError, match="zz404"):
        batches.open("zz404")


def test_bad_options_raise_the_clis_usage_errors(home: Path) -> None:
    with pytest.raises(UsageError, match=r"batch\.concurency is not a known option"):
        batches.create("sentiment", concurency=5)
    with pytest.raises(UsageError, match="unknown flow 'nope'"):
        batches.create("nope")
    with pytest.raises(UsageError, match="there are no batches yet"):
        batches.open()
    assert not (home / "batches.db").exists() or batches_in(home) == 0


def batches_in(home: Path) -> int:
    with opened(home) as store:
        return len(store.list_batches())


def test_report_is_the_services_report_object(done: batches.Batch) -> None:
    found = done.report()
    jobs = RECORDS * REPEATS * THRESHOLDS

    assert found.batch_ids == [done.id] and found.flow == FLOW and not found.live
    assert found.overall.jobs == found.overall.scored == jobs
    assert [s.variant for s in found.combinations] == ["0.05", "0.3"]
    assert found.overall.accuracy is not None
    assert 0 <= found.overall.accuracy.estimate <= 1  # type: ignore[operator]
    assert found.agreement is not None and found.agreement.raters == REPEATS * THRESHOLDS
    again = batches.report([done.id[:6]], evaluate={"label": "vader.label"})
    assert again.model_dump(exclude={"generated_at"}) == found.model_dump(exclude={"generated_at"})
    with pytest.raises(UsageError, match=r"evaluate\.kind='ratio' is not allowed"):
        done.report(evaluate={"label": "vader.label", "kind": "ratio"})


def test_calls_work_inside_a_running_event_loop_as_in_jupyter(done: batches.Batch) -> None:
    async def cell() -> tuple[str, int]:  # a notebook cell: an event loop runs in this thread
        return batches.open(done.id).id, len(done.results())

    assert asyncio.run(cell()) == (done.id, RECORDS * REPEATS * THRESHOLDS)
