"""Benchmark of the LLM path: the real CLI against a plain aiohttp loop, one fake endpoint.

Run ``python benchmarks/llm.py`` (2,000 records; 200 ms and 50 ms latency; concurrency
100 and 200; each figure the median of 3 runs) or ``--quick`` (a smoke test). A fake
OpenAI-compatible server (``llm_server.py``) answers after a fixed delay; against it, in
the same run, the baseline (``llm_baseline.py``: asyncio + aiohttp, nothing stored) and
``python -m buttermilk.runner.cli ui=batch flow=bench_llm batch.wait=true ...`` in a fresh
``BUTTERMILK_HOME``. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core import (
    BenchmarkError,
    Proc,
    Row,
    Workspace,
    error_row,
    format_table,
    progress,
    run_child,
    spread,
    verdict,
    workspace,
    write_records,
)

from buttermilk.domain import JobStatus
from buttermilk.store import StoreSettings, open_store

HERE = Path(__file__).resolve().parent
GOAL_LATENCY, GOAL_CONCURRENCY = 0.2, 100  # the scenario the goals apply to
EFFICIENCY_RATIO_GOAL = 0.95  # of the baseline's efficiency
RATE_GOAL = 300.0  # records/s of the whole command
CPU_GOAL = 2.5  # CPU seconds per 1,000 calls
TIMEOUT = 300.0


@dataclass(frozen=True, kw_only=True)
class Sizes:
    records: int
    latencies: tuple[float, ...]
    concurrencies: tuple[int, ...]
    repeats: int
    quick: bool


FULL = Sizes(records=2_000, latencies=(0.2, 0.05), concurrencies=(100, 200), repeats=3, quick=False)
QUICK = Sizes(records=200, latencies=(0.05,), concurrencies=(100,), repeats=1, quick=True)


@dataclass(frozen=True)
class Measured:
    """One run of one client: whole-command wall, time inside the run, CPU seconds."""

    wall: float
    inside: float
    cpu: float
    before: float = 0.0
    """CLI: seconds from starting the process to the batch's first claim."""
    after: float = 0.0
    """CLI: seconds from the batch's end to the process's exit."""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run: Callable[[], Proc]) -> tuple[Proc, float]:
    """The process ``run`` ran, and the CPU seconds (user + sys) it used.

    The child is reaped inside ``run_child``, so the growth of RUSAGE_CHILDREN around it
    is its own CPU (the server, also our child, is reaped only at the end).
    """
    before = children_cpu()
    proc = run()
    return proc, children_cpu() - before


@contextmanager
def fake_server(latency: float) -> Iterator[str]:
    """The fake endpoint's base URL, for as long as the block runs."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "llm_server.py"), f"--latency={latency}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            raise BenchmarkError(f"the fake server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # it stops when its stdin closes
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def baseline_once(url: str, n: int, concurrency: int) -> Measured:
    args = [sys.executable, str(HERE / "llm_baseline.py"), url]
    args += [f"--calls={n}", f"--concurrency={concurrency}"]
    proc, cpu = timed(lambda: run_child(args, env=dict(os.environ), cwd=HERE, timeout=TIMEOUT))
    if proc.returncode != 0:
        raise BenchmarkError(f"baseline exit {proc.returncode}: {proc.stderr[-2000:]}")
    return Measured(proc.wall, float(proc.json()["elapsed"]), cpu)


def cli_once(url: str, n: int, concurrency: int) -> Measured:
    with workspace() as ws:
        write_records(ws.data / "records.jsonl", n)
        os.environ["BUTTERMILK_BENCH_LLM_URL"] = url  # the flow's base_url
        started = time.time()
        proc, cpu = timed(lambda: cli_run(ws, n, concurrency))
        ended = time.time()
        store = open_store(StoreSettings(url=f"sqlite:///{ws.home}/batches.db"))
        try:
            (batch,) = store.list_batches(limit=1)
            completed = store.job_counts([batch.id])[batch.id].get(JobStatus.COMPLETED, 0)
        finally:
            store.close()
    if completed != n or batch.started_at is None or batch.finished_at is None:
        raise BenchmarkError(f"the CLI completed {completed} of {n} jobs ({batch.status.value})")
    return Measured(
        proc.wall,
        batch.finished_at - batch.started_at,
        cpu,
        before=batch.started_at - started,
        after=ended - batch.finished_at,
    )


def cli_run(ws: Workspace, n: int, concurrency: int) -> Proc:
    return ws.cli(
        "flow=bench_llm",
        f"batch.max_records={n}",
        f"batch.concurrency={concurrency}",
        f"batch.worker_concurrency={concurrency}",
        "batch.wait=true",
    )


def scenario(sizes: Sizes, url: str, latency: float, concurrency: int) -> list[Row]:
    n = sizes.records
    ideal = n * latency / concurrency
    base: list[Measured] = []
    ours: list[Measured] = []
    label = f"{latency * 1000:.0f} ms, c={concurrency}"
    for rep in range(sizes.repeats):
        progress(f"{label}: run {rep + 1}/{sizes.repeats}: baseline, then CLI ({n} records)")
        base.append(baseline_once(url, n, concurrency))
        ours.append(cli_once(url, n, concurrency))

    def med(runs: list[Measured], what: str) -> tuple[float, list[float]]:
        values = {
            "rate": [n / m.wall for m in runs],
            "eff": [ideal / m.inside for m in runs],
            "cpu": [m.cpu / n * 1000 for m in runs],
        }[what]
        return statistics.median(values), values

    goals = latency == GOAL_LATENCY and concurrency == GOAL_CONCURRENCY and not sizes.quick
    b_rate, _ = med(base, "rate")
    b_eff, b_effs = med(base, "eff")
    b_cpu, _ = med(base, "cpu")
    rate, rates = med(ours, "rate")
    eff, effs = med(ours, "eff")
    cpu, cpus = med(ours, "cpu")
    ratio = eff / b_eff

    def goal_row(name: str, measured: str, goal: str, ok: bool, notes: str) -> Row:
        return Row(
            f"{name} ({label})",
            measured,
            goal if goals else "-",
            verdict(ok) if goals else "info",
            notes,
        )

    return [
        goal_row(
            "CLI records/s",
            f"{rate:,.0f} rec/s",
            f">= {RATE_GOAL:.0f} rec/s",
            rate >= RATE_GOAL,
            f"{spread(rates, ',.0f')}{n} records / wall of the whole CLI command; "
            f"baseline (aiohttp, whole process): {b_rate:,.0f} rec/s; CLI wall outside "
            f"the run: {statistics.median(m.before for m in ours):.2f} s to the first claim, "
            f"{statistics.median(m.after for m in ours):.2f} s from the batch's end to exit",
        ),
        goal_row(
            "CLI efficiency / baseline's",
            f"{ratio:.3f}",
            f">= {EFFICIENCY_RATIO_GOAL}",
            ratio >= EFFICIENCY_RATIO_GOAL,
            f"CLI {eff:.3f} ({spread(effs, '.3f')}batch started_at..finished_at), baseline "
            f"{b_eff:.3f} ({spread(b_effs, '.3f')}first request..last answer); ideal "
            f"{ideal:g} s",
        ),
        goal_row(
            "CLI CPU per 1,000 calls",
            f"{cpu:.2f} s",
            f"<= {CPU_GOAL}",
            cpu <= CPU_GOAL,
            f"{spread(cpus, '.2f')}user+sys of the whole CLI process (start-up included); "
            f"baseline: {b_cpu:.2f} s",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    start = time.perf_counter()
    rows: list[Row] = []
    failed = False
    for latency in sizes.latencies:
        with fake_server(latency) as url:
            for concurrency in sizes.concurrencies:
                try:
                    rows.extend(scenario(sizes, url, latency, concurrency))
                except Exception as exc:  # report it in the table and go on
                    failed = True
                    name = f"LLM ({latency * 1000:.0f} ms, c={concurrency})"
                    rows.append(error_row(name, exc))
    seconds = time.perf_counter() - start
    print(
        format_table(rows, sizes, seconds, f"Buttermilk LLM benchmark (load at the start {load})")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
