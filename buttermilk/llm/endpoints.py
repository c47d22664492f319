"""The LLM endpoints a flow uses, and whether each can be reached.

Every combination of a batch's axes counts: an axis may change an agent's model or its
``base_url``. An endpoint is checked with ``GET {base_url}/models``; a server that does
not serve that (404, 405, 501) is sent a one-token chat call instead. Checks are short
(:data:`CHECK_TIMEOUT`) and run concurrently, one per endpoint.

A check says in one line what is wrong and how to point the flow elsewhere; it never
shows a key (the key's environment variable is named instead).

:func:`probe_modes` is the check's probe of structured-output modes: for each model and
answer form an endpoint is asked for (:attr:`Endpoint.asks`), a one-token call in each
mode until one is taken (:func:`~buttermilk.llm.response_format.probe_mode`), remembered
in this process, so the calls of a batch that ``create`` works here (``batch.wait``), an
``estimate`` or a starting worker start in a mode the endpoint takes.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pkgutil import resolve_name
from typing import Any

import anyio

from buttermilk.domain.variants import Combination
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.variants import flow_for
from buttermilk.llm.clients import shared_clients
from buttermilk.llm.completion import COMPLETIONS
from buttermilk.llm.response_format import MODES, Formats, probe_mode, probe_request
from buttermilk.llm.retry import Failure

CHECK_TIMEOUT = 5.0  # seconds one check may take
NOT_SERVED = frozenset({404, 405, 501})  # GET /models is not there: try a one-token call
MODELS = "/models"


@dataclass(frozen=True)
class Ask:
    """How one agent asks an endpoint for answers: the model, its response modes and the
    extra request fields (what a probe of its structured-output mode sends)."""

    model: str
    formats: Formats
    extra: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible API root, as the agents that call it configure it."""

    base_url: str
    api_key_env: str | None
    model: str  # a model it is asked for (the one-token call needs one)
    agents: tuple[str, ...] = field(default=(), compare=False)
    asks: tuple[Ask, ...] = field(default=(), compare=False)  # distinct, first-use order


EndpointProbe = Callable[[Endpoint], Awaitable[None]]
"""A further per-endpoint check, run once an endpoint answered (e.g. which structured-output
mode it takes); it may raise or remember what it learnt."""


def _llm_agent(target: str, kwargs: dict[str, Any]) -> tuple[str, str | None, Ask] | None:
    """(base URL, key variable, how it asks) of an LLM agent; None for other agents."""
    from buttermilk.agents.llm import LLM  # which itself watches endpoints' health

    try:
        found = resolve_name(target)
    except Exception:  # building the flow says why
        return None
    if not (isinstance(found, type) and issubclass(found, LLM)):
        return None
    agent = found(**kwargs)
    config = agent.config
    extra = tuple(sorted(config.extra.items()))
    return config.base_url, config.api_key_env, Ask(config.model, agent.formats, extra)


def flow_endpoints(flow: FlowConfig, combinations: Iterable[Combination]) -> list[Endpoint]:
    """The endpoints the flow's LLM agents call under each combination, in first-use order
    (one per base URL and key variable; ``agents``: every agent name that calls it).

    Raises what building the agents raises (UsageError for a bad option).
    """
    found: dict[tuple[str, str | None], Endpoint] = {}
    for combination in combinations:
        for agent in flow_for(flow, combination).agents:
            llm = _llm_agent(agent.target, agent.kwargs)
            if llm is None:
                continue
            base_url, key_env, ask = llm
            key = (base_url, key_env)
            seen = found.get(key)
            if seen is None:
                found[key] = Endpoint(base_url, key_env, ask.model, (agent.name,), (ask,))
                continue
            agents = seen.agents if agent.name in seen.agents else (*seen.agents, agent.name)
            asks = seen.asks if ask in seen.asks else (*seen.asks, ask)
            found[key] = Endpoint(*key, seen.model, agents, asks)
    return list(found.values())


def _problem(endpoint: Endpoint, failure: Failure) -> str:
    if failure.status in (401, 403):
        variable = endpoint.api_key_env
        where = (
            f"the key in ${variable} ({'set' if os.environ.get(variable) else 'unset'})"
            if variable
            else "no key (the agent names none: set api_key_env)"
        )
        return f"refuses {where}: {failure.reason}"
    return f"cannot be reached: {failure.reason}"


async def check_endpoint(endpoint: Endpoint, seconds: float = CHECK_TIMEOUT) -> str | None:
    """None when the endpoint answers, else what is wrong (one line, without the hint).

    ``seconds``: how long each request may take. ``GET /models``; when that is not
    served, a one-token chat call of ``endpoint.model``.
    Any answer but a refused key (401, 403), a 5xx or no answer at all counts as reachable.
    """
    clients = shared_clients(endpoint.base_url, endpoint.api_key_env, seconds)
    answer = await clients.fetch(MODELS)
    if isinstance(answer, Failure) and answer.status in NOT_SERVED:
        body = {
            "model": endpoint.model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
        }
        answer = await clients.post(COMPLETIONS, body)
    if not isinstance(answer, Failure):
        return None
    if answer.status in (401, 403) or answer.status is None or answer.status >= 500:
        return _problem(endpoint, answer)
    return None  # it answered: what it said of this request is the calls' business


def describe(endpoint: Endpoint, problem: str) -> str:
    """One line naming the endpoint, its agents, what is wrong and how to point elsewhere."""
    agents = ", ".join(endpoint.agents)
    first = endpoint.agents[0] if endpoint.agents else "AGENT"
    return (
        f"LLM endpoint {endpoint.base_url} (agent {agents}) {problem}; point the flow "
        f"elsewhere with the agent's base_url (in the flow, or "
        f"'batch.variants={{{first}.base_url: [URL]}}'), or skip this check with "
        "batch.check_endpoints=false"
    )


async def check_endpoints(
    endpoints: Sequence[Endpoint],
    *,
    seconds: float = CHECK_TIMEOUT,
    probe: EndpointProbe | None = None,
) -> list[tuple[Endpoint, str]]:
    """Check every endpoint at once; returns those with a problem (in the given order).

    ``probe``, when given, runs for each endpoint that answered: the one place where a
    per-endpoint probe (such as the structured-output mode) plugs into the check.
    """
    problems: list[str | None] = [None] * len(endpoints)

    async def one(index: int, endpoint: Endpoint) -> None:
        problems[index] = await check_endpoint(endpoint, seconds)
        if problems[index] is None and probe is not None:
            await probe(endpoint)

    async with anyio.create_task_group() as tg:
        for index, endpoint in enumerate(endpoints):
            tg.start_soon(one, index, endpoint)
    return [(e, p) for e, p in zip(endpoints, problems, strict=True) if p is not None]


async def probe_modes(endpoint: Endpoint, seconds: float = CHECK_TIMEOUT) -> None:
    """Learn the structured-output mode of each of ``endpoint``'s asks not known yet: a
    one-token call per mode, best first, until one is taken (each refusal and the mode that
    answered are remembered in :data:`~buttermilk.llm.response_format.MODES`, for this
    process). ``seconds``: how long each call may take. A probe that fails otherwise (no
    answer, a 5xx naming nothing) teaches nothing, and the agent's first call probes again.
    Never raises for what the endpoint answers; the probe's few tokens are not billed to
    any batch.
    """
    clients = shared_clients(endpoint.base_url, endpoint.api_key_env, seconds)
    for ask in endpoint.asks:
        key = (endpoint.base_url, ask.model)
        if not ask.formats.negotiated or MODES.start(key, ask.formats)[1]:
            continue
        async with MODES.turn(key):  # an agent's own probe of it waits, then finds it known
            if MODES.start(key, ask.formats)[1]:
                continue
            request = probe_request(ask.model, ask.formats, dict(ask.extra))
            await probe_mode(
                lambda body: clients.post(COMPLETIONS, body), request, ask.formats, key
            )
