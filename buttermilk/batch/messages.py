"""How a worker settles the messages it received: ack, nack, give back, dead-letter.

A failure to settle is logged and otherwise ignored: the message then comes back when
its lease ends, and the store's claim decides what to do with it.
"""

from __future__ import annotations

import logging

import anyio

from buttermilk.batch.coalesce import Coalescer
from buttermilk.errors import ButtermilkError
from buttermilk.queue.base import Delivery, Queue

log = logging.getLogger("buttermilk.batch.worker")

ACK_LINGER = 0.005  # acks wait a moment to go out together: their latency costs nothing


class Messages:
    """Settle deliveries of one queue; acks go out in batches while :meth:`run` runs."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self._acks: Coalescer[Delivery, None] = Coalescer(self._ack_many, linger=ACK_LINGER)
        self._releases: Coalescer[tuple[Delivery, float], None] = Coalescer(
            self._release_many, linger=ACK_LINGER
        )

    async def run(self) -> None:
        """Send acks and releases until cancelled."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._acks.run)
            tg.start_soon(self._releases.run)

    async def _ack_many(self, deliveries: list[Delivery]) -> list[None]:
        await self.queue.ack(deliveries)
        return [None] * len(deliveries)

    async def _release_many(self, releases: list[tuple[Delivery, float]]) -> list[None]:
        by_delay: dict[float, list[Delivery]] = {}
        for delivery, delay in releases:
            by_delay.setdefault(delay, []).append(delivery)
        for delay, deliveries in by_delay.items():
            await self.queue.nack(deliveries, delay)
        return [None] * len(releases)

    def last_delivery(self, delivery: Delivery) -> bool:
        """Whether the transport gives this message up if it is not acked now."""
        limit = self.queue.max_deliveries
        return limit is not None and delivery.delivery_attempt >= limit

    async def ack(self, delivery: Delivery) -> None:
        """Ack (batched with others); if that fails, the message returns and is skipped."""
        try:
            await self._acks.submit(delivery)
        except ButtermilkError as exc:
            log.warning("could not ack a message (it comes back and is skipped): %s", exc)

    async def nack(self, delivery: Delivery, delay: float) -> None:
        """Make the message visible again in ``delay`` seconds."""
        try:
            await self._releases.submit((delivery, delay))
        except ButtermilkError as exc:
            log.warning("could not release a message (it returns when its lease ends): %s", exc)

    async def give_back(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Give an unfinished job's message back (visible again in ``delay`` seconds),
        without spending an attempt.

        On its last delivery the transport would set the message aside instead (Pub/Sub's
        dead-letter policy) and leave the job with none: it gets a fresh copy instead.
        """
        with anyio.CancelScope(shield=True):
            if self.last_delivery(delivery) and delivery.message is not None:
                try:
                    await self.queue.publish([delivery.message])
                except ButtermilkError as exc:
                    log.warning("could not renew a message on its last delivery: %s", exc)
                else:
                    await self.ack(delivery)
                    return
            await self.nack(delivery, delay)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Set the message aside with ``reason`` (where the transport keeps such)."""
        try:
            await self.queue.dead_letter([delivery], reason)
        except ButtermilkError as exc:
            log.warning("could not set a message aside (it comes back): %s", exc)
