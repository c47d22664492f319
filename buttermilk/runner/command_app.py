"""What every command runs with: the settings, store, queue and service (:class:`App`),
the exit codes, and the helpers commands share to name a batch and show it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchSummary
from buttermilk.errors import QueueError, UsageError
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.queue import Delivery, JobMessage, Queue, open_queue
from buttermilk.runner import render
from buttermilk.runner.settings import AppSettings
from buttermilk.store import open_store

if TYPE_CHECKING:
    from buttermilk.store import Store

log = logging.getLogger("buttermilk")

EXIT_OK = 0
EXIT_BATCH_DID_NOT_COMPLETE = 1
EXIT_JOBS_FAILED = 3  # a batch waited on completed, but some of its jobs failed
EXIT_INTERRUPTED = 130


@dataclass
class App:
    settings: AppSettings
    store: Store
    queue: Queue
    service: BatchService

    @property
    def json(self) -> bool:
        return self.settings.batch.format == "json"


class NoQueue(Queue):
    """The queue of a command that reads and changes the store only (:data:`STORE_ONLY`):
    none is opened, so its transport is never imported (Pub/Sub's client alone costs
    ``list`` more than everything else it does). Any use of it is a bug, and raises."""

    name = "none"
    lease_seconds = 0.0

    def _unused(self) -> NoReturn:
        raise QueueError("this command opened no queue")

    async def publish(self, messages: Sequence[JobMessage]) -> None:
        self._unused()

    async def receive(
        self,
        max_messages: int,
        *,
        interactive: bool = False,
        batch_id: str | None = None,
        wait: float = 1.0,
    ) -> list[Delivery]:
        self._unused()

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._unused()

    async def nack(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        self._unused()

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        self._unused()


# The commands that read and change the store only: they never open the queue.
STORE_ONLY = frozenset({"list", "status", "cancel", "export", "report", "estimate"})


@asynccontextmanager
async def open_app(
    settings: AppSettings, flows: FlowCatalog, *, queue: bool = True
) -> AsyncIterator[App]:
    """The store, queue and service of ``settings``, closed on leaving; with
    ``queue=False`` (a command of :data:`STORE_ONLY`), no queue: :class:`NoQueue`."""
    store = open_store(settings.store)
    opening: AbstractAsyncContextManager[Queue] = (
        open_queue(settings.queue) if queue else nullcontext(NoQueue())
    )
    try:
        async with opening as opened:
            yield App(settings, store, opened, BatchService(store, opened, flows))
    finally:
        store.close()


def batch_id_given(app: App, command: str) -> str:
    """The full id of ``batch.batch_id`` (a unique prefix); UsageError when it is not given."""
    given = app.settings.batch.batch_id
    if not given:
        raise UsageError(
            f"batch.command={command} needs batch.batch_id=ID (a unique prefix is enough)"
        )
    return app.store.resolve_id(given)


def batch_or_newest(app: App, command: str) -> str:
    """The full id of ``batch.batch_id`` (a unique prefix), or of the newest batch."""
    if app.settings.batch.batch_id:
        return batch_id_given(app, command)
    newest = app.store.list_batches(limit=1)
    if not newest:
        raise UsageError("there are no batches yet: create one with ui=batch flow=NAME")
    log.info("no batch.batch_id given: showing the newest batch, %s", newest[0].id)
    return newest[0].id


def show_summary(app: App, summary: BatchSummary) -> None:
    """A batch's summary on stdout: a table, or JSON with ``batch.format=json``."""
    if app.json:
        render.print_json(summary.as_json())
    else:
        render.stdout_console().print(render.status_view(summary))


async def export_output(app: App, batch_id: str) -> None:
    """Export the batch to ``batch.output`` when it is given."""
    output = app.settings.batch.output
    if output is not None:
        rows = await app.service.export(batch_id, output)
        log.info("wrote %d rows to %s", rows, output.resolve())
