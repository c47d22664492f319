"""The LLM endpoints a flow uses, and whether each can be reached.

Every combination of a batch's axes counts: an axis may change an agent's model or its
``base_url``. An endpoint is checked with ``GET {base_url}/models``, which no provider
bills: a check never sends a chat call, so every call an endpoint is paid for belongs to
a batch's job and is on its bill. A server that does not serve that route (404, 405, 501)
has answered, so it is reachable; its key is then tried by the first call. Checks are
short (:data:`CHECK_TIMEOUT`) and run concurrently, one per endpoint.

A check says in one line what is wrong and how to point the flow elsewhere; it never
shows a key (the key's environment variable is named instead). Which structured-output
mode an endpoint takes is found by the batch's first call to it
(:func:`~buttermilk.llm.response_format.negotiate`), not by the check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pkgutil import resolve_name
from typing import Any

import anyio

from buttermilk.domain.variants import Combination
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.variants import flow_for
from buttermilk.llm.clients import shared_clients
from buttermilk.llm.retry import Failure

CHECK_TIMEOUT = 5.0  # seconds one check may take
MODELS = "/models"
NOT_SERVED = frozenset({404, 405, 501})  # no GET /models there: the server still answered


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible API root, as the agents that call it configure it."""

    base_url: str
    api_key_env: str | None
    model: str  # the first model it is asked for
    agents: tuple[str, ...] = field(default=(), compare=False)


def _llm_agent(target: str, kwargs: dict[str, Any]) -> tuple[str, str | None, str] | None:
    """(base URL, key variable, model) of an LLM agent; None for other agents."""
    from buttermilk.agents.llm import LLM  # which itself watches endpoints' health

    try:
        found = resolve_name(target)
    except Exception:  # building the flow says why
        return None
    if not (isinstance(found, type) and issubclass(found, LLM)):
        return None
    config = found(**kwargs).config
    return config.base_url, config.api_key_env, config.model


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
            base_url, key_env, model = llm
            key = (base_url, key_env)
            seen = found.get(key)
            if seen is None:
                found[key] = Endpoint(base_url, key_env, model, (agent.name,))
            elif agent.name not in seen.agents:
                found[key] = Endpoint(*key, seen.model, (*seen.agents, agent.name))
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

    ``seconds``: how long the request may take. ``GET /models``: any answer but a refused
    key (401, 403), a 5xx or no answer at all counts as reachable (404, 405 and 501 too: a
    server without that route has answered).
    """
    clients = shared_clients(endpoint.base_url, endpoint.api_key_env, seconds)
    answer = await clients.fetch(MODELS)
    if not isinstance(answer, Failure):
        return None
    if answer.status in NOT_SERVED:
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
    endpoints: Sequence[Endpoint], *, seconds: float = CHECK_TIMEOUT
) -> list[tuple[Endpoint, str]]:
    """Check every endpoint at once; returns those with a problem (in the given order)."""
    problems: list[str | None] = [None] * len(endpoints)

    async def one(index: int, endpoint: Endpoint) -> None:
        problems[index] = await check_endpoint(endpoint, seconds)

    async with anyio.create_task_group() as tg:
        for index, endpoint in enumerate(endpoints):
            tg.start_soon(one, index, endpoint)
    return [(e, p) for e, p in zip(endpoints, problems, strict=True) if p is not None]
