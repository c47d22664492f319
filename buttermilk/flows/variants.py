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

from pydantic import TypeAdapter, ValidationError

from buttermilk.domain.variants import PARAMETERS, Axes, Combination
from buttermilk.errors import VariantError
from buttermilk.flows.models import AgentConfig, FlowConfig


def _agent_axis(name: str) -> tuple[str, list[str]] | None:
    """(agent, option path) of an agent option axis; None for a parameter axis."""
    if name.startswith(PARAMETERS) or "." not in name:
        return None
    agent, *path = name.split(".")
    return agent, path


def _parameter_path(name: str) -> list[str]:
    return name.removeprefix(PARAMETERS).split(".")


def _target(name: str) -> tuple[str, ...]:
    """What an axis sets: ("agent", AGENT, *option path) or ("parameters", *path)."""
    found = _agent_axis(name)
    if found is None:
        return ("parameters", *_parameter_path(name))
    return ("agent", found[0], *found[1])


def check_axes_of(flow: FlowConfig, axes: Axes, where: str = "variants") -> None:
    """Refuse axes that name an agent the flow lacks, an option its agent does not take, a
    value of another type than the option declares, or one axis inside another
    (``judge.sampling`` and ``judge.sampling.temperature``).

    Raises VariantError (one line naming the axis and what exists). Values of options whose
    type cannot be told are checked by building each combination's agents
    (:func:`flow_for`, then :class:`buttermilk.flows.runner.FlowRunner`).
    """
    targets = {name: _target(name) for name in axes}
    for name, target in targets.items():
        for other, inner in targets.items():
            if other != name and inner[: len(target)] == target:
                raise VariantError(
                    f"{where}: the axis {other!r} sets part of what the axis {name!r} sets: "
                    "vary one of them"
                )
    names = [agent.name for agent in flow.agents]
    for name, values in axes.items():
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
        if options is None:
            continue
        if path[0] not in options:
            raise VariantError(
                f"{where}.{name}: agent {agent!r} ({config.target}) has no option "
                f"{path[0]!r} (its options: {', '.join(options) or 'none'})"
            )
        if len(path) == 1:
            _check_values(f"{where}.{name}", options[path[0]], values)


def _check_values(where: str, annotation: Any, values: list[Any]) -> None:
    """Refuse a value the option's declared type does not take (strictly: no text for a
    number); an option without a declared type, or one pydantic cannot check, takes any."""
    if annotation is inspect.Parameter.empty:
        return
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    except Exception:  # a type pydantic has no schema for: building the agent checks it
        return
    for value in values:
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError:
            shown = getattr(annotation, "__name__", None) or str(annotation)
            raise VariantError(
                f"{where}: {value!r} ({type(value).__name__}) is not a {shown}, the type the "
                "option takes"
            ) from None


CALL_ARGUMENTS = 3  # a function agent is called with (record, outputs, parameters)


def _options_of(target: str) -> dict[str, Any] | None:
    """The keyword options ``target`` takes, with their declared types
    (``inspect.Parameter.empty`` when undeclared), or None when it cannot be told (it takes
    ``**kwargs``, or cannot be imported: building the flow then says why)."""
    try:
        found = resolve_name(target)
        signature = inspect.signature(found, eval_str=True)
    except Exception:
        return None
    params = list(signature.parameters.values())
    if not isinstance(found, type):
        params = params[CALL_ARGUMENTS:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.annotation for p in params if p.kind in keyword}


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
