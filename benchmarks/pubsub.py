"""Benchmarks of batches on Pub/Sub + PostgreSQL, each against the plain client's best.

Run ``python benchmarks/pubsub.py`` (full sizes, each scenario repeated and the median
kept) or ``python benchmarks/pubsub.py --quick`` (small sizes, one run: a smoke test).

The Pub/Sub emulator named by ``PUBSUB_EMULATOR_HOST`` is used when set; otherwise one is
started on a free port for the run and stopped (its whole process group) at the end.
Every scenario gets a fresh Pub/Sub project id and a fresh PostgreSQL database (created
from the admin database of ``BUTTERMILK_BENCH_POSTGRES``, default the local server's
``test`` database), dropped afterwards. Everything is timed in this process:

1. publish efficiency: ``BatchService.create`` (plan, store in PostgreSQL, publish) of the
   no-op flow, versus a plain ``PublisherClient`` (``BatchSettings(max_messages=1000,
   max_latency=0.01)``) publishing the same message bodies to a fresh topic;
2. worker efficiency: a ``Worker`` running the no-op jobs of a published batch (first
   claim to last job end), versus a plain async unary pull + ack loop (4 pulls of 100 in
   flight, acks batched) over as many messages on a fresh subscription;
3. concurrency efficiency: the 100 ms sleep flow at concurrency 50; the ideal time
   (records x 0.1 s / 50) over the worker's active time.

One table goes to stdout at the end; progress goes to stderr. The exit code is 0 whenever
the table was printed: a missed goal is a FAIL row (and a line under the table), not an
error.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import grpc
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1
from google.pubsub_v1 import SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
from omegaconf import OmegaConf

from buttermilk.batch.creating import new_batch_id
from buttermilk.batch.planner import plan_records
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions, WorkerStats
from buttermilk.devservices import (
    ServiceError,
    emulator_ready,
    free_port,
    start_emulator,
    stop_emulator,
    throwaway_database,
)
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue import JobMessage, PubSubQueueSettings, open_queue
from buttermilk.store import StoreSettings, open_store

BENCH_CONF = Path(__file__).resolve().parent / "conf"
ADMIN_URL = os.environ.get(
    "BUTTERMILK_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SCENARIO_TIMEOUT = 120.0  # seconds any one timed operation may take before it is abandoned

PUBLISH_GOAL = 0.8
WORKER_GOAL = 0.25  # issue 13, goal 4
EFFICIENCY_GOAL = 0.85
SLEEP_SECONDS = 0.1  # what bench_sleep's agent waits per record
EFFICIENCY_CONCURRENCY = 50  # batch.concurrency and the worker's concurrency
NOOP_CONCURRENCY = 50  # batch.concurrency of the worker-efficiency batch
WORKER_CONCURRENCY = 100  # the worker's concurrency there (batch.worker_concurrency's default)
HEADROOM_CONCURRENCY = 100  # the informational concurrency run: room to hold more messages
INLINE_RECORD_BYTES = 65_536  # queue.inline_record_bytes's default

BASELINE_BATCH = pubsub_v1.types.BatchSettings(max_messages=1000, max_latency=0.01)
BASELINE_PULL = 100  # messages per unary pull (the most the service returns)
BASELINE_PULLS_IN_FLIGHT = 4
BASELINE_PULL_TIMEOUT = 2.0
BASELINE_ACK_CHUNK = 1000


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """How big each benchmark is, and how often it is repeated."""

    publish_records: int
    worker_records: int
    sleep_records: int
    repeats: int
    """Runs of the publish and concurrency benchmarks; the median is reported."""
    worker_repeats: int
    """Runs of the worker benchmark (the longest: fewer, to keep a full run near 3 min)."""
    quick: bool


FULL = Sizes(
    publish_records=20_000,
    worker_records=20_000,
    sleep_records=2_000,
    repeats=3,
    worker_repeats=2,
    quick=False,
)
QUICK = Sizes(
    publish_records=2_000,
    worker_records=2_000,
    sleep_records=500,
    repeats=1,
    worker_repeats=1,
    quick=True,
)
WARM_UP_RECORDS = 1_000


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    benchmark: str
    measured: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    result: str = "info"
    notes: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchmarkError(RuntimeError):
    """Raised when a benchmark cannot produce its figure."""


def spread(values: list[float], fmt: str) -> str:
    """The individual runs, for the notes column (empty for a single run)."""
    if len(values) < 2:
        return ""
    return "runs " + "/".join(format(v, fmt) for v in values) + "; "


# -- the Pub/Sub emulator ----------------------------------------------------------


@contextmanager
def emulator() -> Iterator[str]:
    """``host:port`` of the emulator: the given one, or one started here and stopped after."""
    given = os.environ.get("PUBSUB_EMULATOR_HOST")
    if given:
        if not emulator_ready(given):
            raise BenchmarkError(f"PUBSUB_EMULATOR_HOST={given} does not answer")
        progress(f"using the emulator at {given}")
        yield given
        return
    port = free_port()
    host = f"127.0.0.1:{port}"
    progress(f"starting the Pub/Sub emulator on {host}")
    try:
        proc = start_emulator(port)
    except ServiceError as exc:
        raise BenchmarkError(str(exc)) from None
    try:
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        try:
            yield host
        finally:
            del os.environ["PUBSUB_EMULATOR_HOST"]
    finally:
        progress("stopping the Pub/Sub emulator")
        stop_emulator(proc)


# -- one scenario: a Pub/Sub project, a database, a data folder ---------------------


@dataclass
class Scenario:
    """Everything one scenario owns; all of it is removed afterwards."""

    project: str
    database_url: str
    data: Path
    topics: list[str] = field(default_factory=list)
    subscriptions: list[str] = field(default_factory=list)

    def queue_settings(self) -> PubSubQueueSettings:
        return PubSubQueueSettings(project=self.project, min_backoff=0, max_backoff=1)

    def store_settings(self) -> StoreSettings:
        return StoreSettings(url=self.database_url)


def _delete_project(project: str) -> None:
    """Delete the project's subscriptions and topics, so the emulator frees their messages."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        for sub in subscriber.list_subscriptions(project=f"projects/{project}", timeout=10):
            subscriber.delete_subscription(subscription=sub.name, timeout=10)
        for topic in publisher.list_topics(project=f"projects/{project}", timeout=10):
            publisher.delete_topic(topic=topic.name, timeout=10)
    finally:
        subscriber.close()
        publisher.stop()


@contextmanager
def scenario(label: str) -> Iterator[Scenario]:
    data = Path(tempfile.mkdtemp(prefix="buttermilk-bench-"))
    try:
        with throwaway_database(ADMIN_URL, prefix="bm_pubsub_bench") as url:
            found = Scenario(
                project=f"bench-{label}-{secrets.token_hex(4)}", database_url=url, data=data
            )
            try:
                yield found
            finally:
                try:
                    _delete_project(found.project)
                except Exception as exc:  # the emulator forgets everything when it stops
                    progress(f"could not clean up Pub/Sub project {found.project}: {exc}")
    finally:
        shutil.rmtree(data, ignore_errors=True)


# -- data and flows ---------------------------------------------------------------


def write_records(path: Path, count: int) -> None:
    """A JSONL file of ``count`` short texts (about 60 bytes a line), as benchmarks/core.py."""
    with path.open("w") as fh:
        fh.write(
            "".join(
                f'{{"id":"r{i:07d}","text":"short text number {i} to plan"}}\n'
                for i in range(count)
            )
        )


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


def message_bodies(flow: FlowConfig) -> list[bytes]:
    """The bodies ``create`` publishes for this flow's records (the record inline)."""
    batch_id = new_batch_id()
    return [
        JobMessage(batch_id=batch_id, record_id=r.record_id, flow=flow.name, record=r).encode(
            record_limit=INLINE_RECORD_BYTES
        )
        for r in plan_records(flow, shuffle=True, max_records=None).records
    ]


class Timed:
    """Stands in for an object; adds up wall seconds and calls of the named methods."""

    def __init__(self, inner: Any, *names: str) -> None:
        self.inner = inner
        self._names = set(names)
        self.seconds: dict[str, float] = dict.fromkeys(names, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(names, 0)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name not in self._names:
            return value

        def count(start: float) -> None:
            self.seconds[name] += time.perf_counter() - start
            self.calls[name] += 1

        if inspect.iscoroutinefunction(value):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return await value(*args, **kwargs)
                finally:
                    count(start)

            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                count(start)

        return timed


# -- buttermilk's side ----------------------------------------------------------------


@dataclass(frozen=True)
class CreateTiming:
    seconds: float
    cpu: float
    phases: dict[str, float]


async def create_batch(sc: Scenario, flow: FlowConfig, concurrency: int = 5) -> CreateTiming:
    """One ``BatchService.create`` over the scenario's PostgreSQL and Pub/Sub; timed."""
    store = Timed(open_store(sc.store_settings()), "create_batch")
    try:
        async with open_queue(sc.queue_settings()) as inner_queue:
            queue = Timed(inner_queue, "prepare", "publish")
            service = BatchService(store, queue, StaticFlowCatalog({flow.name: flow}))  # type: ignore[arg-type]
            request = BatchRequest(flow=flow.name, concurrency=concurrency)
            start, cpu_start = time.perf_counter(), time.process_time()
            with anyio.fail_after(SCENARIO_TIMEOUT):
                created = await service.create(request)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if created.batch.total != created.rows_read:
                raise BenchmarkError(f"created {created.batch.total} of {created.rows_read} jobs")
    finally:
        store.inner.close()
    phases = {
        "store": store.seconds["create_batch"],
        "prepare": queue.seconds["prepare"],
        "publish": queue.seconds["publish"],
    }
    phases["plan etc."] = seconds - phases["prepare"] - max(phases["store"], phases["publish"])
    return CreateTiming(seconds, cpu, phases)


@dataclass(frozen=True)
class WorkerRun:
    stats: WorkerStats
    exchange_calls: int
    exchange_seconds: float
    receive_calls: int
    ack_calls: int
    cpu: float = 0.0
    """CPU seconds of this process (the worker) over the run."""
    database_cpu: float = 0.0
    """CPU seconds of the scenario database's PostgreSQL backend processes over the run."""


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def database_cpu(database_url: str) -> float:
    """CPU seconds (user + system) so far of the PostgreSQL backends connected to the
    database (their pids from pg_stat_activity, their times from /proc; same machine)."""
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL.replace("+psycopg", "")) as conn:
        pids = [
            row[0]
            for row in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
        ]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


async def run_worker(sc: Scenario, n: int, concurrency: int) -> WorkerRun:
    """A worker in this process until ``n`` jobs are claimed and done."""
    store = Timed(open_store(sc.store_settings()), "exchange")
    try:
        async with open_queue(sc.queue_settings()) as inner_queue:
            queue = Timed(inner_queue, "receive", "ack")
            options = WorkerOptions(concurrency=concurrency, max_jobs=n, idle_timeout=10.0)
            worker = Worker(store, queue, options)  # type: ignore[arg-type]
            db_start, cpu_start = database_cpu(sc.database_url), time.process_time()
            with anyio.fail_after(SCENARIO_TIMEOUT):
                stats = await worker.run()
            cpu = time.process_time() - cpu_start
            db_cpu = database_cpu(sc.database_url) - db_start  # before the pool closes
    finally:
        store.inner.close()
    if stats.completed != n:
        raise BenchmarkError(
            f"the worker completed {stats.completed} of {n} jobs ({stats.failed} failed, "
            f"{stats.skipped} skipped, {stats.malformed} malformed)"
        )
    return WorkerRun(
        stats,
        store.calls["exchange"],
        store.seconds["exchange"],
        queue.calls["receive"],
        queue.calls["ack"],
        cpu,
        db_cpu,
    )


# -- the plain client's side ---------------------------------------------------------


def make_topic(sc: Scenario, name: str, subscription: str | None = None) -> tuple[str, str | None]:
    """A fresh topic (and subscription on it) in the scenario's project."""
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    try:
        topic = publisher.topic_path(sc.project, name)
        publisher.create_topic(name=topic, timeout=10)
        sub = None
        if subscription:
            sub = subscriber.subscription_path(sc.project, subscription)
            subscriber.create_subscription(
                name=sub, topic=topic, ack_deadline_seconds=60, timeout=10
            )
        return topic, sub
    finally:
        subscriber.close()
        publisher.stop()


def plain_publish(topic: str, bodies: list[bytes]) -> float:
    """Seconds to publish every body with a tuned batching publisher, then wait for all."""
    publisher = pubsub_v1.PublisherClient(batch_settings=BASELINE_BATCH)
    try:
        start = time.perf_counter()
        futures: list[Future[str]] = [publisher.publish(topic, body) for body in bodies]
        for future in futures:
            future.result(timeout=SCENARIO_TIMEOUT)
        return time.perf_counter() - start
    finally:
        publisher.stop()


async def plain_pull(subscription: str, n: int) -> float:
    """Seconds from the first pull's answer until ``n`` distinct messages are acked.

    ``BASELINE_PULLS_IN_FLIGHT`` tasks pull (100 each, short deadline, no retries); one
    task acks whatever has arrived, up to ``BASELINE_ACK_CHUNK`` ids a request.
    """
    host = os.environ["PUBSUB_EMULATOR_HOST"]
    channel = grpc.aio.insecure_channel(host)
    client = SubscriberAsyncClient(
        transport=SubscriberGrpcAsyncIOTransport(
            channel=channel,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    )
    seen: set[str] = set()
    to_ack: list[str] = []
    arrived = asyncio.Event()
    first: float | None = None
    end = 0.0

    async def pull() -> None:
        nonlocal first
        while len(seen) < n:
            try:
                answer = await client.pull(
                    subscription=subscription,
                    max_messages=BASELINE_PULL,
                    timeout=BASELINE_PULL_TIMEOUT,
                    retry=None,
                )
            except gexc.DeadlineExceeded:
                continue
            if first is None:
                first = time.perf_counter()
            for received in answer.received_messages:
                seen.add(received.message.message_id)
                to_ack.append(received.ack_id)
            arrived.set()

    async def ack() -> None:
        nonlocal end
        while len(seen) < n or to_ack:
            await arrived.wait()
            arrived.clear()
            while to_ack:
                chunk = to_ack[:BASELINE_ACK_CHUNK]
                del to_ack[:BASELINE_ACK_CHUNK]
                await client.acknowledge(subscription=subscription, ack_ids=chunk, timeout=30)
        end = time.perf_counter()

    try:
        with anyio.fail_after(SCENARIO_TIMEOUT):
            async with anyio.create_task_group() as tg:
                for _ in range(BASELINE_PULLS_IN_FLIGHT):
                    tg.start_soon(pull)
                await ack()
                tg.cancel_scope.cancel()  # pulls still waiting on an empty subscription
    finally:
        await channel.close()
    if first is None or len(seen) < n:
        raise BenchmarkError(f"the plain pull loop got {len(seen)} of {n} messages")
    return end - first


# -- 1. publish efficiency -------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    rate: float
    baseline_rate: float
    cpu_rate: float
    phases: dict[str, float]


async def publish_once(n: int, label: str) -> PublishResult:
    with scenario(label) as sc:
        write_records(sc.data / "records.jsonl", n)
        flow = load_flow("bench_noop", sc.data)
        bodies = message_bodies(flow)
        topic, _ = make_topic(sc, "plain", "plain-sub")
        # The plain publisher first: its topic's subscription keeps the messages, as
        # buttermilk's does, so the emulator does the same work for both.
        plain = plain_publish(topic, bodies)
        timing = await create_batch(sc, flow)
    return PublishResult(n / timing.seconds, n / plain, n / timing.cpu, timing.phases)


async def bench_publish(sizes: Sizes) -> list[Row]:
    n = sizes.publish_records
    progress(f"publish: warm-up ({WARM_UP_RECORDS} records; not counted)")
    await publish_once(WARM_UP_RECORDS, "warmup")
    results: list[PublishResult] = []
    for rep in range(sizes.repeats):
        progress(f"publish: run {rep + 1}/{sizes.repeats} ({n} records)")
        results.append(await publish_once(n, "publish"))
    ratios = [r.rate / r.baseline_rate for r in results]
    ratio = statistics.median(ratios)
    rate = statistics.median(r.rate for r in results)
    base = statistics.median(r.baseline_rate for r in results)
    mid = sorted(results, key=lambda r: r.rate / r.baseline_rate)[len(results) // 2]
    phases = ", ".join(f"{k} {v:.2f} s" for k, v in mid.phases.items())
    return [
        Row(
            "publish efficiency (create vs PublisherClient)",
            f"{rate:,.0f} rec/s",
            f"{base:,.0f} msg/s",
            f"{ratio:.2f}",
            f">= {PUBLISH_GOAL}",
            verdict(ratio >= PUBLISH_GOAL),
            f"{spread(ratios, '.2f')}{n} records of bench_noop; BatchService.create in-process "
            f"(plan, create topics, then store in PostgreSQL while publishing) vs publish-all-then-"
            f"wait of the same bodies; median run (store and publish overlap): {phases}; create "
            "per CPU second "
            f"{statistics.median(r.cpu_rate for r in results):,.0f} rec/s",
        )
    ]


# -- 2. worker efficiency --------------------------------------------------------------


@dataclass(frozen=True)
class WorkerResult:
    rate: float
    baseline_rate: float
    run: WorkerRun


async def worker_once(n: int) -> WorkerResult:
    with scenario("worker") as sc:
        write_records(sc.data / "records.jsonl", n)
        flow = load_flow("bench_noop", sc.data)
        bodies = message_bodies(flow)
        topic, sub = make_topic(sc, "plain", "plain-sub")
        assert sub is not None
        plain_publish(topic, bodies)
        await create_batch(sc, flow, NOOP_CONCURRENCY)
        plain = await plain_pull(sub, n)
        run = await run_worker(sc, n, WORKER_CONCURRENCY)
    return WorkerResult(n / run.stats.active, n / plain, run)


def exchange_note(run: WorkerRun, jobs: int) -> str:
    calls = max(run.exchange_calls, 1)
    return (
        f"{run.exchange_calls} store exchanges ({2 * jobs / calls:.1f} ops, "
        f"{1000 * run.exchange_seconds / calls:.1f} ms each; {run.exchange_seconds:.2f} s in "
        f"all), {run.receive_calls} receives, {run.ack_calls} ack calls; CPU per 1,000 jobs: "
        f"worker {1000 * run.cpu / jobs:.2f} s, PostgreSQL backends "
        f"{1000 * run.database_cpu / jobs:.2f} s"
    )


async def bench_worker(sizes: Sizes) -> list[Row]:
    n = sizes.worker_records
    results: list[WorkerResult] = []
    for rep in range(sizes.worker_repeats):
        progress(f"worker: run {rep + 1}/{sizes.worker_repeats} ({n} records)")
        results.append(await worker_once(n))
    ratios = [r.rate / r.baseline_rate for r in results]
    ratio = statistics.median(ratios)
    rate = statistics.median(r.rate for r in results)
    base = statistics.median(r.baseline_rate for r in results)
    mid = sorted(results, key=lambda r: r.rate / r.baseline_rate)[len(results) // 2].run
    return [
        Row(
            "worker efficiency (run vs unary pull + ack)",
            f"{rate:,.0f} rec/s",
            f"{base:,.0f} msg/s",
            f"{ratio:.2f}",
            f">= {WORKER_GOAL}",
            verdict(ratio >= WORKER_GOAL),
            f"{spread(ratios, '.2f')}{n} no-op jobs, batch.concurrency={NOOP_CONCURRENCY}, "
            f"worker concurrency {WORKER_CONCURRENCY}, Worker in-process, first claim to last "
            f"job end; vs {BASELINE_PULLS_IN_FLIGHT} async pulls of {BASELINE_PULL} in flight "
            f"+ batched acks; median run: {exchange_note(mid, n)}",
        )
    ]


# -- 3. concurrency efficiency ---------------------------------------------------------


async def concurrency_once(n: int, worker_concurrency: int) -> WorkerRun:
    with scenario("sleep") as sc:
        write_records(sc.data / "records.jsonl", n)
        flow = load_flow("bench_sleep", sc.data)
        await create_batch(sc, flow, EFFICIENCY_CONCURRENCY)
        return await run_worker(sc, n, worker_concurrency)


async def bench_concurrency(sizes: Sizes) -> list[Row]:
    n = sizes.sleep_records
    ideal = n * SLEEP_SECONDS / EFFICIENCY_CONCURRENCY
    runs: list[WorkerRun] = []
    for rep in range(sizes.repeats):
        progress(f"concurrency: run {rep + 1}/{sizes.repeats} ({n} records)")
        runs.append(await concurrency_once(n, EFFICIENCY_CONCURRENCY))
    progress(f"concurrency: worker concurrency {HEADROOM_CONCURRENCY} (one run, for information)")
    roomy = await concurrency_once(n, HEADROOM_CONCURRENCY)
    efficiencies = [ideal / r.stats.active for r in runs]
    efficiency = statistics.median(efficiencies)
    mid = sorted(runs, key=lambda r: r.stats.active)[len(runs) // 2]
    return [
        Row(
            "concurrency efficiency (Pub/Sub + PostgreSQL)",
            f"{mid.stats.active:.2f} s",
            f"{ideal:.2f} s ideal",
            f"{efficiency:.2f}",
            f">= {EFFICIENCY_GOAL}",
            verdict(efficiency >= EFFICIENCY_GOAL),
            f"{spread(efficiencies, '.2f')}{n} x 100 ms (bench_sleep), batch.concurrency="
            f"{EFFICIENCY_CONCURRENCY}, worker concurrency {EFFICIENCY_CONCURRENCY}; measured = "
            "worker's active time (first claim to last job end); ratio = ideal / measured; "
            f"median run: {exchange_note(mid, n)}",
        ),
        Row(
            f"  same, worker concurrency {HEADROOM_CONCURRENCY}",
            f"{roomy.stats.active:.2f} s",
            f"{ideal:.2f} s ideal",
            f"{ideal / roomy.stats.active:.2f}",
            "-",
            "info",
            f"one run; as above but the worker may hold {HEADROOM_CONCURRENCY} messages (as "
            f"benchmarks/core.py runs it): shows what the worker's own slots cost; "
            f"{exchange_note(roomy, n)}",
        ),
    ]


# -- table ------------------------------------------------------------------------


BENCHMARKS: list[tuple[str, Callable[[Sizes], Awaitable[list[Row]]]]] = [
    ("publish efficiency", bench_publish),
    ("worker efficiency", bench_worker),
    ("concurrency efficiency", bench_concurrency),
]
HEADER = ("benchmark", "measured", "baseline", "ratio", "goal", "result", "notes")


def format_table(rows: list[Row], sizes: Sizes, seconds: float, emulator_host: str) -> str:
    cells = [
        HEADER,
        *((r.benchmark, r.measured, r.baseline, r.ratio, r.goal, r.result, r.notes) for r in rows),
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    lines = []
    for row in cells:
        fixed = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append(f"{fixed}  {row[-1]}".rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(HEADER[-1]))
    if sizes.quick:
        mode = "QUICK MODE (small sizes, one run each: a smoke test, figures not comparable)"
    else:
        mode = f"full mode (median of {sizes.repeats} runs, {sizes.worker_repeats} for the worker)"
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    title = (
        f"Buttermilk Pub/Sub + PostgreSQL benchmarks - {mode}; emulator {emulator_host}; "
        f"{os.cpu_count()} CPUs; took {seconds:.0f} s; load average at the end {load} "
        "(1/5/15 min)"
    )
    missed = [r for r in rows if r.result in ("FAIL", "ERROR")]
    footer = [
        f"GOAL MISSED: {r.benchmark}: ratio {r.ratio}, goal {r.goal}"
        if r.result == "FAIL"
        else f"NO FIGURE: {r.benchmark}: {r.notes}"
        for r in missed
    ]
    return "\n".join(
        [title, "", *lines, "", *(footer or ["every goal met" if rows else "nothing ran"])]
    )


async def run_benchmarks(
    chosen: list[tuple[str, Callable[[Sizes], Awaitable[list[Row]]]]], sizes: Sizes
) -> list[Row]:
    rows: list[Row] = []
    for name, bench in chosen:
        try:
            rows.extend(await bench(sizes))
        except Exception as exc:  # report it in the table and go on with the others
            traceback.print_exc()
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            rows.append(Row(name, "ERROR", result="ERROR", notes=first_line))
    return rows


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument("--records", type=int, help="records of the publish and worker benchmarks")
    parser.add_argument("--repeats", type=int, help="runs of each benchmark (median kept)")
    parser.add_argument(
        "--only",
        choices=[name.split()[0] for name, _ in BENCHMARKS],
        action="append",
        help="run only this benchmark (may be repeated)",
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.records:
        sizes = replace(sizes, publish_records=args.records, worker_records=args.records)
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats, worker_repeats=args.repeats)
    signal.signal(signal.SIGTERM, _terminate)
    start = time.perf_counter()
    rows: list[Row] = []
    host = "-"
    chosen = [(n, b) for n, b in BENCHMARKS if not args.only or n.split()[0] in args.only]
    try:
        with emulator() as host:
            # One event loop for everything: gRPC's asyncio channels belong to a loop.
            rows = anyio.run(run_benchmarks, chosen, sizes)
    except BenchmarkError as exc:
        rows.append(Row("emulator", "ERROR", result="ERROR", notes=str(exc)))
    print(format_table(rows, sizes, time.perf_counter() - start, host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
