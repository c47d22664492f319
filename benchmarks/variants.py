"""Benchmarks of variants x repeats: does a grid cost more per job than plain records?

Run ``python benchmarks/variants.py`` (full sizes, timings repeated and the median kept)
or ``python benchmarks/variants.py --quick`` (small sizes, one run each: a smoke test).
Each figure is set beside its baseline measured in the same run: a batch of 1,000 records
x 3 x 3 combinations x 3 repeats (27,000 jobs) against a plain batch of 27,000 records.
``--no-postgres`` skips the PostgreSQL rows. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import anyio

# core.py sits beside this file: run as a script, its folder is on the import path.
from core import (
    PLAN_MAX_RECORDS,
    BenchmarkError,
    Row,
    Workspace,
    error_row,
    format_table,
    load_flow,
    progress,
    spread,
    verdict,
    workspace,
    write_records,
)

from buttermilk.batch.service import BatchService
from buttermilk.devservices import throwaway_database
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.queue import LocalQueueSettings, open_queue
from buttermilk.store import StoreSettings, open_store

ADMIN_URL = os.environ.get(
    "BUTTERMILK_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AXES = {"wording": ["plain", "formal", "terse"], "threshold": [0.05, 0.3, 0.6]}
"""Two parameter axes of three values: 9 combinations (the no-op agent ignores them)."""
REPEATS = 3
JOBS_PER_RECORD = 9 * REPEATS
RATIO_GOAL = 0.8  # grid jobs/s over plain jobs/s
MEMORY_GOAL = 1.10  # grid peak over plain peak ("unchanged": within 10 %)
CLI_VARIANTS = "batch.variants={wording: [plain, formal, terse], threshold: [0.05, 0.3, 0.6]}"


@dataclass(frozen=True)
class Shape:
    """One side of a comparison: a batch of ``records`` records with or without the grid."""

    label: str
    records: int
    grid: bool

    def request(self, flow: str, max_records: int | None = None) -> BatchRequest:
        if not self.grid:
            return BatchRequest(flow=flow, max_records=max_records)
        return BatchRequest(flow=flow, max_records=max_records, variants=AXES, repeats=REPEATS)


def shapes(jobs: int) -> tuple[Shape, Shape]:
    """A plain batch of ``jobs`` records, and a grid of as many jobs."""
    return Shape("plain", jobs, False), Shape("grid", jobs // JOBS_PER_RECORD, True)


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each benchmark is, and how often timings are repeated."""

    jobs: int
    """Jobs of each batch of the create benchmark (plain: as many records)."""
    big_records: int
    """Rows of the JSONL file planned with max_records=PLAN_MAX_RECORDS."""
    repeats: int
    """Runs of each timing benchmark; the median is reported."""
    quick: bool


FULL = Sizes(jobs=1_000 * JOBS_PER_RECORD, big_records=1_000_000, repeats=3, quick=False)
QUICK = Sizes(jobs=20 * JOBS_PER_RECORD, big_records=20_000, repeats=1, quick=True)


@contextmanager
def store_url(backend: str, ws: Workspace) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{ws.home}/batches.db"
        return
    with throwaway_database(ADMIN_URL, prefix="bm_variants_bench") as url:
        yield url


# -- 1. create rate: grid vs plain ---------------------------------------------------


async def _create(url: str, ws: Workspace, shape: Shape) -> float:
    """Seconds of one ``BatchService.create`` (plan, store every job, publish every message)."""
    flow = load_flow("bench_noop", ws.data)
    store = open_store(StoreSettings(url=url))
    try:
        async with open_queue(LocalQueueSettings(path=str(ws.home / "queue.db"))) as queue:
            service = BatchService(store, queue, StaticFlowCatalog({flow.name: flow}))
            start = time.perf_counter()
            created = await service.create(shape.request(flow.name))
            seconds = time.perf_counter() - start
    finally:
        store.close()
    expected = shape.records * (JOBS_PER_RECORD if shape.grid else 1)
    if created.batch.total != expected:
        raise BenchmarkError(f"{shape.label}: created {created.batch.total} of {expected} jobs")
    return seconds


def create_once(backend: str, shape: Shape) -> float:
    with workspace() as ws:
        write_records(ws.data / "records.jsonl", shape.records)
        with store_url(backend, ws) as url:
            return anyio.run(_create, url, ws, shape)


def bench_create(sizes: Sizes, backend: str) -> list[Row]:
    jobs = sizes.jobs
    pair = shapes(jobs)
    rates: dict[str, list[float]] = {s.label: [] for s in pair}
    # Run 0 warms up (lazy imports, statement compilation) and is not counted; plain and
    # grid then alternate, so that a change in the machine's load hits both alike.
    for rep in range(sizes.repeats + 1):
        for shape in pair:
            label = "warm-up" if rep == 0 else f"run {rep}/{sizes.repeats}"
            progress(f"create on {backend}, {shape.label}: {label} ({jobs:,} jobs)")
            seconds = create_once(backend, shape)
            if rep:
                rates[shape.label].append(jobs / seconds)
    plain, grid = (statistics.median(rates[s.label]) for s in pair)
    ratio = grid / plain
    records = pair[1].records
    return [
        Row(
            f"create rate, plain ({backend})",
            f"{plain:,.0f} jobs/s",
            "-",
            "info",
            f"{spread(rates['plain'], ',.0f')}{jobs:,} records x 1 job; BatchService.create "
            "in-process (plan, store, publish to the local queue); the baseline",
        ),
        Row(
            f"create rate, grid ({backend})",
            f"{grid:,.0f} jobs/s",
            "-",
            "info",
            f"{spread(rates['grid'], ',.0f')}{records:,} records x 9 combinations x "
            f"{REPEATS} repeats = {records * JOBS_PER_RECORD:,} jobs",
        ),
        Row(
            f"create rate, grid / plain ({backend})",
            f"{ratio:.2f}x",
            f">= {RATIO_GOAL}x",
            verdict(ratio >= RATIO_GOAL),
            "ratio of the medians above",
        ),
    ]


# -- 2. planning memory: grid vs plain ----------------------------------------------


async def _traced_create(ws: Workspace, shape: Shape) -> int:
    """Peak bytes tracemalloc saw during one create over big.jsonl (max_records)."""
    flow = load_flow("bench_big", ws.data)
    store = open_store(StoreSettings(url=f"sqlite:///{ws.home}/{shape.label}.db"))
    try:
        async with open_queue(LocalQueueSettings(path=str(ws.home / "queue.db"))) as queue:
            service = BatchService(store, queue, StaticFlowCatalog({flow.name: flow}))
            tracemalloc.start()
            try:
                await service.create(shape.request(flow.name, max_records=PLAN_MAX_RECORDS))
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
    finally:
        store.close()


def bench_planning(sizes: Sizes) -> list[Row]:
    n = sizes.big_records
    plain = Shape("plain", PLAN_MAX_RECORDS, False)
    grid = Shape("grid", PLAN_MAX_RECORDS, True)
    rss: dict[str, float] = {}
    traced: dict[str, float] = {}
    with workspace() as ws:
        progress(f"planning memory: writing {n:,} records")
        write_records(ws.data / "big.jsonl", n)
        for shape in (plain, grid):
            progress(f"planning memory: CLI create, {shape.label}, max_records={PLAN_MAX_RECORDS}")
            extra = [CLI_VARIANTS, f"batch.repeats={REPEATS}"] if shape.grid else []
            proc = ws.create("bench_big", f"batch.max_records={PLAN_MAX_RECORDS}", *extra)
            total = proc.json()["total"]
            if total != PLAN_MAX_RECORDS * (JOBS_PER_RECORD if shape.grid else 1):
                raise BenchmarkError(f"{shape.label}: created {total} jobs")
            if proc.peak_rss_kib is None:
                raise BenchmarkError("could not read VmHWM from /proc/<pid>/status (Linux only)")
            rss[shape.label] = proc.peak_rss_kib / 1024
        for shape in (plain, grid):
            progress(f"planning memory: tracemalloc, {shape.label}")
            traced[shape.label] = anyio.run(_traced_create, ws, shape) / 2**20
    rss_ratio = rss["grid"] / rss["plain"]
    traced_ratio = traced["grid"] / traced["plain"]
    what = f"{n:,} rows, max_records={PLAN_MAX_RECORDS}; grid: x 9 combinations x {REPEATS} repeats"
    return [
        Row(
            "planning peak RSS, grid / plain",
            f"{rss_ratio:.2f}x",
            f"<= {MEMORY_GOAL}x",
            verdict(rss_ratio <= MEMORY_GOAL),
            f"VmHWM of the CLI create: plain {rss['plain']:.1f} MiB, grid {rss['grid']:.1f} MiB; "
            f"{what}",
        ),
        Row(
            "planning peak traced, grid / plain",
            f"{traced_ratio:.2f}x",
            "-",
            "info",
            f"tracemalloc peak of BatchService.create in-process: plain "
            f"{traced['plain']:.1f} MiB, grid {traced['grid']:.1f} MiB (Python objects only)",
        ),
    ]


# -- table ----------------------------------------------------------------------------


def benchmarks(postgres: bool) -> list[tuple[str, Callable[[Sizes], list[Row]]]]:
    chosen: list[tuple[str, Callable[[Sizes], list[Row]]]] = [
        ("create rate (sqlite)", lambda sizes: bench_create(sizes, "sqlite")),
    ]
    if postgres:
        chosen.append(("create rate (postgres)", lambda sizes: bench_create(sizes, "postgres")))
    chosen.append(("planning memory", bench_planning))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite rows only")
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
    seconds = time.perf_counter() - start
    print(format_table(rows, sizes, seconds, "Buttermilk variants benchmarks"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
