"""Adaptive concurrency: how many calls go at once to one model at one endpoint.

Per *scope* (a model at a base URL) there is a level, the calls in flight allowed to all the
workers of a batch store together. It starts modest (:func:`~buttermilk.domain.concurrency.
start_level`: a quarter of its ceiling, at least 8, or the ceiling when lower), is
multiplied by 0.5 when calls are answered 429 (once per overload: not again for calls that
started before the last cut) and grows back additively on success, one call per level's
worth of answered calls: AIMD, the congestion avoidance of TCP (Chiu and Jain 1989; Jacobson
1988), as Inspect adapts its connections to a provider. Until the first 429 it grows as
TCP's slow start does, one call per success (so it doubles every round trip): an endpoint
that takes the batch's whole concurrency gets it within a few round trips, and a worker
grows its own share at each success, not only at its syncs. Its ceiling is the sum of the
sharing workers' concurrency for their batches, and ``requests_per_minute`` when set (the
token buckets of :mod:`buttermilk.llm.shared` still pace every call: a slot is taken after
the rate budget). A 429 with ``Retry-After`` holds back every new call to the whole endpoint
(all its models) until then.

Sharing. The level lives in the store (:mod:`buttermilk.store.concurrency`). Each worker
keeps its share in memory and syncs at most every :data:`SYNC_INTERVAL` seconds while it
calls, all scopes in one transaction (never one per call), and at its next call after a
429. The shares are the level's whole calls dealt out in turn over the live workers sorted
by name, so they sum to ``floor(level)``: a fixed split needs no per-call store work and no
lease on slots that a crashed worker would leak (a worker that stops syncing drops out after
``STALE_AFTER`` seconds). A 429 halves a worker's own share at once, before its sync.

Bound: a worker's share is from its last sync, at most :data:`SYNC_INTERVAL` seconds (plus a
transaction) old while it has calls waiting, so the calls in flight over all workers never
exceed the highest level the store held in that interval (in slow start: the level the next
sync makes, which adds every worker's successes as each share already did), plus the calls
already sent when a cut came (they are not recalled), plus, while workers join or leave, one
share computed with the old count per worker that has not synced since. Syncs run in a
task of their own: a worker's first call to a scope goes out at once, as its only call
until the first sync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import anyio

from buttermilk.domain.concurrency import next_level, start_level
from buttermilk.flows.agents import current_job
from buttermilk.llm.endpoints import Endpoint
from buttermilk.llm.limits import Limits
from buttermilk.llm.retry import Failure
from buttermilk.store.concurrency import Report, Seen, sync
from buttermilk.store.store import Store

log = logging.getLogger(__name__)

SYNC_INTERVAL = 0.5  # seconds between a worker's syncs of its levels while it calls
BATCH_MEMORY = 5.0  # seconds a scope is still shown for a batch that stopped calling it
R = TypeVar("R")
P = ParamSpec("P")


@dataclass
class _Scope:
    """One worker's view of a scope, and what it saw since its last sync."""

    endpoint: str
    model: str
    concurrency: int
    cap: int | None
    level: float = 0.0
    share: int = 1  # until the first sync: one call, so the first goes out at once
    synced: bool = False
    in_flight: int = 0
    refused_start: float | None = None  # the latest start of a call answered 429, since the sync
    successes: int = 0
    cut_at: float = 0.0  # UNIX seconds of this worker's own last cut
    slow_start: bool = True  # no 429 yet: each success adds a call to the share at once
    level_cut_at: float = 0.0  # of the level's last cut, when it is kept in memory
    pause_until: float = 0.0  # UNIX seconds
    batches: dict[str, float] = field(default_factory=dict)  # when each last called (monotonic)

    def report(self, scope: str) -> Report:
        return Report(
            scope, self.endpoint, self.model, self.concurrency, self.cap, self.refused_start,
            self.successes, self.pause_until, self._recent(),
        )  # fmt: skip

    def _recent(self) -> tuple[str, ...]:
        """The batches that called it lately (status shows the level for them)."""
        old = time.monotonic() - BATCH_MEMORY
        for batch_id in [b for b, at in self.batches.items() if at < old]:
            del self.batches[batch_id]
        return tuple(sorted(self.batches))


class Concurrency:
    """The adaptive levels of one worker (one store, one event loop): see the module."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scopes: dict[str, _Scope] = {}
        self.paused: dict[str, float] = {}  # UNIX seconds each endpoint asked to wait until
        self._last_sync = 0.0  # monotonic
        self._sync_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def run(
        self,
        scope: tuple[str, str],
        limits: tuple[int, int | None],
        batch_id: str | None,
        call: Callable[[], Awaitable[R]],
    ) -> R:
        """Run ``call`` in a slot of ``scope`` (base URL, model) once one is free and the
        endpoint asks no wait; ``limits`` are the batch's concurrency and its
        ``requests_per_minute`` (or None). A result that is a 429 :class:`Failure` cuts the
        level (and pauses the endpoint for its Retry-After); any other non-failure grows it."""
        endpoint, model = scope
        key = f"{model} @ {endpoint}"
        state = self.scopes.get(key)
        if state is None:
            state = self.scopes[key] = _Scope(endpoint, model, *limits)
        state.concurrency = max(state.concurrency, limits[0])
        if batch_id is not None:
            state.batches[batch_id] = time.monotonic()
        await self._acquire(state)
        if batch_id is not None:
            state.batches[batch_id] = time.monotonic()
        started = time.time()
        try:
            result = await call()
        finally:
            state.in_flight -= 1
            self._wake()
        if isinstance(result, Failure):
            if result.status == 429:
                self._cut(state, started, result.retry_after)
        else:
            state.successes += 1
            if state.slow_start and state.share < min(state.concurrency, state.cap or 1 << 30):
                state.share += 1  # as the level grows at the next sync (see the module)
                self._wake()
        return result

    async def _acquire(self, state: _Scope) -> None:
        while True:
            due = time.monotonic() - self._last_sync >= SYNC_INTERVAL
            news = not state.synced or any(s.refused_start for s in self.scopes.values())
            if (due or news) and self._sync_task is None:  # in the background: no call waits
                self._sync_task = asyncio.get_running_loop().create_task(self._sync())
            wait = self.paused.get(state.endpoint, 0.0) - time.time()
            if wait > 0:
                await anyio.sleep(wait)
                continue
            if state.in_flight < state.share:
                state.in_flight += 1
                return
            changed = self._changed
            with anyio.move_on_after(max(SYNC_INTERVAL, 0.01)):
                await changed.wait()

    def _cut(self, state: _Scope, started: float, retry_after: float | None) -> None:
        now = time.time()
        state.refused_start = max(state.refused_start or 0.0, started)
        if started >= state.cut_at:  # not a call of the overload already cut for
            state.cut_at, state.slow_start = now, False
            state.share = max(1, state.share // 2) if state.share else 0
        if retry_after:
            state.pause_until = max(state.pause_until, now + retry_after)
            self._pause(state.endpoint, state.pause_until)

    def _pause(self, endpoint: str, until: float) -> None:
        self.paused[endpoint] = max(self.paused.get(endpoint, 0.0), until)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _sync(self) -> None:
        """Report every scope's news and learn its level and share (one transaction; a
        task of its own, so a caller with a slot never waits for it)."""
        try:
            reports = [state.report(key) for key, state in self.scopes.items()]
            for state in self.scopes.values():
                state.refused_start, state.successes = None, 0
            seen = await self._exchange(reports)
            for key, found in seen.items():
                state = self.scopes[key]
                state.synced = True
                state.level, state.share = found.level, found.share
                state.slow_start = state.slow_start and not found.cut_at
                self._pause(state.endpoint, found.paused_until)
        finally:
            self._last_sync = time.monotonic()
            self._sync_task = None
            self._wake()

    async def _exchange(self, reports: list[Report]) -> dict[str, Seen]:
        if self.store is None:
            return {r.scope: self._alone(r) for r in reports}
        try:
            return await anyio.to_thread.run_sync(sync, self.store, self.worker, reports)
        except Exception as exc:  # the store is away: keep the shares as they are
            log.warning("could not share the LLM concurrency levels: %s", exc)
            return {r.scope: self._alone(r, store=False) for r in reports}

    def _alone(self, report: Report, *, store: bool = True) -> Seen:
        """The level kept in memory: the store is not there (or not reachable now)."""
        state = self.scopes[report.scope]
        ceiling = max(1, min(state.concurrency, state.cap or state.concurrency))
        level = state.level or start_level(float(ceiling))
        if store:
            level, state.level_cut_at = next_level(
                level, state.level_cut_at, ceiling=ceiling,
                refused_start=report.refused_start, successes=report.successes, now=time.time(),
            )  # fmt: skip
        share = int(level) if store or not state.synced else state.share
        return Seen(level, share, 1, ceiling, report.pause_until, state.level_cut_at)


_LEVELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Concurrency]] = (
    weakref.WeakKeyDictionary()
)


def concurrency_of(store: Store | None) -> Concurrency:
    """The running event loop's adaptive levels for the workers of ``store``."""
    by_store = _LEVELS.setdefault(asyncio.get_running_loop(), {})
    found = by_store.get(id(store))
    if found is None or found.store is not store:
        found = by_store[id(store)] = Concurrency(store)
    return found


async def in_slot(
    endpoint: Endpoint,
    limits: Limits,
    call: Callable[P, Awaitable[R]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """``call(*args, **kwargs)`` (one call to ``endpoint``'s model), in a slot of its adaptive
    level when it runs in a batch job; outside one (or a job that gives no concurrency), at
    once. Raises what ``call`` raises."""
    try:
        job = current_job()
    except LookupError:
        return await call(*args, **kwargs)
    if not job.concurrency:
        return await call(*args, **kwargs)
    rpm = limits.requests_per_minute
    cap = max(1, int(rpm)) if rpm is not None else None
    levels = concurrency_of(job.store)
    scope, caps = (endpoint.base_url, endpoint.model), (job.concurrency, cap)
    return await levels.run(scope, caps, job.batch_id, lambda: call(*args, **kwargs))
