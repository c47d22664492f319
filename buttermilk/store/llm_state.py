"""LLM state that every worker of one batch store shares: rate budgets and answers.

- ``llm_budget``: one token bucket per row (``requests <model> @ <endpoint>``, ``tokens
  ...``). A caller takes its share from every bucket of its call in one short
  transaction, with the rows locked (PostgreSQL: ``SELECT ... FOR UPDATE`` in key order;
  SQLite: the store's write transaction), and learns how long to wait. It waits after
  the transaction, holding no lock. PostgreSQL's clock times the buckets, so workers on
  machines whose clocks disagree still share one budget.
- ``llm_cache``: answers by cache key; the first answer stored for a key stays.

Every function is synchronous and short; async callers run them in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update

from buttermilk.llm.limits import Take, refill_and_take
from buttermilk.store.schema import llm_budget, llm_cache
from buttermilk.store.store import Store

_LOCK_BUCKETS = (
    select(llm_budget.c.key, llm_budget.c.level, llm_budget.c.updated)
    .where(llm_budget.c.key.in_(bindparam("p_keys", expanding=True)))
    .order_by(llm_budget.c.key)
    .with_for_update()
)
_SET_BUCKET = (
    update(llm_budget)
    .where(llm_budget.c.key == bindparam("p_key"))
    .values(level=bindparam("p_level"), updated=bindparam("p_updated"))
)
_PG_NOW = text("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")


def _insert(conn: Connection, table: Any) -> Any:
    """An INSERT that skips rows whose key exists already (as another writer made them)."""
    if conn.dialect.name == "postgresql":  # its dialect: only a PostgreSQL store imports it
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table).on_conflict_do_nothing()


def _now(conn: Connection) -> float:
    if conn.dialect.name == "postgresql":
        return float(conn.execute(_PG_NOW).scalar_one())
    return time.time()


def bucket_key(kind: str, scope: str) -> str:
    return f"{kind} {scope}"


def take(store: Store, scope: str, takes: Sequence[Take]) -> float:
    """Take each share from its bucket of ``scope`` (a model at an endpoint); returns the
    seconds until every bucket has covered its share. A negative amount gives back."""
    return take_many(store, [(scope, takes)])[0]


def take_many(store: Store, calls: Sequence[tuple[str, Sequence[Take]]]) -> list[float]:
    """:func:`take` for several calls in one transaction, in order: each call's wait is
    what it would have been had the calls been made one after another."""
    by_key = {bucket_key(t.kind, scope): t for scope, takes in calls for t in takes}
    if not by_key:
        return [0.0 for _ in calls]
    keys = sorted(by_key)
    with store.transaction(write=True) as conn:
        rows = {
            key: (level, updated)
            for key, level, updated in conn.execute(_LOCK_BUCKETS, {"p_keys": keys})
        }
        missing = [key for key in keys if key not in rows]
        if missing:
            now = _now(conn)
            conn.execute(
                _insert(conn, llm_budget),
                [{"key": key, "level": by_key[key].capacity, "updated": now} for key in missing],
            )
            for key, level, updated in conn.execute(_LOCK_BUCKETS, {"p_keys": missing}):
                rows[key] = (level, updated)
        now = _now(conn)  # once the rows are ours: a wait for their locks is not refill
        waits = []
        for scope, takes in calls:
            wait = 0.0
            for t in takes:
                key = bucket_key(t.kind, scope)
                level, updated = rows[key]
                level, needed = refill_and_take(level, updated, now, t)
                rows[key] = (level, max(now, updated))
                wait = max(wait, needed)
            waits.append(wait)
        changes = [{"p_key": k, "p_level": rows[k][0], "p_updated": rows[k][1]} for k in keys]
        conn.execute(_SET_BUCKET, changes)
    return waits


def cached_answer(store: Store, key: str) -> dict[str, Any] | None:
    """The answer stored under ``key``, or None."""
    with store.transaction(write=False) as conn:
        value = conn.execute(select(llm_cache.c.value).where(llm_cache.c.key == key)).scalar()
    return dict(value) if isinstance(value, dict) else None


def store_answer(store: Store, key: str, value: dict[str, Any]) -> None:
    """Keep ``value`` under ``key``, unless an answer is stored there already."""
    with store.transaction(write=True) as conn:
        conn.execute(
            _insert(conn, llm_cache), {"key": key, "value": value, "created_at": time.time()}
        )
