"""Adaptive concurrency toward an LLM endpoint: the level of calls in flight per model and
endpoint shrinks on 429, honours Retry-After for the whole endpoint, grows back on success,
keeps below the batch's concurrency and requests_per_minute, and is shared by every worker
of a store (two ``Store`` objects on one database stand for two worker processes).

The batches run real in-process workers against the fake OpenAI server (a real HTTP server),
scripted to answer 429 to a call that would put more than N in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import wait_until, write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer, error
from fake_openai import fake_openai as fake_openai  # the fixture
from rich.console import Console

from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.domain.concurrency import START_LEVEL, next_level, share_of, start_level
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.llm import adaptive
from buttermilk.llm.adaptive import Concurrency
from buttermilk.llm.retry import Failure
from buttermilk.queue.local import LocalQueue
from buttermilk.runner import render
from buttermilk.store import concurrency as shared
from buttermilk.store.concurrency import Report
from buttermilk.store.store import Store

URL = "http://llm.test/v1"


# -- the arithmetic ------------------------------------------------------------------------


def test_a_429_halves_the_level_once_per_overload_successes_add_one_per_level() -> None:
    # A 429 of a call started after the last cut (at 10) halves; one started before does not.
    assert next_level(8, 10, ceiling=16, refused_start=11, successes=5, now=12) == (4, 12)
    assert next_level(4, 12, ceiling=16, refused_start=11.5, successes=0, now=13) == (4, 12)
    # A level's worth of successes adds one call (4 successes at 4: sqrt(16 + 8) ~ 4.9).
    level, cut_at = next_level(4, 12, ceiling=16, refused_start=None, successes=4, now=13)
    assert 4.8 < level < 5 and cut_at == 12
    # Before any cut (slow start) each success adds a call: 8 successes at 8 double it.
    assert next_level(8, 0, ceiling=100, refused_start=None, successes=8, now=1) == (16, 0)
    # Never above the ceiling, never below one call.
    assert next_level(7.5, 0, ceiling=8, refused_start=None, successes=100, now=1)[0] == 8
    assert next_level(1.2, 0, ceiling=8, refused_start=1, successes=0, now=2)[0] == 1


def test_shares_deal_out_the_whole_calls_of_the_level() -> None:
    for level in (1, 1.9, 2, 5.5, 7, 16):
        for workers in (1, 2, 3, 5):
            shares = [share_of(level, rank, workers) for rank in range(workers)]
            assert sum(shares) == int(level) and max(shares) - min(shares) <= 1


# -- shared through the store -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Store]]:
    """Two stores on one database, as two worker processes would open it."""
    if request.param == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path}/batches.db"
    opened = [Store(url), Store(url)]
    yield opened
    for store in opened:
        store.close()


def report(model: str = "m", **fields: object) -> Report:
    base: dict[str, object] = {"concurrency": 8, "batches": ("b1",)}
    return Report(f"{model} @ {URL}", URL, model, **{**base, **fields})  # type: ignore[arg-type]


def test_two_workers_share_one_level_a_cut_by_one_holds_for_both(stores: list[Store]) -> None:
    a, b = stores
    [first] = shared.sync(a, "w-a", [report()]).values()
    assert (first.level, first.share, first.workers) == (START_LEVEL, 8, 1)

    [seen_b] = shared.sync(b, "w-b", [report(concurrency=6)]).values()
    [seen_a] = shared.sync(a, "w-a", [report()]).values()
    assert seen_a.workers == seen_b.workers == 2 and seen_a.ceiling == 14  # 8 + 6
    assert seen_a.share + seen_b.share == int(seen_a.level) == 8

    refused = time.time()
    [cut] = shared.sync(
        b, "w-b", [report(concurrency=6, refused_start=refused, pause_until=refused + 30)]
    ).values()
    assert cut.level == START_LEVEL / 2
    # The same overload's 429s, reported by the other worker, cut no more; its share shrinks.
    [after] = shared.sync(a, "w-a", [report(refused_start=refused - 0.1)]).values()
    assert after.level == 4 and after.share + cut.share == 4
    # Retry-After holds for the whole endpoint: another model there is paused too.
    [other] = shared.sync(a, "w-a", [report("m2")]).values()
    assert other.paused_until >= refused + 29

    [grown] = shared.sync(a, "w-a", [report(successes=8)]).values()
    assert grown.level == pytest.approx((16 + 16) ** 0.5)

    [shown] = [c for c in shared.levels(a, "b1") if c.model == "m"]
    assert (shown.endpoint, shown.workers, shown.ceiling) == (URL, 2, 14)
    assert shown.level == round(grown.level, 2) and shown.cut_at is not None
    assert shared.levels(a, "other-batch") == []
    # A worker that stops syncing no longer counts, nor is shown.
    assert shared.levels(a, "b1", now=time.time() + shared.STALE_AFTER + 1) == []


def test_the_level_keeps_below_the_batch_concurrency_and_requests_per_minute(
    stores: list[Store],
) -> None:
    store = stores[0]
    [low] = shared.sync(store, "w", [report("small", concurrency=3)]).values()
    assert (low.level, low.share, low.ceiling) == (3, 3, 3)
    [capped] = shared.sync(store, "w", [report("paced", cap=2, successes=50)]).values()
    assert (capped.level, capped.ceiling) == (2, 2)


def test_a_429_with_retry_after_holds_back_every_model_of_the_endpoint() -> None:
    """In memory (no store): the next call to another model at the endpoint waits."""
    starts: dict[str, float] = {}

    async def call(name: str, result: object) -> object:
        starts[name] = time.monotonic()
        return result

    async def main() -> None:
        levels = Concurrency(None)
        busy = Failure(True, "HTTP 429", status=429, retry_after=0.3)
        await levels.run((URL, "m1"), (8, None), None, lambda: call("refused", busy))
        await levels.run((URL, "m2"), (8, None), None, lambda: call("next", "ok"))
        assert levels.scopes[f"m1 @ {URL}"].share == 4  # halved at once

    anyio.run(main)
    assert starts["next"] - starts["refused"] >= 0.28


# -- batches against a server that refuses more than N calls at once -------------------------


class Crowded:
    """A server step: 429 for a call that would put more than ``limit`` in flight, while
    ``limited``; records the calls in flight at each arrival (the new one counted)."""

    def __init__(self, limit: int, delay: float) -> None:
        self.limit = limit
        self.delay = delay
        self.limited = True
        self.lock = threading.Lock()
        self.ends: list[float] = []
        self.answered = 0
        self.refused = 0
        self.arrivals: list[tuple[float, int]] = []  # (monotonic, calls in flight)

    def __call__(self, seen: Seen) -> Reply:
        with self.lock:
            now = time.monotonic()
            self.ends = [end for end in self.ends if end > now]
            self.arrivals.append((now, len(self.ends) + 1))
            if self.limited and len(self.ends) >= self.limit:
                self.refused += 1
                return error(429, "too many requests in flight")
            self.ends.append(now + self.delay)
            self.answered += 1
        return answer(json.dumps({"label": "positive"}), usage=(30, 5), delay=self.delay)


def service_at(tmp_path: Path, base_url: str, records: int) -> BatchService:
    write_records(tmp_path / "records.jsonl", records)
    judge = {
        "name": "judge",
        "_target_": "buttermilk.agents.llm.LLM",
        "model": "t-model",
        "base_url": base_url,
        "prompt": "Review: {{ record.content }}",
        "schema": {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}},
        "backoff": 0.02,
        "max_backoff": 0.1,
        "max_retries": 30,
    }
    flow = FlowConfig.model_validate(
        {
            "name": "h",
            "data": {"records": {"type": "file", "path": str(tmp_path / "records.jsonl")}},
            "agents": [judge],
        }
    )
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    return BatchService(store, queue, StaticFlowCatalog({"h": flow}))


class Working:
    """A worker on one batch, with its own store on the database, in a thread."""

    def __init__(self, service: BatchService, batch_id: str, concurrency: int) -> None:
        self.store = Store(service.store.url)
        options = WorkerOptions(batch_id=batch_id, concurrency=concurrency)
        self.worker = Worker(self.store, service.queue, options)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            anyio.run(self.worker.run)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(timeout=60)
        assert not self.thread.is_alive() and self.error is None, self.error
        self.store.close()


class Sampler:
    """Polls ``status`` of a batch while it runs: the level and workers it shows."""

    def __init__(self, service: BatchService, batch_id: str) -> None:
        self.service = service
        self.batch_id = batch_id
        self.samples: list[tuple[float, float, int]] = []  # (monotonic, level, workers)
        self.shown: list[str] = []
        self.json: list[object] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.03):
            s = anyio.run(self.service.summary, self.batch_id)
            for level in s.concurrency:
                self.samples.append((time.monotonic(), level.level, level.workers))
            if s.concurrency and not self.shown:
                console = Console(width=200, record=True)
                console.print(render.status_view(s))
                self.shown.append(console.export_text())
                self.json.append(s.as_json()["concurrency"])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def quick_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adaptive, "SYNC_INTERVAL", 0.1)


def finished(service: BatchService, batch_id: str) -> dict[JobStatus, int]:
    s = anyio.run(service.summary, batch_id)
    return s.counts


@pytest.mark.slow
@pytest.mark.usefixtures("quick_sync")
def test_the_level_drops_below_n_on_429s_and_climbs_back_the_batch_completes(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    crowded = Crowded(limit=3, delay=0.08)
    fake_openai.always(crowded)
    service = service_at(tmp_path, fake_openai.base_url, 90)
    request = BatchRequest(flow="h", concurrency=8)
    batch_id = anyio.run(service.create, request).batch.id
    sampler = Sampler(service, batch_id)
    working = Working(service, batch_id, concurrency=8)
    try:
        low = wait_until(
            lambda: [level for _, level, _ in sampler.samples if level < 3], 30, "a level below 3"
        )
        lifted = time.monotonic()
        crowded.limited = False  # the endpoint takes more now
        working.join()
    finally:
        sampler.close()
    counts = finished(service, batch_id)
    assert counts.get(JobStatus.COMPLETED) == 90 and not counts.get(JobStatus.FAILED), counts
    assert crowded.refused > 0 and low
    after = [level for at, level, _ in sampler.samples if at > lifted]
    assert after and max(after) > 3, sampler.samples  # it grew back past N
    assert max(level for _, level, _ in sampler.samples) <= 8  # the batch's concurrency
    [shown] = sampler.shown
    assert f"t-model @ {fake_openai.base_url}: " in shown and "in flight at most (of 8" in shown
    [as_json] = sampler.json
    assert isinstance(as_json, list) and as_json[0]["model"] == "t-model"
    service.store.close()


@pytest.mark.slow
@pytest.mark.usefixtures("quick_sync")
def test_two_workers_share_the_level_and_the_batch_completes(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    crowded = Crowded(limit=1000, delay=0.15)  # never busy: only the shared level holds calls
    fake_openai.always(crowded)
    service = service_at(tmp_path, fake_openai.base_url, 80)
    batch_id = anyio.run(service.create, BatchRequest(flow="h", concurrency=8)).batch.id
    sampler = Sampler(service, batch_id)
    workers = [Working(service, batch_id, concurrency=8) for _ in range(2)]
    try:
        for working in workers:
            working.join()
    finally:
        sampler.close()
    counts = finished(service, batch_id)
    assert counts.get(JobStatus.COMPLETED) == 80 and not counts.get(JobStatus.FAILED), counts
    assert any(workers == 2 for _, _, workers in sampler.samples), sampler.samples
    # Before the first answers, not 16 at once (8 each) but one level of 8 for both, plus at
    # most the share a worker keeps until its next sync (0.1 s) after the other joins.
    first = crowded.arrivals[0][0]
    early = [calls for at, calls in crowded.arrivals if at < first + 0.1]
    assert max(early) <= START_LEVEL + 4, crowded.arrivals[:30]
    assert max(level for _, level, _ in sampler.samples) <= 16  # 8 per worker


def test_a_scope_starts_at_a_quarter_of_its_ceiling_at_least_8_and_at_most_the_ceiling() -> None:
    assert [start_level(c) for c in (1, 4, 8, 20, 32, 100, 400)] == [1, 4, 8, 8, 8, 25, 100]
