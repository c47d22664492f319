"""Benchmark of ``report``: one batch of 100,000 jobs (10 combinations x 10,000 records).

Run ``python benchmarks/report.py`` (full size, the report timed 3 times and the median
kept) or ``python benchmarks/report.py --quick`` (a small batch, one run: a smoke test).
``--no-postgres`` skips the PostgreSQL row. The batch is stored through the store's bulk
path (``Store.create_batch``: SQLite's executemany, PostgreSQL's COPY); then one UPDATE
gives every job an outcome (1% failed; the others a label, right 70% of the time), so no
worker runs. The timing is ``BatchService.report`` in-process: the store read (label and
truth picked out in SQL) and every statistic; the first call of a process also imports
scikit-learn, statsmodels and scipy, and is reported on its own. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

# core.py sits beside this file: run as a script, its folder is on the import path.
from core import BenchmarkError, Row, error_row, format_table, progress, spread, verdict
from sqlalchemy import text

from buttermilk.batch.service import BatchService
from buttermilk.devservices import throwaway_database
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue import LocalQueueSettings, open_queue
from buttermilk.records import Record
from buttermilk.store import StoreSettings, open_store
from buttermilk.store.store import Store

ADMIN_URL = os.environ.get(
    "BUTTERMILK_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GOAL_SECONDS = 2.0
LABELS = ("neg", "neu", "pos")
FLOW = FlowConfig.model_validate(
    {
        "name": "bench_report",
        "agents": [{"name": "judge", "_target_": "buttermilk.agents.testing.scripted"}],
        "parameters": {"model": "m0"},
        "evaluate": {"label": "judge.label", "truth": "ground_truth", "kind": "nominal"},
    }
)


@dataclass(frozen=True, kw_only=True)
class Sizes:
    records: int
    combinations: int
    repeats: int
    """Timed runs of the report (the median is reported), after the first (cold) one."""
    quick: bool


FULL = Sizes(records=10_000, combinations=10, repeats=3, quick=False)
QUICK = Sizes(records=200, combinations=3, repeats=1, quick=True)

# One UPDATE gives every job an outcome: 1% fail, the others answer the truth 70% of
# the time and a random label otherwise.
OUTCOMES = {
    "sqlite": """
        UPDATE jobs SET
            status = CASE WHEN abs(random()) % 100 = 0 THEN 'failed' ELSE 'completed' END,
            finished_at = 1.0,
            result = json_object('outputs', json_object('judge', json_object('label',
                CASE WHEN abs(random()) % 10 < 7 THEN json_extract(record, '$.ground_truth')
                ELSE json_extract('["neg","neu","pos"]', '$[' || (abs(random()) % 3) || ']')
                END)), 'timings', json_object())
        WHERE batch_id = :batch_id
    """,
    "postgres": """
        UPDATE jobs SET
            status = CASE WHEN random() < 0.01 THEN 'failed' ELSE 'completed' END,
            finished_at = 1.0,
            result = jsonb_build_object('outputs', jsonb_build_object('judge',
                jsonb_build_object('label',
                    CASE WHEN random() < 0.7 THEN record -> 'ground_truth'
                    ELSE to_jsonb((ARRAY['neg','neu','pos'])[1 + floor(random() * 3)::int])
                    END)), 'timings', '{}'::jsonb)
        WHERE batch_id = :batch_id
    """,
}


@contextmanager
def store_at(backend: str, home: str) -> Iterator[Store]:
    if backend == "sqlite":
        store = open_store(StoreSettings(url=f"sqlite:///{home}/batches.db"))
        try:
            yield store
        finally:
            store.close()
        return
    with throwaway_database(ADMIN_URL, prefix="bm_report_bench") as url:
        store = open_store(StoreSettings(url=url))
        try:
            yield store
        finally:
            store.close()


def fill(store: Store, backend: str, sizes: Sizes) -> str:
    """A finished batch of records x combinations jobs; returns its id."""
    keys = [f"m{i}" for i in range(sizes.combinations)]
    request = BatchRequest(flow=FLOW.name, variants={"model": keys}, repeats=1)
    records = [
        Record(record_id=f"r{i:06d}", content=f"text {i}", ground_truth=LABELS[i % 3])
        for i in range(sizes.records)
    ]
    batch = store.create_batch(
        batch_id="breport" + backend[:5],
        request=request,
        flow_snapshot=FLOW.snapshot(),
        seed=0,
        records=records,
        variants=keys,
    )
    with store.engine.begin() as conn:
        conn.execute(text(OUTCOMES[backend]), {"batch_id": batch.id})
        conn.execute(
            text("UPDATE batches SET status = 'completed' WHERE id = :id"), {"id": batch.id}
        )
    return batch.id


def bench_report(sizes: Sizes, backend: str) -> list[Row]:
    jobs = sizes.records * sizes.combinations
    seconds: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="buttermilk-bench-") as home,
        store_at(backend, home) as store,
    ):
        progress(f"report on {backend}: storing {jobs:,} jobs")
        batch_id = fill(store, backend, sizes)

        async def timed() -> tuple[float, int]:
            async with open_queue(LocalQueueSettings(path=f"{home}/queue.db")) as queue:
                service = BatchService(store, queue, StaticFlowCatalog({}))
                start = time.perf_counter()
                report = await service.report([batch_id])
                return time.perf_counter() - start, report.overall.jobs

        for run in range(sizes.repeats + 1):
            progress(f"report on {backend}: run {run}/{sizes.repeats} (0: cold)")
            took, counted = anyio.run(timed)
            if counted != jobs:
                raise BenchmarkError(f"the report counted {counted:,} of {jobs:,} jobs")
            seconds.append(took)
    cold, warm = seconds[0], seconds[1:]
    median = statistics.median(warm)
    shape = f"{sizes.records:,} records x {sizes.combinations} combinations"
    return [
        Row(
            f"report, {jobs:,} jobs ({backend})",
            f"{median:.2f} s",
            f"< {GOAL_SECONDS:.0f} s",
            verdict(median < GOAL_SECONDS),
            f"{spread(warm, '.2f')}{shape}; BatchService.report in-process, "
            f"warm (cold first call, with the statistics imports: {cold:.2f} s)",
        )
    ]


def benchmarks(postgres: bool) -> list[tuple[str, Callable[[Sizes], list[Row]]]]:
    found: list[tuple[str, Callable[[Sizes], list[Row]]]] = [
        ("report (sqlite)", lambda sizes: bench_report(sizes, "sqlite"))
    ]
    if postgres:
        found.append(("report (postgres)", lambda sizes: bench_report(sizes, "postgres")))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a small batch, one run")
    parser.add_argument("--no-postgres", action="store_true", help="the SQLite row only")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    rows: list[Row] = []
    failed = False
    for name, bench in benchmarks(not args.no_postgres):
        try:
            rows.extend(bench(sizes))
        except Exception as exc:  # report it in the table, go on
            failed = True
            rows.append(error_row(name, exc))
    print(format_table(rows, sizes, time.perf_counter() - start, "Buttermilk report benchmark"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
