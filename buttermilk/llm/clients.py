"""One HTTP session per endpoint and event loop, made on first use and closed with its loop.

The LLM agent posts chat completions over aiohttp itself. The ``openai`` client was the
first choice, over its aiohttp backend, but per call it builds and deep-copies request
options, wraps aiohttp's request and response in httpx objects and parses the answer into
pydantic models: more CPU than the HTTP exchange itself, and under a hundred concurrent
calls the difference between keeping up with the endpoint and not (see
``benchmarks/llm.py``). A chat completion is one JSON POST, so the agent sends it here
with the headers an OpenAI-compatible server expects, and reads the answer's bytes.

An HTTP connection pool belongs to the event loop that opened its connections, and one
agent may serve several loops (worker threads, or a test's ``anyio.run`` per record).
Every agent of a process that calls one endpoint (with the same key variable and
timeout) shares that loop's session: one connection pool per endpoint, whatever the
number of combinations or batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import urllib.parse
import urllib.request
import weakref
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson

from buttermilk.llm.retry import Failure, classify, status_failure
from buttermilk.stopping import giving_way

PLACEHOLDER_KEY = "unused"  # sent when there is no key: local servers still want one
USER_AGENT = "buttermilk-batch"
MAX_CONNECTIONS = 1000  # per endpoint and loop; the batch's concurrency is the real cap


ORGANIZATION_HEADERS = {
    "OPENAI_ORG_ID": "OpenAI-Organization",
    "OPENAI_PROJECT_ID": "OpenAI-Project",
}
"""Headers OpenAI's own clients send from these environment variables, when set."""


def proxy_for(url: str) -> str | None:
    """The proxy to send requests to ``url`` through: ``HTTPS_PROXY``/``HTTP_PROXY`` (or
    ``ALL_PROXY``) by its scheme, unless ``NO_PROXY`` exempts its host; None for none.
    What the ``openai`` client honours, read with the standard library's rules."""
    proxies = urllib.request.getproxies_environment()
    parts = urllib.parse.urlsplit(url)
    if not proxies or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def _certificates(url: str) -> ssl.SSLContext | bool:
    """Verify servers against certifi's CA bundle (what the ``openai`` client's httpx did),
    or the system's when certifi is not installed. An ``http://`` endpoint gets aiohttp's
    own verifying context (``True``: should it ever redirect to https) rather than a new
    one: loading the bundle takes 20-30 ms of every session's start."""
    if urllib.parse.urlsplit(url).scheme != "https":
        return True
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


async def _close_with_loop(
    session: aiohttp.ClientSession, forget: Callable[[], None]
) -> AsyncGenerator[None, None]:
    """Closes ``session`` when its event loop shuts down, and ``forget``s it.

    Started once, this generator waits at its ``yield``; asyncio closes every unfinished
    async generator when its loop shuts down (``asyncio.run``, ``anyio.run``), which runs
    the ``finally`` below, so no connection (and no loop) outlives its loop.
    """
    try:
        yield
    finally:
        forget()
        await session.close()


@dataclass(frozen=True)
class Posted:
    """A 2xx answer's body."""

    body: bytes


class LoopClients:
    """Sessions of one endpoint, by event loop (thread-safe).

    ``api_key`` is called for each request, so a key set in the environment later (in a
    notebook) is the one sent.
    """

    def __init__(self, base_url: str, api_key: Callable[[], str | None], timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self._lock = threading.Lock()
        self._proxy: str | None = None  # read with each new session
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    def _new_session(self) -> aiohttp.ClientSession:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._proxy = proxy_for(self.base_url)
        return aiohttp.ClientSession(
            headers=headers,
            # Not trust_env: aiohttp would then look up the proxy (and read ~/.netrc) in a
            # thread on every request; proxy_for has done that once for this endpoint.
            trust_env=False,
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ssl=_certificates(self.base_url)),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # an API call has no use for cookies
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )

    async def get(self) -> aiohttp.ClientSession:
        """The running loop's session."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._sessions.get(loop)
            fresh = found is None
            if found is None:
                session = self._new_session()
                closer = _close_with_loop(session, lambda: self._forget(loop))
                found = self._sessions[loop] = (session, closer)
        if fresh:
            await anext(found[1])  # starts the closer: the loop now knows it
        return found[0]

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._sessions.pop(loop, None)

    def _headers(self) -> dict[str, str]:
        """Per request: the key (read now) and OpenAI's organization and project headers."""
        key = (self.api_key() or PLACEHOLDER_KEY).strip()  # a CRLF .env file leaves a \r
        headers = {"Authorization": f"Bearer {key}"}
        for variable, header in ORGANIZATION_HEADERS.items():
            value = os.environ.get(variable, "").strip()
            if value:
                headers[header] = value
        return headers

    async def post(self, path: str, body: dict[str, Any]) -> Posted | Failure:
        """POST ``body`` as JSON to ``path`` under the base URL: the answer's body when its
        status is 2xx, else (or when the call failed) why not."""
        session = await self.get()
        try:
            # Keys that are not text (YAML's logit_bias: {50256: -100}) are sent as text.
            data = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
            url = self.base_url + path
            async with session.post(
                url, data=data, headers=self._headers(), proxy=self._proxy
            ) as response:
                answer = await response.read()
                if response.status < 300:
                    return Posted(answer)
                return status_failure(response.status, response.headers, _json_or_text(answer))
        except Exception as exc:  # classified below; anything else is not ours to handle
            failure = classify(exc)
            if failure is None:
                raise
            return failure

    async def fetch(self, path: str) -> Posted | Failure:
        """GET ``path`` under the base URL: the answer's body when its status is 2xx, else
        (or when the call failed) why not."""
        session = await self.get()
        try:
            url = self.base_url + path
            async with session.get(url, headers=self._headers(), proxy=self._proxy) as response:
                answer = await response.read()
                if response.status < 300:
                    return Posted(answer)
                return status_failure(response.status, response.headers, _json_or_text(answer))
        except Exception as exc:  # classified below; anything else is not ours to handle
            failure = classify(exc)
            if failure is None:
                raise
            return failure

    async def post_paid(
        self,
        path: str,
        body: dict[str, Any],
        grace: float,
        late: Callable[[Posted | Failure | None], None],
    ) -> Posted | Failure:
        """:meth:`post`, for a call the endpoint bills: cancelled once it went out, it still
        waits up to ``grace`` seconds for the answer, hands it to ``late`` (None when none
        came by then), and only then lets the cancellation go on. A hard stop
        (:func:`~buttermilk.stopping.hard_stop`) ends that wait at once (``late`` gets None)."""
        task = asyncio.ensure_future(self.post(path, body))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            found: Posted | Failure | None = None
            waiting = anyio.CancelScope(shield=True)
            with waiting, giving_way(waiting), contextlib.suppress(TimeoutError):
                found = await asyncio.wait_for(task, grace)
            if not task.done():
                task.cancel()
            late(found)
            raise

    async def aclose(self) -> None:
        """Close the running loop's session and its connections (made again if needed)."""
        with self._lock:
            found = self._sessions.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()


def _json_or_text(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode(errors="replace")


_SHARED: dict[tuple[str, str | None, float], LoopClients] = {}
_SHARED_LOCK = threading.Lock()


def shared_clients(base_url: str, api_key_env: str | None, timeout: float) -> LoopClients:
    """The sessions of this process for one endpoint, key variable and timeout."""

    def api_key() -> str | None:
        return os.environ.get(api_key_env) if api_key_env else None

    with _SHARED_LOCK:
        key = (base_url, api_key_env, timeout)
        found = _SHARED.get(key)
        if found is None:
            found = _SHARED[key] = LoopClients(base_url, api_key, timeout)
        return found
