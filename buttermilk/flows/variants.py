"""A flow's axes applied: each combination's agents and parameters.

An axis named ``AGENT.OPTION`` (``judge.model``, or deeper: ``judge.sampling.temperature``)
sets an argument of the agent ``AGENT``; an axis with a plain name (``criteria``), or one
under ``parameters.``, sets a flow parameter, which prompts read as
``{{ parameters.criteria }}``.
"""

from __future__ import annotations

import inspect
from pkgutil import resolve_name
from typing import Any

from buttermilk.domain.variants import Axes, Combination
from buttermilk.errors import VariantError
from buttermilk.flows.models import AgentConfig, FlowConfig

PARAMETERS = "parameters."


def _agent_axis(name: str) -> tuple[str, list[str]] | None:
    """(agent, option path) of an agent option axis; None for a parameter axis."""
    if name.startswith(PARAMETERS) or "." not in name:
        return None
    agent, *path = name.split(".")
    return agent, path


def _parameter_path(name: str) -> list[str]:
    return name.removeprefix(PARAMETERS).split(".")


def check_axes_of(flow: FlowConfig, axes: Axes, where: str = "variants") -> None:
    """Refuse axes that name an agent the flow lacks, or an argument no agent takes.

    Raises VariantError (one line naming the axis and what exists). Whether the agent
    accepts each value is found by building each combination's agents
    (:func:`flow_for`, then :class:`buttermilk.flows.runner.FlowRunner`).
    """
    names = [agent.name for agent in flow.agents]
    for name in axes:
        found = _agent_axis(name)
        if found is None:
            continue
        agent, path = found
        if agent not in names:
            raise VariantError(
                f"{where}.{name}: flow {flow.name!r} has no agent {agent!r} (its agents: "
                f"{', '.join(names)}); a plain name (no dot) varies a flow parameter"
            )
        if path[0] in ("name", "_target_"):
            raise VariantError(
                f"{where}.{name}: an agent's {path[0]} cannot vary; vary its options"
            )
        config = next(a for a in flow.agents if a.name == agent)
        options = _options_of(config.target)
        if options is not None and path[0] not in options:
            raise VariantError(
                f"{where}.{name}: agent {agent!r} ({config.target}) has no option "
                f"{path[0]!r} (its options: {', '.join(options) or 'none'})"
            )


CALL_ARGUMENTS = 3  # a function agent is called with (record, outputs, parameters)


def _options_of(target: str) -> list[str] | None:
    """The keyword options ``target`` takes, or None when it cannot be told (it takes
    ``**kwargs``, or cannot be imported: building the flow then says why)."""
    try:
        found = resolve_name(target)
        signature = inspect.signature(found)
    except Exception:
        return None
    params = list(signature.parameters.values())
    if not isinstance(found, type):
        params = params[CALL_ARGUMENTS:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in keyword]


def _set(tree: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with ``value`` at ``path`` (nested dicts copied, never shared)."""
    copied = dict(tree)
    head, *rest = path
    if rest:
        inner = copied.get(head)
        copied[head] = _set(inner if isinstance(inner, dict) else {}, rest, value)
    else:
        copied[head] = value
    return copied


def flow_for(flow: FlowConfig, combination: Combination) -> FlowConfig:
    """The flow with the combination's values set: agent options in its agents, parameter
    axes in its parameters (over the flow's own)."""
    if not combination.values:
        return flow
    agents = {agent.name: agent.model_dump(by_alias=True) for agent in flow.agents}
    parameters = dict(flow.parameters)
    for name, value in combination.values.items():
        found = _agent_axis(name)
        if found is None:
            parameters = _set(parameters, _parameter_path(name), value)
        else:
            agent, path = found
            agents[agent] = _set(agents[agent], path, value)
    return flow.model_copy(
        update={
            "agents": [AgentConfig.model_validate(a) for a in agents.values()],
            "parameters": parameters,
        }
    )
