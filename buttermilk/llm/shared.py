"""The rate limiter and response cache shared by every worker of one batch store.

The LLM agent uses them when it runs in a batch job (the worker puts the store in
:func:`~buttermilk.flows.agents.current_job`): ten workers on ten machines then keep to
one ``requests_per_minute`` budget per model and endpoint, and reuse each other's
answers across batches. The state lives in :mod:`buttermilk.store.llm_state`; store calls
run in a worker thread, and waits happen outside any transaction.

The takes of concurrent calls share transactions (:class:`TakeBatcher`): while one is in
flight, the next calls' takes gather and go together in the next one, so a hundred calls
at once cost a few transactions, not two hundred. A call's correction after its answer
(``report``) joins a transaction already under way without waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from buttermilk.llm.limits import Limits, Take
from buttermilk.store import llm_state
from buttermilk.store.store import Store

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pending:
    scope: str
    takes: Sequence[Take]
    waits: bool  # False: a correction nobody waits for
    done: asyncio.Event = field(default_factory=asyncio.Event)
    lead: bool = False  # woken to run the next transaction, not with a result
    wait: float = 0.0
    error: BaseException | None = None

    def result(self) -> float:
        if self.error is not None:
            raise self.error
        return self.wait


class TakeBatcher:
    """Gathers the takes of one store's calls in one event loop into shared transactions.

    No task of its own: the first caller to find no transaction under way runs one for
    everything pending, then hands the next one to a caller still waiting (or runs it
    itself when only corrections are left), so no caller waits behind more than one
    transaction that is not its own.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[_Pending] = []
        self._round: list[_Pending] = []  # the takes of the transaction running now
        self._busy = False

    async def take(self, scope: str, takes: Sequence[Take], *, wait: bool = True) -> float:
        """Seconds to wait for ``takes`` (0.0 at once for a correction, ``wait=False``)."""
        item = _Pending(scope, takes, wait)
        self._pending.append(item)
        if self._busy:
            if not wait:
                return 0.0  # the transaction under way, or the next, takes it along
            try:
                await item.done.wait()
            except BaseException:  # cancelled: never leave the others without a leader
                if item.lead:
                    with anyio.CancelScope(shield=True):
                        await self._lead(item)
                elif item in self._pending:
                    self._pending.remove(item)
                raise
            if not item.lead:
                return item.result()
        self._busy = True
        with anyio.CancelScope(shield=True):  # the others wait on this transaction too
            await self._lead(item)
        return item.result() if wait else 0.0

    async def _lead(self, own: _Pending) -> None:
        try:
            await self._rounds(own)
        except BaseException as exc:  # cancelled by asyncio itself, or worse: wake everyone
            if isinstance(exc, Exception):
                error: BaseException = exc
            else:  # the others are not cancelled: their take failed
                error = RuntimeError("a shared rate-limit transaction was cancelled")
            for p in [*self._round, *self._pending]:
                if p is not own:
                    p.error = p.error or error
                    p.done.set()
            self._round, self._pending = [], []
            self._busy = False
            raise

    async def _rounds(self, own: _Pending) -> None:
        while True:
            group, self._pending = self._pending, []
            self._round = group
            calls = [(p.scope, p.takes) for p in group]
            try:
                waits = await anyio.to_thread.run_sync(llm_state.take_many, self.store, calls)
            except Exception as exc:
                for p in group:
                    p.error = exc
                if any(not p.waits for p in group):
                    log.warning("a rate-limit correction was not stored: %s", exc)
            else:
                for p, seconds in zip(group, waits, strict=True):
                    p.wait = seconds
            for p in group:
                if p is not own:
                    p.done.set()
            heir = next((p for p in self._pending if p.waits), None)
            if heir is not None:
                heir.lead = True  # it runs the next transaction; still busy
                heir.done.set()
                return
            if not self._pending:
                self._busy = False
                return
            # Only corrections are left and nobody waits to carry them: one more round.


_BATCHERS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[Store, TakeBatcher]
] = weakref.WeakKeyDictionary()


def batcher_of(store: Store) -> TakeBatcher:
    """The running event loop's batcher of ``store``'s takes."""
    by_store = _BATCHERS.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
    found = by_store.get(store)
    if found is None:
        found = by_store[store] = TakeBatcher(store)
    return found


class StoreRateLimiter:
    """Token buckets in the store, one per limit of each model at an endpoint.

    ``scope`` tells apart models of the same name at different endpoints (the agent
    passes its ``base_url``). Agents that share a model and endpoint should give it the
    same limits: each call refills the buckets at its own agent's rate.
    """

    def __init__(self, store: Store, limits: Limits, scope: str = "") -> None:
        self.store = store
        self.limits = limits
        self.scope = scope

    def _scope(self, model: str) -> str:
        return f"{model} @ {self.scope}" if self.scope else model

    def reserve(self, model: str, tokens: int) -> float:
        """Take one request and ``tokens`` tokens; returns the seconds to wait for them."""
        return llm_state.take(self.store, self._scope(model), self.limits.takes(1, tokens))

    async def acquire(self, model: str, tokens: int) -> None:
        takes = self.limits.takes(1, tokens)
        wait = await batcher_of(self.store).take(self._scope(model), takes)
        if wait > 0:
            await anyio.sleep(wait)

    async def report(self, model: str, estimated: int, actual: int) -> None:
        takes = self.limits.takes(0, actual - estimated)
        if takes:
            await batcher_of(self.store).take(self._scope(model), takes, wait=False)


class StoreResponseCache:
    """Answers in the store's ``llm_cache`` table, for every worker and every batch."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(llm_state.cached_answer, self.store, key)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(llm_state.store_answer, self.store, key, value)
