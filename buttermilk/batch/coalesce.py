"""Gather calls made by many tasks into one bulk call (one transaction, one request).

Callers ``await submit(item)`` and get their own result back. While a bulk call is in
flight, new items pile up and go together in the next one, so the batch size follows the
load without any timer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class _Waiter(Generic[T, R]):
    item: T
    done: anyio.Event = field(default_factory=anyio.Event)
    result: R | None = None
    error: BaseException | None = None


class Coalescer(Generic[T, R]):
    """Run ``fn`` over everything submitted since the last call; start with :meth:`run`."""

    def __init__(
        self,
        fn: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_size: int = 500,
        linger: float = 0.0,
    ) -> None:
        """``linger``: seconds to wait for more items before a call, where latency is cheap."""
        self._fn = fn
        self._max_size = max_size
        self._linger = linger
        self._pending: list[_Waiter[T, R]] = []
        self._wakeup = anyio.Event()

    async def submit(self, item: T) -> R:
        waiter: _Waiter[T, R] = _Waiter(item)
        self._pending.append(waiter)
        self._wakeup.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result  # type: ignore[return-value]

    async def run(self) -> None:
        """Serve submissions until cancelled."""
        while True:
            await self._wakeup.wait()
            if self._linger:
                await anyio.sleep(self._linger)
            self._wakeup = anyio.Event()
            while self._pending:
                group, self._pending = (
                    self._pending[: self._max_size],
                    self._pending[self._max_size :],
                )
                try:
                    with anyio.CancelScope(shield=True):
                        results = await self._fn([w.item for w in group])
                except Exception as exc:
                    for w in group:
                        w.error = exc
                        w.done.set()
                    continue
                for w, result in zip(group, results, strict=True):
                    w.result = result
                    w.done.set()
