"""A service the worker cannot reach (the queue, the store): said once, backed off, resumed.

While a service is down the worker logs one line when the outage starts and one when it
ends, and its tasks wait between tries, all on one shared schedule (so that a hundred
waiting jobs make one try per period, not a hundred), doubling up to a maximum. The
worker may give up (:meth:`Outage.abandon`): waiting tasks then raise :class:`GaveUp`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_BACKOFF = 0.5  # seconds before the second try; doubles up to the maximum
MAX_BACKOFF = 15.0


class GaveUp(Exception):
    """Raised in a task waiting for a service once the worker has given up on it."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (drivers add hints on further lines)."""
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


class Outage:
    """The state of one service's outage, shared by every task that uses the service."""

    def __init__(self, down: str, back: str) -> None:
        """``down``: logged once when it starts (``{error}`` is filled in); ``back``:
        logged when it ends (``{seconds}``: how long it lasted)."""
        self._down = down
        self._back_text = back
        self.since: float | None = None  # monotonic time of the first failure
        self.error = ""
        self.abandoned = False
        self.patient = True  # False: the first failure abandons (the worker is stopping)
        self._backoff = FIRST_BACKOFF
        self._next_try = 0.0
        self._back = anyio.Event()

    @property
    def active(self) -> bool:
        return self.since is not None

    @property
    def until_next_try(self) -> float:
        """Seconds until the next try is due (0: now)."""
        return max(self._next_try - time.monotonic(), 0.0)

    @property
    def duration(self) -> float:
        """Seconds since the outage started (0 when there is none)."""
        return 0.0 if self.since is None else time.monotonic() - self.since

    def failed(self, error: BaseException) -> None:
        """A try failed: the first failure starts the outage; a failure after the next try
        was due doubles the pause."""
        now = time.monotonic()
        self.error = one_line(error)
        if not self.patient:
            self.abandon()
        if self.since is None:
            self.since = now
            self._backoff = FIRST_BACKOFF
            self._next_try = now + self._backoff
            self._back = anyio.Event()
            log.warning(self._down.format(error=self.error))
        elif now >= self._next_try:
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            self._next_try = now + self._backoff
            log.debug("still failing: %s", self.error)

    def recovered(self) -> None:
        """A try worked: the outage (if any) is over; waiting tasks try again at once."""
        if self.since is not None:
            log.warning(self._back_text.format(seconds=time.monotonic() - self.since))
            self.since = None
            self._back.set()

    def abandon(self) -> None:
        """Give up: tasks waiting in :meth:`pause` (and any that come later) raise GaveUp."""
        self.abandoned = True
        self._back.set()

    def stop_waiting(self) -> None:
        """Abandon the outage now if there is one, and at its first failure otherwise."""
        self.patient = False
        if self.active:
            self.abandon()

    async def pause(self) -> None:
        """Wait until the next try is due, or the service is back (another task reached
        it). Raises GaveUp once the outage was abandoned."""
        if self.abandoned:
            raise GaveUp
        delay = self._next_try - time.monotonic()
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._back.wait()
        if self.abandoned:
            raise GaveUp

    async def retry(
        self, call: Callable[[], Awaitable[T]], outage: Callable[[Exception], bool]
    ) -> T:
        """Run ``call`` until it raises no error that ``outage`` says is one, pausing
        between tries; raises other errors, and GaveUp once the outage was abandoned."""
        while True:
            if self.abandoned:
                raise GaveUp
            try:
                result = await call()
            except Exception as exc:
                if not outage(exc):
                    raise
                self.failed(exc)
                await self.pause()
                continue
            self.recovered()
            return result
