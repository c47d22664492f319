"""Seams the LLM agent shares with the rest of a deployment: a rate limiter and a response
cache. Each is a small protocol with an in-process implementation here; one shared by
every worker (through the batch store) can replace it without touching the agent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import anyio


class RateLimiter(Protocol):
    """Paces calls to a model: one ``acquire`` before each call, one ``report`` after."""

    async def acquire(self, model: str, tokens: int) -> None:
        """Wait until a call of about ``tokens`` tokens (prompt plus answer) may start."""
        ...

    async def report(self, model: str, estimated: int, actual: int) -> None:
        """Correct the budget once the call is over: ``actual`` tokens were spent (0 when
        the call failed), where ``acquire`` had reserved ``estimated``."""
        ...


class ResponseCache(Protocol):
    """Answers already paid for, by :func:`cache_key`."""

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored output for ``key``, or None."""
        ...

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a JSON-ready output under ``key``."""
        ...


def cache_key(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    sampling: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
) -> str:
    """SHA-256 of the canonical JSON of everything that shapes an answer."""
    canonical = json.dumps(
        {"model": model, "messages": list(messages), "sampling": sampling, "schema": schema},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class NoRateLimit:
    """Never waits."""

    async def acquire(self, model: str, tokens: int) -> None:
        return None

    async def report(self, model: str, estimated: int, actual: int) -> None:
        return None


class _Bucket:
    """A token bucket that may go into debt: a taker waits until its share has refilled."""

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60
        self.capacity = per_minute
        self.level = per_minute
        self.updated = now

    def take(self, amount: float, now: float) -> float:
        """Take ``amount``; returns the seconds to wait before using it."""
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        self.level -= amount
        return max(0.0, -self.level / self.rate)


class TokenBucketLimiter:
    """Requests and tokens per minute, per model, for the calls of this process.

    Thread-safe and not tied to an event loop: a caller reserves its share under a lock,
    then sleeps (outside it) until that share has refilled.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _take(self, model: str, kind: str, amount: float) -> float:
        limit = self.requests_per_minute if kind == "requests" else self.tokens_per_minute
        if limit is None:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get((model, kind))
        if bucket is None:
            bucket = self._buckets[(model, kind)] = _Bucket(limit, now)
        return bucket.take(amount, now)

    def reserve(self, model: str, tokens: int) -> float:
        """Take one request and ``tokens`` tokens; returns the seconds to wait for them."""
        with self._lock:
            return max(self._take(model, "requests", 1), self._take(model, "tokens", tokens))

    async def acquire(self, model: str, tokens: int) -> None:
        wait = self.reserve(model, tokens)
        if wait > 0:
            await anyio.sleep(wait)

    async def report(self, model: str, estimated: int, actual: int) -> None:
        with self._lock:
            self._take(model, "tokens", actual - estimated)


class MemoryCache:
    """The most recent ``max_entries`` answers, in this process (thread-safe)."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                return None
            self._entries.move_to_end(key)
            return copy.deepcopy(value)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = copy.deepcopy(value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


#: The cache of agents configured with ``cache: true`` and no cache of their own.
SHARED_CACHE = MemoryCache()
