"""When a job given back for a retry comes due: the delay, and the worker's own waiting.

A worker that releases a job for a later retry must not count as idle before that retry
is due, or it would leave a batch with a job waiting and nobody to run it.
"""

from __future__ import annotations

import logging
import random
import time

log = logging.getLogger("buttermilk.batch.worker")

MAX_RETRY_DELAY = 300.0


def retry_delay(base: float, attempt: int) -> float:
    """Exponential backoff with +-10% jitter: base, 2*base, 4*base, ... capped (seconds)."""
    delay: float = min(base * 2 ** max(attempt - 1, 0), MAX_RETRY_DELAY)
    return delay * random.uniform(0.9, 1.1)


class DueRetries:
    """Per batch, when the last retry this worker scheduled comes due (monotonic seconds)."""

    def __init__(self) -> None:
        self._due: dict[str, float] = {}
        self._why: dict[str, str] = {}  # what the latest due job of each batch waits for
        self._told: float | None = None  # the due time last said to keep the worker

    def add(self, batch_id: str, delay: float, why: str = "a retry") -> None:
        """A job of the batch was given back, to come back in ``delay`` seconds; ``why``
        says what for (the worker's log line when it stays for it)."""
        now = time.monotonic()
        self._due = {b: t for b, t in self._due.items() if t > now}  # forget past ones
        if now + delay >= self._due.get(batch_id, 0.0):
            self._due[batch_id] = now + delay
            self._why[batch_id] = why

    def forget(self, batch_id: str) -> None:
        """The batch has ended: its retries will not run."""
        self._due.pop(batch_id, None)

    def batches(self) -> set[str]:
        return set(self._due)

    def latest(self) -> tuple[str, float] | None:
        """The batch whose retry comes due last, and when; None if none is due."""
        if not self._due:
            return None
        batch_id = max(self._due, key=self._due.__getitem__)
        return batch_id, self._due[batch_id]

    def keep_waiting(self, idle_timeout: float) -> bool:
        """Whether a worker idle for ``idle_timeout`` must stay: a retry it scheduled comes
        due later than ``idle_timeout`` ago. Says so once per due time."""
        latest = self.latest()
        now = time.monotonic()
        if latest is None or now - latest[1] >= idle_timeout:
            return False
        batch_id, due = latest
        if due != self._told:
            self._told = due
            log.info(
                "queue empty, but batch %s has a job coming back in %.0fs (%s): waiting for it",
                batch_id,
                max(due - now, 0.0),
                self._why.get(batch_id, "a retry"),
            )
        return True
