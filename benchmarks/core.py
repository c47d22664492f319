"""Benchmarks of the batch machinery: concurrency efficiency, overhead, planning memory.

Run ``python benchmarks/core.py`` (full sizes, each timing repeated and the median kept)
or ``python benchmarks/core.py --quick`` (small sizes, one run each: a smoke test).
Every benchmark runs the real CLI in subprocesses, in fresh temporary ``BUTTERMILK_HOME``
and ``BUTTERMILK_DATA`` folders, and one table of figures is printed at the end.
See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio
from omegaconf import OmegaConf

from buttermilk.batch.planner import plan_records
from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue import LocalQueueSettings, open_queue
from buttermilk.store import StoreSettings, open_store

BENCH_CONF = Path(__file__).resolve().parent / "conf"
CLI = [sys.executable, "-m", "buttermilk.runner.cli", "ui=batch"]
CLI_TIMEOUT = 300.0  # seconds any one CLI process may take before it is killed

SLEEP_SECONDS = 0.1  # what bench_sleep's agent waits per record
EFFICIENCY_CONCURRENCY = 50
EFFICIENCY_GOAL = 0.85
CREATE_GOAL = 20_000.0  # records/s
RUN_GOAL = 1_000.0  # records/s
RUN_CONCURRENCIES = (5, 50)  # 5 is batch.concurrency's default
MEMORY_GOAL_MIB = 200.0
PLAN_MAX_RECORDS = 1_000


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each benchmark is, and how often timings are repeated."""

    sleep_records: int
    """Records of the concurrency-efficiency benchmark (agent waits 100 ms each)."""
    noop_records: int
    """Records of the overhead benchmarks (agent does nothing)."""
    big_records: int
    """Rows of the JSONL file planned with max_records=PLAN_MAX_RECORDS."""
    repeats: int
    """Runs of each timing benchmark; the median is reported."""
    quick: bool


FULL = Sizes(sleep_records=2_000, noop_records=5_000, big_records=1_000_000, repeats=3, quick=False)
QUICK = Sizes(sleep_records=200, noop_records=500, big_records=20_000, repeats=1, quick=True)


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    benchmark: str
    measured: str
    goal: str = "-"
    result: str = "info"
    notes: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- running the CLI -------------------------------------------------------------


class BenchmarkError(RuntimeError):
    """Raised when a benchmark cannot produce its figure: a CLI process failed, or fewer
    jobs were created or run than asked for."""


@dataclass(frozen=True)
class Proc:
    """A finished CLI process: its output, wall time and peak resident memory."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall: float
    """Seconds from just before the process was started until it had exited."""
    peak_rss_kib: int | None
    """The process's own peak resident set size (VmHWM), None if it could not be read."""

    def json(self) -> Any:
        return json.loads(self.stdout)


def read_vmhwm_kib(pid: int) -> int | None:
    """``VmHWM`` of a live process (KiB): the high-water mark of its resident set."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None  # gone, a zombie (its memory is already released), or not Linux


class PeakSampler:
    """Follows one process's VmHWM in a thread, every ``interval`` seconds, until stopped.

    VmHWM belongs to the address space ``exec`` gave the process, so it counts that
    process alone, and it never decreases: the last reading is the peak up to that
    moment. Only growth in the final interval before exit could be missed.
    """

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.pid = pid
        self.interval = interval
        self.peak: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while True:
            value = read_vmhwm_kib(self.pid)
            if value is not None:
                self.peak = max(self.peak or 0, value)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> int | None:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_child(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> Proc:
    """Run one process to its end; time it and follow its peak memory.

    Output goes to files, so no pipe can fill up and stall the process.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        sampler = PeakSampler(proc.pid)
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            returncode = proc.wait()
        except BaseException:  # Ctrl-C: leave no benchmark process behind
            proc.kill()
            proc.wait()
            raise
        finally:
            wall = time.perf_counter() - start
            peak = sampler.stop()
        out.seek(0)
        err.seek(0)
        return Proc(args, returncode, out.read(), err.read(), wall, peak)


@dataclass
class Workspace:
    """Fresh state and data folders, and the CLI run against them."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BUTTERMILK_HOME=str(self.home),
            BUTTERMILK_DATA=str(self.data),
            BUTTERMILK_LOG_LEVEL="INFO",
        )
        return env

    def cli(self, *args: str) -> Proc:
        """Run the CLI with the benchmark flows on Hydra's search path; raise unless exit 0."""
        full = [*CLI, f"hydra.searchpath=[file://{BENCH_CONF}]", *args]
        proc = run_child(full, env=self.environ, cwd=self.root, timeout=CLI_TIMEOUT)
        if proc.returncode != 0:
            raise BenchmarkError(f"exit {proc.returncode}: {' '.join(full)}\n{proc.stderr[-2000:]}")
        return proc

    def create(self, flow: str, *args: str) -> Proc:
        return self.cli(f"flow={flow}", "batch.command=create", "batch.format=json", *args)

    def run(self, max_jobs: int, *args: str) -> Proc:
        """A worker that stops once ``max_jobs`` jobs are done; its JSON is in stdout."""
        return self.cli(
            "batch.command=run", f"batch.max_jobs={max_jobs}", "batch.format=json", *args
        )


@contextmanager
def workspace() -> Iterator[Workspace]:
    root = Path(tempfile.mkdtemp(prefix="buttermilk-bench-"))
    try:
        ws = Workspace(root)
        ws.home.mkdir()
        ws.data.mkdir()
        yield ws
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- data and flows ---------------------------------------------------------------


def write_records(path: Path, count: int) -> int:
    """A JSONL file of ``count`` short texts (about 60 bytes a line); returns its size."""
    chunk = 100_000
    with path.open("w") as fh:
        for start in range(0, count, chunk):
            fh.write(
                "".join(
                    f'{{"id":"r{i:07d}","text":"short text number {i} to plan"}}\n'
                    for i in range(start, min(count, start + chunk))
                )
            )
    return path.stat().st_size


def load_flow(name: str, data_dir: Path) -> FlowConfig:
    """A benchmark flow from its YAML, with ``${oc.env:BUTTERMILK_DATA}`` set to ``data_dir``."""
    raw = OmegaConf.load(BENCH_CONF / "flows" / f"{name}.yaml")
    before = os.environ.get("BUTTERMILK_DATA")
    os.environ["BUTTERMILK_DATA"] = str(data_dir)
    try:
        data: Any = OmegaConf.to_container(raw, resolve=True)
    finally:
        if before is None:
            del os.environ["BUTTERMILK_DATA"]
        else:
            os.environ["BUTTERMILK_DATA"] = before
    data["name"] = name
    return FlowConfig.model_validate(data)


def spread(values: list[float], fmt: str) -> str:
    """The individual runs, for the notes column (empty for a single run)."""
    if len(values) < 2:
        return ""
    return "runs " + "/".join(format(v, fmt) for v in values) + "; "


# -- 1. concurrency efficiency ------------------------------------------------------


def bench_concurrency(sizes: Sizes) -> list[Row]:
    n = sizes.sleep_records
    ideal = n * SLEEP_SECONDS / EFFICIENCY_CONCURRENCY
    by_elapsed: list[float] = []
    by_wall: list[float] = []
    for rep in range(sizes.repeats):
        progress(f"concurrency efficiency: run {rep + 1}/{sizes.repeats} ({n} records)")
        with workspace() as ws:
            write_records(ws.data / "records.jsonl", n)
            ws.create("bench_sleep", f"batch.concurrency={EFFICIENCY_CONCURRENCY}")
            proc = ws.run(n, "batch.worker_concurrency=100")
            stats = proc.json()
            if stats["completed"] != n:
                raise BenchmarkError(f"worker completed {stats['completed']} of {n} jobs")
            by_elapsed.append(ideal / stats["elapsed"])
            by_wall.append(ideal / proc.wall)
    first, second = statistics.median(by_elapsed), statistics.median(by_wall)
    what = f"{n} x 100 ms, concurrency {EFFICIENCY_CONCURRENCY}, ideal {ideal:g} s"
    return [
        Row(
            "concurrency efficiency (worker elapsed)",
            f"{first:.3f}",
            f">= {EFFICIENCY_GOAL}",
            verdict(first >= EFFICIENCY_GOAL),
            f"{spread(by_elapsed, '.3f')}{what}; wall = run loop's 'elapsed'; the goal applies "
            "to this row",
        ),
        Row(
            "concurrency efficiency (process wall)",
            f"{second:.3f}",
            "-",
            "info",
            f"{spread(by_wall, '.3f')}wall = whole `run` process incl. Python + Hydra "
            "start-up; goal not applied",
        ),
    ]


# -- 2. overhead --------------------------------------------------------------------


async def _create_in_process(ws: Workspace, flow: FlowConfig) -> tuple[float, float]:
    """Wall and CPU seconds of one ``BatchService.create`` over a real store and local queue.

    The CPU time (of every thread of this process) shows how much of the wall time was
    work, and how much was waiting for a core on a busy machine.
    """
    store = open_store(StoreSettings(url=f"sqlite:///{ws.home}/batches.db"))
    try:
        async with open_queue(LocalQueueSettings(path=str(ws.home / "queue.db"))) as queue:
            service = BatchService(store, queue, StaticFlowCatalog({flow.name: flow}))
            request = BatchRequest(flow=flow.name)
            start, cpu_start = time.perf_counter(), time.process_time()
            created = await service.create(request)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if created.batch.total != created.rows_read:
                raise BenchmarkError(f"created {created.batch.total} of {created.rows_read} jobs")
            return seconds, cpu
    finally:
        store.close()


def bench_create_in_process(sizes: Sizes) -> list[Row]:
    n = sizes.noop_records
    rates: list[float] = []
    cpu_rates: list[float] = []
    cold = 0.0
    # Run 0 warms up: the first create in a process also pays lazy imports (the agent's
    # module) and SQLAlchemy's statement compilation; it is shown but not counted.
    for rep in range(sizes.repeats + 1):
        label = "warm-up" if rep == 0 else f"run {rep}/{sizes.repeats}"
        progress(f"create in-process: {label} ({n} records)")
        with workspace() as ws:
            write_records(ws.data / "records.jsonl", n)
            flow = load_flow("bench_noop", ws.data)
            wall, cpu = anyio.run(_create_in_process, ws, flow)
        if rep == 0:
            cold = n / wall
        else:
            rates.append(n / wall)
            cpu_rates.append(n / cpu)
    rate = statistics.median(rates)
    return [
        Row(
            "create rate (in-process)",
            f"{rate:,.0f} rec/s",
            f">= {CREATE_GOAL:,.0f} rec/s",
            verdict(rate >= CREATE_GOAL),
            f"{spread(rates, ',.0f')}{n} records; times BatchService.create alone (plan, "
            f"store, publish) after a warm-up run ({cold:,.0f} rec/s); per CPU second: "
            f"{statistics.median(cpu_rates):,.0f} rec/s; the goal applies to this row",
        )
    ]


def bench_cli_overhead(sizes: Sizes) -> list[Row]:
    n = sizes.noop_records
    create_rates: list[float] = []
    run_rates: dict[int, list[float]] = {c: [] for c in RUN_CONCURRENCIES}
    for rep in range(sizes.repeats):
        for concurrency in RUN_CONCURRENCIES:
            progress(
                f"CLI create + run, concurrency {concurrency}: run {rep + 1}/{sizes.repeats} "
                f"({n} records)"
            )
            with workspace() as ws:
                write_records(ws.data / "records.jsonl", n)
                created = ws.create("bench_noop", f"batch.concurrency={concurrency}")
                create_rates.append(n / created.wall)
                stats = ws.run(n).json()
                if stats["completed"] != n:
                    raise BenchmarkError(f"worker completed {stats['completed']} of {n} jobs")
                run_rates[concurrency].append(stats["completed"] / stats["elapsed"])
    create_rate = statistics.median(create_rates)
    rows = [
        Row(
            "create rate (CLI process)",
            f"{create_rate:,.0f} rec/s",
            "-",
            "info",
            f"{spread(create_rates, ',.0f')}{n} records / wall of the whole `create` process "
            f"(incl. start-up; {len(create_rates)} creates); goal applies to in-process row",
        )
    ]
    for concurrency, rates in run_rates.items():
        rate = statistics.median(rates)
        rows.append(
            Row(
                f"run rate (concurrency={concurrency})",
                f"{rate:,.0f} rec/s",
                f">= {RUN_GOAL:,.0f} rec/s",
                verdict(rate >= RUN_GOAL),
                f"{spread(rates, ',.0f')}{n} records; completed / worker 'elapsed'",
            )
        )
    return rows


# -- 3. planning memory -------------------------------------------------------------


def bench_planning(sizes: Sizes) -> list[Row]:
    n = sizes.big_records
    with workspace() as ws:
        progress(f"planning: writing {n:,} records")
        size = write_records(ws.data / "big.jsonl", n)
        # Baseline: the same command on a file of max_records rows, so the table can show
        # how much of the peak is the interpreter and its imports.
        write_records(ws.data / "records.jsonl", PLAN_MAX_RECORDS)
        progress("planning: CLI create on the small file (baseline memory)")
        base = ws.create("bench_noop", f"batch.max_records={PLAN_MAX_RECORDS}")
        progress(f"planning: CLI create on {n:,} records with max_records={PLAN_MAX_RECORDS}")
        big = ws.create("bench_big", f"batch.max_records={PLAN_MAX_RECORDS}")
        if big.json()["total"] != PLAN_MAX_RECORDS:
            raise BenchmarkError(f"created {big.json()['total']} jobs, not {PLAN_MAX_RECORDS}")
        flow = load_flow("bench_big", ws.data)
        times: list[float] = []
        for rep in range(sizes.repeats):
            progress(f"planning: plan_records in-process, run {rep + 1}/{sizes.repeats}")
            start = time.perf_counter()
            plan = plan_records(flow, shuffle=True, max_records=PLAN_MAX_RECORDS)
            times.append(time.perf_counter() - start)
            if plan.rows_read != n or len(plan.records) != PLAN_MAX_RECORDS:
                raise BenchmarkError(f"planned {len(plan.records)} of {plan.rows_read} rows")
    if big.peak_rss_kib is None or base.peak_rss_kib is None:
        raise BenchmarkError("could not read VmHWM from /proc/<pid>/status (Linux only)")
    peak = big.peak_rss_kib / 1024
    plan_time = statistics.median(times)
    return [
        Row(
            "planning peak memory (CLI create)",
            f"{peak:.1f} MiB",
            f"< {MEMORY_GOAL_MIB:.0f} MiB",
            verdict(peak < MEMORY_GOAL_MIB),
            f"{n:,} rows ({size / n:.0f} B each), max_records={PLAN_MAX_RECORDS}; peak RSS "
            f"(VmHWM) of the create process; same command on a {PLAN_MAX_RECORDS}-row file: "
            f"{base.peak_rss_kib / 1024:.1f} MiB",
        ),
        Row(
            "planning time",
            f"{plan_time:.2f} s",
            "-",
            "info",
            f"{spread(times, '.2f')}plan_records in-process over {n:,} rows "
            f"({n / plan_time:,.0f} rows/s); whole CLI create: {big.wall:.2f} s",
        ),
    ]


# -- table ------------------------------------------------------------------------


BENCHMARKS: list[tuple[str, Callable[[Sizes], list[Row]]]] = [
    ("concurrency efficiency", bench_concurrency),
    ("create rate (in-process)", bench_create_in_process),
    ("CLI create and run rates", bench_cli_overhead),
    ("planning", bench_planning),
]
HEADER = ("benchmark", "measured", "goal", "result", "notes")


class RunSizes(Protocol):
    """What the table's title says of a run's sizes."""

    @property
    def quick(self) -> bool: ...

    @property
    def repeats(self) -> int: ...


def format_table(
    rows: list[Row], sizes: RunSizes, seconds: float, name: str = "Buttermilk batch benchmarks"
) -> str:
    """The result table under a title naming the mode, the machine and its load."""
    cells = [HEADER, *((r.benchmark, r.measured, r.goal, r.result, r.notes) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    lines = []
    for row in cells:
        fixed = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append(f"{fixed}  {row[-1]}".rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(HEADER[-1]))
    if sizes.quick:
        mode = "QUICK MODE (small sizes, one run each: a smoke test, figures not comparable)"
    else:
        mode = f"full mode (median of {sizes.repeats} runs for timings)"
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    title = (
        f"{name} - {mode}; {os.cpu_count()} CPUs; took {seconds:.0f} s; "
        f"load average at the end {load} (1/5/15 min)"
    )
    return "\n".join([title, "", *lines])


def error_row(name: str, exc: BaseException) -> Row:
    """A benchmark that raised, as a row of the table (its traceback goes to stderr)."""
    traceback.print_exception(exc)
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return Row(name, "ERROR", "-", "ERROR", first_line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    rows: list[Row] = []
    failed = False
    for name, bench in BENCHMARKS:
        try:
            rows.extend(bench(sizes))
        except Exception as exc:  # report it in the table and go on with the others
            failed = True
            rows.append(error_row(name, exc))
    print(format_table(rows, sizes, time.perf_counter() - start))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
