"""Settling a job: store its outcome, then ack, give back, retry or dead-letter its message."""

from __future__ import annotations

import logging
import time

from buttermilk.batch.messages import Messages
from buttermilk.batch.outage import GaveUp
from buttermilk.batch.retries import DueRetries, retry_delay
from buttermilk.batch.storelink import StoreLink
from buttermilk.batch.worker_options import WorkerStats
from buttermilk.domain import JobStatus
from buttermilk.queue.base import Delivery
from buttermilk.store.store import Outcome

log = logging.getLogger("buttermilk.batch.worker")


async def settle(
    link: StoreLink,
    messages: Messages,
    retries: DueRetries,
    stats: WorkerStats,
    *,
    delivery: Delivery,
    retry_delay_setting: float,
    attempt: int,
    outcome: Outcome,
    delay: float,
) -> None:
    """Store a job's outcome through ``link``, then ack its message, give it back (released:
    in ``delay`` s), nack it for a retry (``retry_delay_setting``, the batch's
    ``retry_delay``, for try ``attempt``) or dead-letter it (failed), counting in ``stats``.

    Raises GaveUp (the message is then given back) if the worker gave up on the store.
    """
    try:
        applied = await link.exchange(outcome)
    except GaveUp:
        raise
    except Exception as exc:  # not the store being away: a fault of ours
        log.error(
            "could not store the outcome of %s/%s (it runs again later): %s",
            outcome.batch_id,
            outcome.key,
            exc,
        )
        return
    if not applied:
        # Its lease ran out and another worker claimed it: that one's outcome counts.
        stats.taken_over += 1
        log.warning(
            "job %s/%s was taken over by another worker; its outcome here is dropped",
            outcome.batch_id,
            outcome.key,
        )
        await messages.ack(delivery)
        return
    if outcome.status == JobStatus.PENDING:
        if outcome.release:
            if delay:  # the worker must not idle out before it comes back
                retries.add(outcome.batch_id, delay, "waiting for its LLM endpoint to be back")
            await messages.give_back(delivery, delay)
        else:
            stats.retried += 1
            delay = retry_delay(retry_delay_setting, attempt)
            retries.add(outcome.batch_id, delay)
            await messages.nack(delivery, delay)
        return
    stats.last_end = time.monotonic()
    if outcome.status == JobStatus.COMPLETED:
        stats.completed += 1
    elif outcome.status == JobStatus.FAILED:
        stats.failed += 1
        log.warning(
            "job %s/%s failed: %s: %s",
            outcome.batch_id,
            outcome.key,
            outcome.error_type,
            outcome.error_message,
        )
        await messages.dead_letter(
            delivery, f"job failed: {outcome.error_type}: {outcome.error_message}"
        )
        return
    else:
        stats.cancelled += 1
    await messages.ack(delivery)
