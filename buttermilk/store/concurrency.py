"""Adaptive concurrency that every worker of one batch store shares (see
:mod:`buttermilk.llm.adaptive` for the scheme).

- ``llm_concurrency``: one row per model at an endpoint (its *scope*): the level (calls in
  flight for all workers together), its ceiling, the time of the last cut and until when
  the endpoint asked to wait (``Retry-After``).
- ``llm_concurrency_workers``: who shares a scope, per batch: a worker's row is refreshed
  at each of its syncs; rows older than :data:`STALE_AFTER` seconds are of a worker that
  went away or went quiet, and count no more.

A worker :func:`sync` s all its scopes in one short write transaction (level rows locked
in scope order, PostgreSQL's clock), at most every few tenths of a second while it has
calls: it reports its 429s and successes since the last sync and learns the level and its
share. Every function is synchronous and short; async callers run them in a worker thread.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from buttermilk.domain.concurrency import ConcurrencyLevel, next_level, share_of, start_level
from buttermilk.store.schema import llm_concurrency, llm_concurrency_workers
from buttermilk.store.store import Store

STALE_AFTER = 10.0  # seconds since its last sync after which a worker no longer shares a scope
PRUNE_AFTER = 3600.0  # seconds after which a worker's rows are deleted

_levels = llm_concurrency
_workers = llm_concurrency_workers
_LOCK = (
    select(_levels)
    .where(_levels.c.scope.in_(bindparam("p_scopes", expanding=True)))
    .order_by(_levels.c.scope)
    .with_for_update()
)


@dataclass(frozen=True)
class Report:
    """What one worker tells of one scope since its last sync."""

    scope: str
    endpoint: str  # base URL
    model: str
    concurrency: int  # the most calls this worker may run for it (its batches' concurrency)
    cap: int | None = None  # requests_per_minute, when set: the level stays below it too
    refused_start: float | None = None  # UNIX seconds the latest call answered 429 started
    successes: int = 0  # calls answered
    pause_until: float = 0.0  # UNIX seconds the endpoint asked to wait until (0: not asked)
    batches: tuple[str, ...] = ()  # whose calls these were


@dataclass(frozen=True)
class Seen:
    """A scope as a sync leaves it, for the worker that synced."""

    level: float
    share: int  # this worker's calls in flight
    workers: int
    ceiling: int
    paused_until: float  # UNIX seconds, the latest of any scope at the endpoint
    cut_at: float = 0.0  # UNIX seconds of the level's last cut (0: never, a slow start)


def _now(conn: Connection) -> float:
    if conn.dialect.name == "postgresql":
        return float(
            conn.execute(select(func.extract("epoch", func.clock_timestamp()))).scalar_one()
        )
    return time.time()


def sync(store: Store, worker: str, reports: Sequence[Report]) -> dict[str, Seen]:
    """Apply each report to its scope's level (:func:`~buttermilk.domain.concurrency.next_level`)
    in one transaction; returns what each scope is now, with ``worker``'s share of it."""
    if not reports:
        return {}
    scopes = sorted({r.scope for r in reports})
    insert: Any
    if store.engine.dialect.name == "postgresql":  # its dialect: only there, and for workers
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    with store.transaction(write=True) as conn:
        now = _now(conn)
        mine = [
            {
                "scope": r.scope,
                "worker": worker,
                "batch_id": b,
                "concurrency": r.concurrency,
                "seen": now,
            }
            for r in reports
            for b in r.batches or ("",)
        ]
        upsert = insert(_workers)
        conn.execute(
            upsert.on_conflict_do_update(
                index_elements=["scope", "worker", "batch_id"],
                set_={"concurrency": upsert.excluded.concurrency, "seen": upsert.excluded.seen},
            ),
            mine,
        )
        old = _workers.c.scope.in_(scopes) & (_workers.c.seen < now - PRUNE_AFTER)
        conn.execute(delete(_workers).where(old))
        live: dict[str, dict[str, int]] = defaultdict(dict)
        query = (
            select(_workers.c.scope, _workers.c.worker, func.max(_workers.c.concurrency))
            .where(_workers.c.scope.in_(scopes), _workers.c.seen >= now - STALE_AFTER)
            .group_by(_workers.c.scope, _workers.c.worker)
        )
        for scope, name, concurrency in conn.execute(query):
            live[scope][name] = int(concurrency)
        rows = {row.scope: row for row in conn.execute(_LOCK, {"p_scopes": scopes})}
        by_scope = {r.scope: r for r in reports}
        missing = [s for s in scopes if s not in rows]
        if missing:
            conn.execute(
                insert(_levels).on_conflict_do_nothing(),
                [_fresh(by_scope[s], _ceiling(by_scope[s], live[s]), now) for s in missing],
            )
            rows.update({row.scope: row for row in conn.execute(_LOCK, {"p_scopes": missing})})
        ceilings: dict[str, int] = {}
        levels: dict[str, tuple[float, float]] = {}
        for scope in scopes:
            report, row = by_scope[scope], rows[scope]
            ceilings[scope] = ceiling = _ceiling(report, live[scope])
            level, cut_at = next_level(
                row.level,
                row.cut_at,
                ceiling=ceiling,
                refused_start=report.refused_start,
                successes=report.successes,
                now=now,
            )
            levels[scope] = level, cut_at
            values = {
                "level": level,
                "cut_at": cut_at,
                "ceiling": ceiling,
                "paused_until": max(row.paused_until, report.pause_until),
                "updated": now,
            }
            conn.execute(update(_levels).where(_levels.c.scope == scope).values(**values))
        endpoints = sorted({r.endpoint for r in reports})
        pause_query = (
            select(_levels.c.endpoint, func.max(_levels.c.paused_until))
            .where(_levels.c.endpoint.in_(endpoints))
            .group_by(_levels.c.endpoint)
        )
        paused = {endpoint: float(until) for endpoint, until in conn.execute(pause_query)}
    seen = {}
    for scope in scopes:
        names = sorted(live[scope])
        level, cut_at = levels[scope]
        seen[scope] = Seen(
            level=level,
            share=share_of(level, names.index(worker), len(names)),
            workers=len(names),
            ceiling=ceilings[scope],
            paused_until=paused.get(by_scope[scope].endpoint, 0.0),
            cut_at=cut_at,
        )
    return seen


def _ceiling(report: Report, live: dict[str, int]) -> int:
    """The sum of the live workers' concurrency, and no more than ``requests_per_minute``."""
    ceiling = sum(live.values()) or report.concurrency
    return max(1, min(ceiling, report.cap) if report.cap else ceiling)


def _fresh(report: Report, ceiling: int, now: float) -> dict[str, object]:
    return {
        "scope": report.scope,
        "endpoint": report.endpoint,
        "model": report.model,
        "level": start_level(float(ceiling)),
        "ceiling": ceiling,
        "cut_at": 0.0,
        "paused_until": 0.0,
        "updated": now,
    }


def levels(store: Store, batch_id: str, now: float | None = None) -> list[ConcurrencyLevel]:
    """The levels of the scopes ``batch_id``'s calls use, as live workers left them."""
    fresh = (now if now is not None else time.time()) - STALE_AFTER
    used = select(_workers.c.scope).where(_workers.c.batch_id == batch_id, _workers.c.seen >= fresh)
    sharing = (
        select(_workers.c.scope, func.count(func.distinct(_workers.c.worker)))
        .where(_workers.c.scope.in_(used), _workers.c.seen >= fresh)
        .group_by(_workers.c.scope)
    )
    with store.transaction(write=False) as conn:
        workers = {scope: int(count) for scope, count in conn.execute(sharing)}
        rows = conn.execute(
            select(_levels).where(_levels.c.scope.in_(list(workers))).order_by(_levels.c.scope)
        ).all()
    return [
        ConcurrencyLevel(
            endpoint=row.endpoint,
            model=row.model,
            level=round(row.level, 2),
            ceiling=row.ceiling,
            workers=int(workers[row.scope]),
            paused_until=row.paused_until or None,
            cut_at=row.cut_at or None,
        )
        for row in rows
    ]
