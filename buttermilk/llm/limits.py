"""Seams the LLM agent shares with the rest of a deployment: a rate limiter and a response
cache. Each is a small protocol with an in-process implementation here; the ones shared
by every worker of a batch store are in :mod:`buttermilk.llm.shared`.

Rate limits are token buckets that may go into debt: a caller takes its share at once and
waits until the bucket has refilled to cover it, so callers are served in the order they
asked, at the limit's rate, however many wait. A bucket holds ``burst_seconds`` of its
rate (at least one request), which is what may go out at once after a quiet spell.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from buttermilk.llm.images import stand_ins


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
    *,
    endpoint: str,
    repeat: int = 0,
    mode: str | None = None,
) -> str:
    """SHA-256 of the canonical JSON of everything that shapes an answer.

    ``endpoint`` (the base URL) is part of it: one model name at two servers may be two
    different models, as it is for the rate limits' scope. So is ``repeat``, the job's
    repeat of its combination: a repeat is a fresh call, never the answer of an earlier
    repeat (repeat 0 keys as before repeats existed, so stores keep their answers). And
    ``mode``, how the answer was asked for (``json_schema``, ``json_object``, ...; see
    :mod:`buttermilk.llm.response_format`): a constrained answer is not an unconstrained one.
    An image sent as a data URI counts by its SHA-256, one given by URL by the URL.
    """
    request: dict[str, Any] = {
        "endpoint": endpoint,
        "model": model,
        "messages": list(stand_ins(messages, hashed_only=True)),  # images by hash
        "sampling": sampling,
        "schema": schema,
    }
    if repeat:
        request["repeat"] = repeat
    if mode is not None:
        request["mode"] = mode
    canonical = json.dumps(
        request,
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


DEFAULT_BURST_SECONDS = 60.0  # a whole minute's budget, as providers' per-minute limits allow


@dataclass(frozen=True)
class Take:
    """One bucket's share of a call: ``amount`` from the bucket ``kind`` of a model."""

    kind: str  # "requests" or "tokens"
    rate: float  # refill per second
    capacity: float
    amount: float


@dataclass(frozen=True)
class Limits:
    """Requests and tokens per minute for one model, and the bucket size in seconds."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    burst_seconds: float = DEFAULT_BURST_SECONDS

    def __bool__(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None

    def capacity(self, kind: str) -> float:
        per_minute = self.requests_per_minute if kind == "requests" else self.tokens_per_minute
        assert per_minute is not None
        size = per_minute * self.burst_seconds / 60
        return max(size, 1.0) if kind == "requests" else size

    def takes(self, requests: float, tokens: float) -> list[Take]:
        """The share of each set limit that a call of ``requests`` and ``tokens`` takes."""
        found = []
        for kind, per_minute, amount in (
            ("requests", self.requests_per_minute, requests),
            ("tokens", self.tokens_per_minute, tokens),
        ):
            if per_minute is not None and amount:
                found.append(Take(kind, per_minute / 60, self.capacity(kind), amount))
        return found


def refill_and_take(level: float, updated: float, now: float, take: Take) -> tuple[float, float]:
    """A bucket at ``level`` (as of ``updated``) refills until ``now``, then ``take.amount``
    goes; returns the new level and the seconds until the bucket has covered it."""
    elapsed = max(now - updated, 0.0)  # clocks that disagree never drain a bucket
    level = min(take.capacity, level + elapsed * take.rate) - take.amount
    return level, max(0.0, -level / take.rate)


class _Bucket:
    """A token bucket that may go into debt: a taker waits until its share has refilled."""

    def __init__(self, capacity: float, now: float) -> None:
        self.level = capacity
        self.updated = now

    def take(self, take: Take, now: float) -> float:
        """Take ``take.amount``; returns the seconds to wait before using it."""
        self.level, wait = refill_and_take(self.level, self.updated, now, take)
        self.updated = max(now, self.updated)
        return wait


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
        burst_seconds: float = DEFAULT_BURST_SECONDS,
    ) -> None:
        self.limits = Limits(requests_per_minute, tokens_per_minute, burst_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _take(self, model: str, requests: float, tokens: float) -> float:
        now = self.clock()
        wait = 0.0
        for take in self.limits.takes(requests, tokens):
            bucket = self._buckets.get((model, take.kind))
            if bucket is None:
                bucket = self._buckets[(model, take.kind)] = _Bucket(take.capacity, now)
            wait = max(wait, bucket.take(take, now))
        return wait

    def reserve(self, model: str, tokens: int) -> float:
        """Take one request and ``tokens`` tokens; returns the seconds to wait for them."""
        with self._lock:
            return self._take(model, 1, tokens)

    async def acquire(self, model: str, tokens: int) -> None:
        wait = self.reserve(model, tokens)
        if wait > 0:
            await anyio.sleep(wait)

    async def report(self, model: str, estimated: int, actual: int) -> None:
        with self._lock:
            self._take(model, 0, actual - estimated)


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
