"""LLM endpoints found down, as workers publish them for ``status`` and the dashboard.

A worker keeps the health of each endpoint in memory (:mod:`buttermilk.llm.health`); when
one goes down it writes a row per batch whose jobs wait for it, refreshes them while it
probes, and deletes them once the endpoint is back. Rows not refreshed within
:data:`STALE_AFTER` seconds are of a worker that went away and are not shown.

Every function is synchronous and short; async callers run them in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import delete, insert, select

from buttermilk.domain.batches import EndpointDown
from buttermilk.store.schema import llm_endpoints
from buttermilk.store.store import Store

STALE_AFTER = 60.0  # seconds: workers refresh their rows at least every MAX_PROBE (15 s)


def mark_down(
    store: Store, worker: str, endpoint: str, batch_ids: Iterable[str], since: float, error: str
) -> None:
    """Say (again) that ``worker`` finds ``endpoint`` down for these batches' jobs."""
    rows = [
        {
            "batch_id": batch_id,
            "endpoint": endpoint,
            "worker": worker,
            "since": since,
            "error": error,
            "updated": time.time(),
        }
        for batch_id in sorted(set(batch_ids))
    ]
    if not rows:
        return
    mine = (llm_endpoints.c.worker == worker) & (llm_endpoints.c.endpoint == endpoint)
    with store.transaction(write=True) as conn:
        conn.execute(delete(llm_endpoints).where(mine))
        conn.execute(insert(llm_endpoints), rows)


def mark_up(store: Store, worker: str, endpoint: str) -> None:
    """``worker`` reaches ``endpoint`` again."""
    mine = (llm_endpoints.c.worker == worker) & (llm_endpoints.c.endpoint == endpoint)
    with store.transaction(write=True) as conn:
        conn.execute(delete(llm_endpoints).where(mine))


def endpoints_down(store: Store, batch_id: str, now: float | None = None) -> list[EndpointDown]:
    """The endpoints live workers find down for ``batch_id``'s jobs, by base URL."""
    fresh = (now if now is not None else time.time()) - STALE_AFTER
    query = (
        select(llm_endpoints)
        .where(llm_endpoints.c.batch_id == batch_id, llm_endpoints.c.updated >= fresh)
        .order_by(llm_endpoints.c.endpoint, llm_endpoints.c.updated)
    )
    with store.transaction(write=False) as conn:
        rows = conn.execute(query).all()
    found: dict[str, EndpointDown] = {}
    for row in rows:
        seen = found.get(row.endpoint)
        if seen is None:
            found[row.endpoint] = EndpointDown(
                endpoint=row.endpoint, since=row.since, error=row.error, workers=1
            )
        else:  # the newest row's error, the earliest start
            seen.since = min(seen.since, row.since)
            seen.error = row.error
            seen.workers += 1
    return list(found.values())
