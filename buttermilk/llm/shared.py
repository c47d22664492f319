"""The rate limiter and response cache shared by every worker of one batch store.

The LLM agent uses them when it runs in a batch job (the worker puts the store in
:func:`~buttermilk.flows.agents.current_job`): ten workers on ten machines then keep to
one ``requests_per_minute`` budget per model and endpoint, and reuse each other's
answers across batches. The state lives in :mod:`buttermilk.store.llm_state`; store calls
run in a worker thread, and waits happen outside any transaction.
"""

from __future__ import annotations

from typing import Any

import anyio

from buttermilk.llm.limits import Limits
from buttermilk.store import llm_state
from buttermilk.store.store import Store


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
        wait = await anyio.to_thread.run_sync(self.reserve, model, tokens)
        if wait > 0:
            await anyio.sleep(wait)

    async def report(self, model: str, estimated: int, actual: int) -> None:
        takes = self.limits.takes(0, actual - estimated)
        if takes:
            await anyio.to_thread.run_sync(llm_state.take, self.store, self._scope(model), takes)


class StoreResponseCache:
    """Answers in the store's ``llm_cache`` table, for every worker and every batch."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get(self, key: str) -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(llm_state.cached_answer, self.store, key)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(llm_state.store_answer, self.store, key, value)
