"""Endpoint health while a worker runs: an endpoint that keeps failing is down, and its
jobs wait instead of failing.

Each worker keeps one :class:`EndpointHealth` (in memory; the LLM agents of its jobs find
it through :func:`endpoint_health`). A call that fails with a broken connection or a 5xx
counts against its endpoint (its base URL); :data:`DOWN_AFTER` of them in a row, with no
answer between, mark it down: one log line, and a row per waiting batch in the store
(:mod:`buttermilk.store.endpoints`) for ``status`` and the dashboard. While it is down,
no call goes to it: an agent about to call raises :class:`EndpointDownError`, and the
worker gives the job back to the queue with a delay, without spending an attempt
(:func:`endpoint_wait`). One of those jobs, once the next probe is due, probes the
endpoint (:func:`~buttermilk.llm.endpoints.check_endpoint`); probes back off from
:data:`FIRST_PROBE` doubling to :data:`MAX_PROBE` seconds. When a probe or a call gets an
answer the endpoint is back: one more log line, and the rows go.

Timeouts and 429s do not count (a slow or busy endpoint is not away), nor does a 5xx that
is not transient (a refused request), and any answer resets the count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

import anyio

from buttermilk.errors import AgentError
from buttermilk.flows.agents import current_job
from buttermilk.llm.endpoints import Endpoint, check_endpoint, check_endpoints
from buttermilk.llm.retry import Failure
from buttermilk.store import endpoints as published
from buttermilk.store.store import Store

log = logging.getLogger("buttermilk.llm.health")

DOWN_AFTER = 5  # calls failing in a row (connection errors, 5xx) that mark an endpoint down
FIRST_PROBE = 0.5  # seconds until the first probe; doubles up to MAX_PROBE
MAX_PROBE = 15.0


class EndpointDownError(AgentError):
    """Raised instead of calling an endpoint that is down. The worker releases the job
    (no attempt spent) to come back after ``delay`` seconds, around the next probe."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def endpoint_wait(error: BaseException | None) -> float | None:
    """The worker's hook: seconds to hold a job back whose run raised ``error`` because an
    endpoint is down (None: any other outcome, handled as usual)."""
    return error.delay if isinstance(error, EndpointDownError) else None


@dataclass
class _State:
    endpoint: Endpoint
    failures: int = 0  # in a row
    since: float | None = None  # UNIX seconds it went down (None: up)
    started: float = 0.0  # monotonic, the same moment
    error: str = ""
    backoff: float = FIRST_PROBE
    next_probe: float = 0.0  # monotonic
    probing: bool = False
    batches: set[str] = field(default_factory=set)  # whose jobs wait for it


class EndpointHealth:
    """The health of every endpoint one worker calls (use in its event loop only)."""

    def __init__(self, worker: str, store: Store | None, *, down_after: int = DOWN_AFTER):
        self.worker = worker
        self.store = store
        self.down_after = down_after
        self._states: dict[str, _State] = {}
        self._checked: set[Endpoint] = set()

    def is_down(self, base_url: str) -> bool:
        state = self._states.get(base_url)
        return state is not None and state.since is not None

    # -- around each call ------------------------------------------------------------

    async def before_call(self, endpoint: Endpoint) -> None:
        """Return when ``endpoint`` may be called; raises EndpointDownError while it is
        down (this caller probes it first when a probe is due)."""
        state = self._states.get(endpoint.base_url)
        if state is None or state.since is None:
            return
        await self._note_batch(state)
        if state.probing or time.monotonic() < state.next_probe:
            raise self._wait(state)
        state.probing = True
        try:
            problem = await check_endpoint(state.endpoint)
        finally:
            state.probing = False
        if problem is None:
            await self._back(state)
            return
        state.error = problem
        state.backoff = min(state.backoff * 2, MAX_PROBE)
        state.next_probe = time.monotonic() + state.backoff
        log.debug("LLM endpoint %s still down: %s", endpoint.base_url, problem)
        await self._publish(state)
        raise self._wait(state)

    async def answered(self, endpoint: Endpoint) -> None:
        """A call got an answer (any HTTP status that is not an outage)."""
        state = self._states.get(endpoint.base_url)
        if state is None:
            return
        state.failures = 0
        if state.since is not None:
            await self._back(state)

    async def failed(self, endpoint: Endpoint, failure: Failure) -> None:
        """A call failed: raises EndpointDownError if its endpoint is (now) down."""
        if not failure.outage:
            if failure.status is not None:  # it answered
                await self.answered(endpoint)
            return
        state = self._states.setdefault(endpoint.base_url, _State(endpoint))
        if state.since is None:
            state.failures += 1
            if state.failures < self.down_after:
                return
            await self._down(
                state,
                failure.reason,
                f"LLM endpoint {endpoint.base_url} is down ({state.failures} calls in a row "
                f"failed, the last: {failure.reason}): its jobs wait, given back without "
                "spending an attempt, while it is probed",
            )
        else:
            await self._note_batch(state)
        raise self._wait(state)

    # -- when a worker starts on a batch ---------------------------------------------

    async def check(self, endpoints: list[Endpoint], batch_id: str) -> None:
        """Check the endpoints a batch uses that this worker has not checked yet; mark each
        that cannot be reached down at once (one log line each): its jobs wait."""
        fresh = [e for e in endpoints if e not in self._checked and not self.is_down(e.base_url)]
        self._checked.update(fresh)
        for endpoint, problem in await check_endpoints(fresh):
            state = self._states.setdefault(endpoint.base_url, _State(endpoint))
            state.batches.add(batch_id)
            state.failures = self.down_after
            await self._down(
                state,
                problem,
                f"LLM endpoint {endpoint.base_url} (agent {', '.join(endpoint.agents)}) "
                f"{problem}: batch {batch_id}'s jobs wait, given back without spending an "
                "attempt, while it is probed; point the flow elsewhere with the agent's "
                "base_url, or cancel the batch",
            )

    # -- state changes ----------------------------------------------------------------

    def _wait(self, state: _State) -> EndpointDownError:
        delay = max(state.next_probe - time.monotonic(), FIRST_PROBE)
        return EndpointDownError(
            f"LLM endpoint {state.endpoint.base_url} is down ({state.error}); "
            f"the job waits {delay:.1f}s",
            delay,
        )

    async def _down(self, state: _State, error: str, line: str) -> None:
        state.since = time.time()
        state.started = time.monotonic()
        state.error = error
        state.backoff = FIRST_PROBE
        state.next_probe = state.started + FIRST_PROBE
        log.warning("%s", line)
        await self._note_batch(state, publish=False)
        await self._publish(state)

    async def _back(self, state: _State) -> None:
        log.warning(
            "LLM endpoint %s is back, after %.1fs: its jobs run again",
            state.endpoint.base_url,
            time.monotonic() - state.started,
        )
        state.since = None
        state.failures = 0
        state.batches.clear()
        await self._store(
            lambda store: published.mark_up(store, self.worker, state.endpoint.base_url)
        )

    async def _note_batch(self, state: _State, *, publish: bool = True) -> None:
        """Count the running job's batch among those waiting for the endpoint."""
        try:
            batch_id = current_job().batch_id
        except LookupError:
            return
        if batch_id not in state.batches:
            state.batches.add(batch_id)
            if publish:
                await self._publish(state)

    async def _publish(self, state: _State) -> None:
        if state.since is None:
            return
        since, error, batches = state.since, state.error, list(state.batches)
        url = state.endpoint.base_url
        await self._store(
            lambda store: published.mark_down(store, self.worker, url, batches, since, error)
        )

    async def _store(self, change: Callable[[Store], None]) -> None:
        """Apply a change to the store; status shows less when the store is away."""
        store = self.store
        if store is None:
            return
        try:
            await anyio.to_thread.run_sync(change, store)
        except Exception as exc:  # the worker says so for its own use of the store
            log.debug("could not publish endpoint health: %s", exc)


_current: ContextVar[EndpointHealth | None] = ContextVar("buttermilk_endpoints", default=None)


def endpoint_health() -> EndpointHealth | None:
    """The health of the endpoints the running worker calls (None outside a worker)."""
    return _current.get()


def watch_endpoints(health: EndpointHealth) -> None:
    """Make ``health`` the running task's (and the tasks it starts from now on)."""
    _current.set(health)
