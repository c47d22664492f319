"""How a worker reaches the store: blocking calls in threads, claims and outcomes gathered
into one transaction per round, and an unreachable store waited out.

A store that cannot be reached (a lost connection, a dropped database, a lock held too
long) is one :class:`~buttermilk.batch.outage.Outage`: said once when it starts and once
when it ends. Meanwhile claims and outcomes wait for it, on one shared backoff.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from buttermilk.batch.coalesce import Coalescer
from buttermilk.batch.outage import Outage, one_line
from buttermilk.errors import StoreError, UsageError
from buttermilk.store.store import Claim, Claimed, Outcome, Skipped, Store

T = TypeVar("T")


def unreachable_store(error: BaseException, where: str) -> StoreError | None:
    """The error as a one-line StoreError naming the store, if it says the store could not
    be reached or used (a lost connection, a database gone, a lock held too long); None
    for other errors, and for a value the store refused (a UsageError: trying again
    cannot help). The message never holds the SQL statement or its parameters."""
    if isinstance(error, UsageError):
        return None
    if isinstance(error, StoreError):
        return error
    if isinstance(error, OperationalError | InterfaceError):
        return StoreError(
            f"cannot reach the batch store at {where}: {one_line(error.orig or error)}"
        )
    if isinstance(error, PoolTimeoutError):
        return StoreError(f"cannot reach the batch store at {where}: {one_line(error)}")
    return None


async def store_call(where: str, fn: Callable[[], T]) -> T:
    """Run a blocking store call in a worker thread; raises StoreError (one line) when
    the store cannot be reached, and anything else unchanged."""
    try:
        return await anyio.to_thread.run_sync(fn)
    except Exception as exc:
        error = unreachable_store(exc, where)
        if error is None:
            raise
        raise error from None


def _unreachable(error: Exception) -> bool:
    """A store error worth waiting out (not a value the store refused)."""
    return isinstance(error, StoreError) and not isinstance(error, UsageError)


class StoreLink:
    """One worker's way to the store; serve its exchanges with :meth:`run`."""

    def __init__(self, store: Store, *, worker: str, lease: Callable[[], float]) -> None:
        """``lease``: the seconds a claim holds its job (the queue's, read at each round)."""
        self.store = store
        self.down = Outage(
            "{error}; holding its jobs and retrying with backoff",
            "the batch store is reachable again, after {seconds:.0f}s",
        )
        self._worker = worker
        self._lease = lease
        self._ops: Coalescer[Claim | Outcome, Claimed | Skipped | bool] = Coalescer(self._exchange)

    async def run(self) -> None:
        """Send gathered claims and outcomes, a transaction per round, until cancelled."""
        await self._ops.run()

    async def call(self, fn: Callable[[], T]) -> T:
        """A blocking store call in a thread; StoreError (one line) if it is unreachable."""
        return await store_call(self.store.safe_url, fn)

    async def _exchange(self, ops: list[Claim | Outcome]) -> list[Claimed | Skipped | bool]:
        lease = self._lease()
        return await self.call(lambda: self.store.exchange(ops, worker=self._worker, lease=lease))

    async def exchange(self, op: Claim | Outcome) -> Claimed | Skipped | bool:
        """Claim a job or record an outcome (see ``Store.exchange``), waiting out an
        unreachable store; raises GaveUp if the worker gives up on it."""
        return await self.down.retry(lambda: self._ops.submit(op), _unreachable)

    async def patient(self, fn: Callable[[], T]) -> T:
        """A store call that waits out an unreachable store like :meth:`exchange`."""
        return await self.down.retry(lambda: self.call(fn), _unreachable)

    async def probe(self, batch_id: str = "") -> None:
        """Look whether an unreachable store is back (any cheap read: one batch row)."""
        try:
            await self.call(lambda: self.store.batch_statuses([batch_id]))
        except StoreError as exc:
            self.down.failed(exc)
        else:
            self.down.recovered()
