"""The arithmetic of adaptive concurrency toward an LLM endpoint (AIMD), and what ``status``
shows of it. Pure: the store applies it in a transaction (:mod:`buttermilk.store.concurrency`),
a process without a store in memory (:mod:`buttermilk.llm.adaptive`), which describes the
scheme.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

START_LEVEL = 8.0  # calls in flight a scope starts at, at least (or its ceiling, when lower)
START_SHARE = 0.25  # of its ceiling, when that is more than START_LEVEL
CUT_FACTOR = 0.5  # the level is multiplied by this on a 429


def start_level(ceiling: float) -> float:
    """The level a scope starts at: a quarter of its ``ceiling`` (the batch's concurrency
    toward it), at least :data:`START_LEVEL` and at most ``ceiling``.

    Modest against what the batch asked for, yet scaled to it: slow start doubles the level
    each round trip, so a batch of concurrency 100 reaches it in two round trips rather
    than four (from 8), which at 200 ms a call is about 0.4 s of a short batch's time.
    """
    return min(ceiling, max(START_LEVEL, ceiling * START_SHARE))


def next_level(
    level: float,
    cut_at: float,
    *,
    ceiling: float,
    refused_start: float | None,
    successes: int,
    now: float,
) -> tuple[float, float]:
    """The level after calls answered 429 (the latest of them started at ``refused_start``,
    UNIX seconds; None: no 429) and ``successes`` calls answered; and the time of the last
    cut (0: never).

    Slow start until the first 429 (TCP's, Jacobson 1988): each success adds one call, so
    the level doubles with each level's worth of answers, from a modest start to the most
    the endpoint takes within a few round trips.
    Additive increase, multiplicative decrease (Chiu and Jain, "Analysis of the Increase and
    Decrease Algorithms for Congestion Avoidance in Computer Networks", 1989; TCP's
    congestion avoidance, Jacobson 1988): a 429 multiplies the level by :data:`CUT_FACTOR`
    unless every call refused had started before the last cut (the same overload: TCP too
    cuts once per window, not once per lost packet); otherwise each success adds
    ``1 / level``, a level's worth of successes one call (summed over ``successes`` as the
    continuous ``sqrt(level**2 + 2 * successes)``). Never below 1 or above ``ceiling``.
    """
    if refused_start is not None and refused_start >= cut_at:
        level, cut_at = level * CUT_FACTOR, now
    elif refused_start is None and successes:
        slow_start = cut_at == 0
        level = level + successes if slow_start else math.sqrt(level * level + 2 * successes)
    return max(1.0, min(level, ceiling)), cut_at


def share_of(level: float, rank: int, workers: int) -> int:
    """Worker number ``rank`` (0-based, of ``workers`` live ones sorted by name)'s calls in
    flight: the whole calls of ``level`` dealt out in turn, so the shares sum to
    ``floor(level)`` exactly (a worker may get 0 while the level is below the workers)."""
    whole = int(level)
    workers = max(workers, 1)
    return whole // workers + (1 if rank < whole % workers else 0)


class ConcurrencyLevel(BaseModel):
    """The calls in flight allowed toward one model at one endpoint, for ``status``."""

    endpoint: str  # the base URL
    model: str
    level: float  # calls in flight, shared by every worker of the store
    ceiling: int  # the most it may grow to: the workers' concurrency (and requests_per_minute)
    workers: int  # workers sharing it now
    paused_until: float | None = None  # UNIX seconds: the endpoint asked to wait (Retry-After)
    cut_at: float | None = None  # UNIX seconds of the last cut by a 429
