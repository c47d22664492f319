"""The store's reads behind the results page: a batch's throughput and cost per time bucket,
and its jobs among a set of records (the "disagrees" / "unstable" filters)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.domain.timeline import bucket_width
from buttermilk.records import Record
from buttermilk.store.schema import batches, jobs
from buttermilk.store.store import Store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path}/batches.db"
    s = Store(url)
    yield s
    s.close()


def make_batch(store: Store, n: int, batch_id: str = "b1") -> None:
    store.create_batch(
        batch_id=batch_id,
        request=BatchRequest(flow="t", variants={"m": ["a", "b"]}),
        flow_snapshot={"name": "t"},
        seed=1,
        records=[Record(record_id=f"r{i}", content=str(i)) for i in range(n)],
        variants=("a", "b"),
    )
    store.mark_published(batch_id)


def set_job(store: Store, record_id: str, variant: str, **values: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.batch_id == "b1", jobs.c.record_id == record_id)
            .where(jobs.c.variant == variant)
            .values(**values)
        )


def test_the_timeline_counts_ended_jobs_and_adds_their_cost_per_bucket(store: Store) -> None:
    make_batch(store, 4)
    created = store.get_batch("b1").created_at
    with store.engine.begin() as conn:  # the batch ended 100 s after its creation: 1 s buckets
        conn.execute(update(batches).values(status="completed", finished_at=created + 100))
    done = JobStatus.COMPLETED.value
    set_job(store, "r0", "a", status=done, finished_at=created + 0.2, cost=0.5, input_tokens=3)
    set_job(store, "r0", "b", status=done, finished_at=created + 0.9, cost=None)
    set_job(store, "r1", "a", status="failed", finished_at=created + 0.95, cost=0.25)
    set_job(store, "r1", "b", status=done, finished_at=created + 42.5, output_tokens=7)
    set_job(store, "r2", "a", status="running", started_at=created + 1)  # not ended: left out

    timeline = store.timeline("b1")

    assert timeline.bucket_seconds == bucket_width(created, created + 100) == 1.0
    first, second = timeline.buckets
    assert (first.start, first.completed, first.failed) == (created, 2, 1)
    assert first.cost == pytest.approx(0.75) and first.input_tokens == 3
    assert (second.start, second.completed, second.cost) == (created + 42, 1, None)
    assert second.output_tokens == 7


def test_bucket_widths_grow_with_the_span_to_keep_at_most_120_buckets() -> None:
    assert bucket_width(0, 0) == 1.0
    assert bucket_width(0, 119) == 1.0
    assert bucket_width(0, 121) == 2.0
    assert bucket_width(0, 3 * 3600) == 120.0
    assert bucket_width(0, 400 * 86400) / 86400 == 4


def test_jobs_are_listed_and_counted_among_a_set_of_records_of_any_size(store: Store) -> None:
    make_batch(store, 3)
    among = {"r0", "r2", *(f"absent{i}" for i in range(40_000))}  # past SQLite's 32,766 binds

    listed = [(j.record_id, j.variant) for j in store.iter_jobs("b1", record_ids=among)]
    assert listed == [("r0", "a"), ("r0", "b"), ("r2", "a"), ("r2", "b")]
    assert store.count_jobs("b1", record_ids=among) == 4
    assert store.count_jobs("b1", record_ids=among, variant="b") == 2
    assert store.count_jobs("b1", record_ids=set()) == 0
    set_job(store, "r2", "b", status="running", started_at=1.0)
    recent = store.recent_jobs("b1", record_ids={"r2"})
    assert [(j.record_id, j.variant) for j in recent] == [("r2", "b")]
