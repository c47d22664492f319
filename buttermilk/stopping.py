"""A hard stop (a second Ctrl-C or SIGTERM): waits that outlive a cancellation give way.

Some waits are shielded so that a cancellation does not cut them short: an LLM call of a
cancelled job waits a few seconds for the answer the endpoint bills (so the bill is
right). A graceful stop lets them finish; a hard stop must not wait on them. The waits
register their cancel scope here (:func:`giving_way`), and :func:`hard_stop`, called on
the event loop being stopped, cancels them and makes later ones end at once. Per event
loop: a hard stop of one loop leaves the waits of another alone.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import anyio

_STOPPED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_WAITS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[anyio.CancelScope]] = (
    weakref.WeakKeyDictionary()
)


def hard_stop() -> None:
    """Cancel the running loop's registered waits, and end its later ones at once. Call
    it from the loop being stopped (a signal watcher's task)."""
    loop = asyncio.get_running_loop()
    _STOPPED.add(loop)
    for scope in list(_WAITS.get(loop, ())):
        scope.cancel()


def hard_stopped() -> bool:
    """Whether the running loop was hard stopped."""
    return asyncio.get_running_loop() in _STOPPED


@contextmanager
def giving_way(scope: anyio.CancelScope) -> Iterator[None]:
    """While the block runs, a hard stop of the running loop cancels ``scope`` (a shielded
    scope, typically; cancelled at once when the loop is already stopped)."""
    loop = asyncio.get_running_loop()
    waits = _WAITS.setdefault(loop, set())
    waits.add(scope)
    if loop in _STOPPED:
        scope.cancel()
    try:
        yield
    finally:
        waits.discard(scope)
