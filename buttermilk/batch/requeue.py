"""Retrying a batch: requeue the jobs that did not complete and publish them again."""

from __future__ import annotations

import anyio

from buttermilk.batch.grid import requeued_messages
from buttermilk.batch.publishing import mark_published, publish
from buttermilk.domain import BatchInfo
from buttermilk.errors import VariantError
from buttermilk.queue.base import Queue
from buttermilk.store.store import Store


async def retry_batch(
    store: Store, queue: Queue, batch_id: str, *, variant: str | None, option: str
) -> tuple[BatchInfo, int]:
    """``BatchService.retry`` (see there)."""
    full_id = await anyio.to_thread.run_sync(store.resolve_id, batch_id)
    batch = await anyio.to_thread.run_sync(store.get_batch, full_id)
    if variant is not None:
        keys = [c.key for c in batch.combinations()]
        if variant not in keys:
            raise VariantError(
                f"{option}={variant!r}: batch {full_id} has no such combination "
                f"(its combinations: {', '.join(keys)})"
            )
    await queue.prepare(interactive=batch.interactive)
    requeued = await anyio.to_thread.run_sync(lambda: store.requeue(full_id, variant=variant))
    await publish(queue, requeued_messages(requeued.batch, requeued.jobs))
    await anyio.to_thread.run_sync(mark_published, store, full_id)
    return requeued.batch, len(requeued.jobs)
