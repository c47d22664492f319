"""One OpenAI client per endpoint and event loop, made on first use and closed with its loop.

An HTTP connection pool belongs to the event loop that opened its connections, and one
agent may serve several loops (worker threads, or a test's ``anyio.run`` per record).
Every agent of a process that calls one endpoint (with the same key variable and
timeout) shares that loop's client: one connection pool per endpoint, whatever the number
of combinations or batches.

The client sends over aiohttp (``openai.DefaultAioHttpClient``): under a hundred
concurrent requests the default httpx transport spends most of its CPU on its own pool's
bookkeeping and opens far more connections than requests in flight; aiohttp keeps one
connection per request in flight and costs a fraction of the CPU.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Callable

import openai.resources.chat.completions  # noqa: F401 - load now, not in the first call
from openai import AsyncOpenAI, DefaultAioHttpClient

PLACEHOLDER_KEY = "unused"  # sent when there is no key: local servers still want one


async def _close_with_loop(client: AsyncOpenAI) -> AsyncGenerator[None, None]:
    """Closes ``client`` when its event loop shuts down.

    Started once, this generator waits at its ``yield``; asyncio closes every unfinished
    async generator when its loop shuts down (``asyncio.run``, ``anyio.run``), which runs
    the ``finally`` below, so no connection outlives its loop unclosed.
    """
    try:
        yield
    finally:
        await client.close()


class LoopClients:
    """Clients of one endpoint, by event loop (thread-safe).

    ``api_key`` is called when a client is made, so the key is read from the environment
    then and is kept nowhere else.
    """

    def __init__(self, base_url: str, api_key: Callable[[], str | None], timeout: float) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncOpenAI, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    async def get(self) -> AsyncOpenAI:
        """The running loop's client."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._clients.get(loop)
            fresh = found is None
            if found is None:
                client = AsyncOpenAI(
                    api_key=self.api_key() or PLACEHOLDER_KEY,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=0,  # the agent retries, honouring Retry-After
                    http_client=DefaultAioHttpClient(timeout=self.timeout),
                )
                found = self._clients[loop] = (client, _close_with_loop(client))
        if fresh:
            await anext(found[1])  # starts the closer: the loop now knows it
        return found[0]

    async def aclose(self) -> None:
        """Close the running loop's client and its connections (made again if needed)."""
        with self._lock:
            found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()


_SHARED: dict[tuple[str, str | None, float], LoopClients] = {}
_SHARED_LOCK = threading.Lock()


def shared_clients(base_url: str, api_key_env: str | None, timeout: float) -> LoopClients:
    """The clients of this process for one endpoint, key variable and timeout."""

    def api_key() -> str | None:
        return os.environ.get(api_key_env) if api_key_env else None

    with _SHARED_LOCK:
        found = _SHARED.get((base_url, api_key_env, timeout))
        if found is None:
            found = _SHARED[(base_url, api_key_env, timeout)] = LoopClients(
                base_url, api_key, timeout
            )
        return found
