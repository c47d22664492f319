"""How long ``status`` takes on a large batch, on SQLite and on PostgreSQL.

Run ``python benchmarks/status.py`` (100,000 jobs) or ``--jobs N``. For each store it makes
a batch of N jobs, marks a third of them completed and a few failed (as a running batch
would be), then times ``BatchService.summary`` (what ``status`` and ``GET /api/batches/ID``
call: the batch row, job counts per status, the most common errors) and ``list``.
PostgreSQL is the local server (``BUTTERMILK_TEST_POSTGRES``, default
postgresql+psycopg://postgres@127.0.0.1:5432/test); a fresh database is made and dropped.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from sqlalchemy import update

from buttermilk.batch.service import BatchService
from buttermilk.devservices import throwaway_database
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.store.schema import jobs
from buttermilk.store.store import Store

ADMIN_URL = os.environ.get(
    "BUTTERMILK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GOAL_MS = 100.0  # a status call a person or a dashboard makes every second
REPEATS = 20


def fill(store: Store, count: int) -> str:
    records = [Record(record_id=f"r{i:07d}", content=f"text {i}") for i in range(count)]
    batch = store.create_batch(
        batch_id=f"b{secrets.token_hex(5)}",
        request=BatchRequest(flow="bench"),
        flow_snapshot={"name": "bench", "agents": [{"name": "a", "_target_": "x"}]},
        seed=1,
        records=records,
    )
    store.mark_published(batch.id)
    with store.engine.begin() as conn:
        conn.execute(
            update(jobs)
            .where(jobs.c.batch_id == batch.id, jobs.c.seq % 3 == 0)
            .values(status=JobStatus.COMPLETED.value, result={"ok": True})
        )
        conn.execute(
            update(jobs)
            .where(jobs.c.batch_id == batch.id, jobs.c.seq % 997 == 1)
            .values(status=JobStatus.FAILED.value, error_type="E", error_message="boom")
        )
    return batch.id


def median_ms(fn: Callable[[], object]) -> float:
    fn()  # warm caches and connections
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(url: str, count: int, queue_path: Path) -> tuple[float, float]:
    store = Store(url)
    queue = LocalQueue(queue_path)
    try:
        batch_id = fill(store, count)
        service = BatchService(store, queue, StaticFlowCatalog({}))
        status = median_ms(lambda: anyio.run(service.summary, batch_id))
        listing = median_ms(lambda: anyio.run(lambda: service.list(limit=20)))
        return status, listing
    finally:
        store.close()
        anyio.run(queue.aclose)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = measure(f"sqlite:///{tmp}/batches.db", args.jobs, Path(tmp) / "q.db")
        rows.append(("sqlite", *sqlite))
        with throwaway_database(ADMIN_URL, prefix="bm_bench") as url:
            rows.append(("postgres", *measure(url, args.jobs, Path(tmp) / "q.db")))
    print(f"\nstatus and list of a batch of {args.jobs:,} jobs (median of {REPEATS} calls)\n")
    print("| store | status ms | list ms | goal | ok |\n|---|---|---|---|---|")
    for name, status, listing in rows:
        ok = "yes" if max(status, listing) <= GOAL_MS else "NO"
        print(f"| {name} | {status:.1f} | {listing:.1f} | <= {GOAL_MS:.0f} ms | {ok} |")


if __name__ == "__main__":
    main()
