"""Publishing a stored batch's messages: in chunks, deleting the batch if that fails, or
while the batch is being stored (Pub/Sub), then marking the batch published."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterator

import anyio

from buttermilk.domain import BatchInfo
from buttermilk.errors import QueueError
from buttermilk.queue.base import JobMessage, Queue
from buttermilk.store.store import Store

PUBLISH_CHUNK = 5_000


async def publish(queue: Queue, messages: Iterator[JobMessage]) -> None:
    """Hand the queue its messages in chunks (a large batch is never all in memory)."""
    while chunk := list(itertools.islice(messages, PUBLISH_CHUNK)):
        await queue.publish(chunk)


def mark_published(store: Store, batch_id: str) -> None:
    """Mark the batch published, and complete it if workers finished every job already."""
    store.mark_published(batch_id)
    store.complete_if_done(batch_id)  # in case workers finished every job already


async def _raise(exc: BaseException) -> None:
    raise exc


async def publish_or_delete(store: Store, batch_id: str, publishing: Awaitable[None]) -> None:
    """Publish a stored batch's messages; if that fails, delete the batch and raise
    (QueueError for an error that is not one already; cancellation as it is)."""
    try:
        await publishing
    except BaseException as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(store.delete_batch, batch_id)
        if isinstance(exc, Exception) and not isinstance(exc, QueueError):
            raise QueueError(
                f"publishing batch {batch_id} failed, so it was removed: {exc}"
            ) from exc
        raise


async def store_while_publishing(
    store: Store, batch_id: str, store_it: Callable[[], BatchInfo], publishing: Awaitable[None]
) -> BatchInfo:
    """Store the batch (``store_it``, in a thread) while its messages are published.

    Workers may get a message before the batch is committed: they give it back for a
    moment (see ``JobMessage.created_at``). If storing fails, publishing stops and
    the store's error is raised (messages sent by then name no batch; workers set them
    aside once they are old). If publishing fails or is cancelled, the batch is
    deleted once stored, and the error raised as in :func:`publish_or_delete`.
    """
    stored: list[BatchInfo] = []
    errors: dict[str, Exception] = {}
    publish_scope = anyio.CancelScope()

    def store_and_note() -> None:
        stored.append(store_it())  # noted in the thread: a cancelled caller still knows

    async def store_task() -> None:
        try:
            await anyio.to_thread.run_sync(store_and_note)
        except Exception as exc:
            errors["store"] = exc
            publish_scope.cancel()  # no point publishing a batch that is not there

    async def publish_task() -> None:
        try:
            with publish_scope:
                await publishing
        except Exception as exc:
            errors["publish"] = exc

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store_task)
            tg.start_soon(publish_task)
        if "store" in errors:
            raise errors["store"]
        if "publish" in errors:
            raise errors["publish"]
    except BaseException as exc:
        if stored:
            await publish_or_delete(store, batch_id, _raise(exc))
        raise
    return stored[0]
