"""Run a flow's agents, in order, over one record.

A run's result holds each agent's output and timing and, when any agent reports what it
spent (an LLM agent's ``cost`` and ``usage``), a ``usage`` summary of the run: the store
keeps it per job and adds it up per batch. A run that fails may have spent too: an agent
says what with :func:`mark_spent` on its error, and the run's error then carries the
summary of everything spent so far (:func:`spent_by`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

from buttermilk import values
from buttermilk.errors import PermanentError
from buttermilk.flows.agents import Agent, build_agent
from buttermilk.flows.meter import DETAIL_KEYS, TOKEN_KEYS, summary
from buttermilk.flows.models import FlowConfig
from buttermilk.records import Record


def merge_parameters(flow: Mapping[str, Any], batch: Mapping[str, Any]) -> dict[str, Any]:
    """The flow's default parameters with the batch's on top (nested dicts merged)."""
    merged = dict(flow)
    for key, value in batch.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_parameters(merged[key], value)
        else:
            merged[key] = value
    return merged


def _exact(name: str, value: Any, path: str, depth: int = 0) -> Any:
    """``value`` with its non-finite floats made :class:`~buttermilk.values.NonFiniteFloat`
    (orjson would write them as null); PermanentError for an object key that is not text
    (JSON would turn ``1`` into ``"1"``, and ``1`` and ``"1"`` into one key)."""
    if depth > values.JSON_DEPTH:
        return value  # values.dumps refuses it as too deep
    if isinstance(value, float):
        if math.isfinite(value) or isinstance(value, values.NonFiniteFloat):
            return value
        return values.NonFiniteFloat(value)
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                where = f"in {path}" if path else "at its top level"
                raise PermanentError(
                    f"agent {name!r} returned an object key {key!r} ({type(key).__name__}) "
                    f'{where}; JSON keeps only text keys (1 and "1" would become one): '
                    "make the keys text or return a list of pairs"
                )
        return {k: _exact(name, v, f"{path}[{k!r}]", depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(name, v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    return value


def _json_ready(name: str, value: Any) -> Any:
    """An agent's output as the store will hold it, exactly: a pydantic model as its
    fields, and everything JSON cannot hold as the tags of :mod:`buttermilk.values`.
    PermanentError when it cannot be kept exactly."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="python")  # mode="json" makes decimals, bytes text
    value = _exact(name, value, "")
    try:
        return values.loads(values.dumps(value))
    except (TypeError, ValueError) as exc:
        raise PermanentError(
            f"agent {name!r} returned a value that is not JSON-serialisable: {exc}"
        ) from None


SPENT = "buttermilk_spent"  # on an agent's error: what that agent spent (output-shaped)
RUN_USAGE = "buttermilk_usage"  # on a run's error: the usage summary of the run so far


def mark_spent(error: BaseException, spent: Mapping[str, Any]) -> None:
    """Say what an agent spent before it raised ``error``: ``cost`` and ``usage``, shaped
    like its output would have been."""
    setattr(error, SPENT, dict(spent))


def spent_by(error: BaseException) -> dict[str, Any] | None:
    """The usage summary of a run that raised ``error`` (None when it spent nothing known)."""
    found = getattr(error, RUN_USAGE, None)
    return dict(found) if isinstance(found, Mapping) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def usage_summary(outputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a run spent: ``cost`` (USD: the sum of the outputs' numeric ``cost``, None when
    none has one), ``input_tokens`` and ``output_tokens`` (the sums of the outputs'
    ``usage``; an answer from a cache spent none), the details (cached prompt and reasoning
    tokens, schema retry calls and their tokens) when some were reported, and
    ``schema_retry_cost`` (the sum of the outputs' ``schema_retry_cost``; see
    :func:`buttermilk.flows.meter.summary`). None when no output reports either."""
    cost: float | None = None
    retry_cost: float | None = None
    tokens = dict.fromkeys((*TOKEN_KEYS, *DETAIL_KEYS), 0)
    reported = False
    for output in outputs.values():
        if not isinstance(output, Mapping):
            continue
        spent = _number(output.get("cost"))
        if spent is not None:
            cost = (cost or 0.0) + spent
            reported = True
        usage = output.get("usage")
        if isinstance(usage, Mapping):
            reported = True
            if output.get("cached") is True:
                continue
            for key in tokens:
                tokens[key] += int(_number(usage.get(key)) or 0)
            retried = _number(output.get("schema_retry_cost"))
            if retried is not None:
                retry_cost = (retry_cost or 0.0) + retried
    if not reported:
        return None
    return summary(cost, tokens, retry_cost)


class FlowRunner:
    """A flow's agents, built once and run for each record."""

    def __init__(self, flow: FlowConfig) -> None:
        self.flow = flow
        self.agents: list[Agent] = [build_agent(cfg) for cfg in flow.agents]

    async def run(self, record: Record, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Call every agent; returns ``{"outputs": {name: output}, "timings": {name: s}}``,
        plus ``"usage"`` (see :func:`usage_summary`) when an agent reports what it spent."""
        outputs: dict[str, Any] = {}
        timings: dict[str, float] = {}
        view = MappingProxyType(outputs)
        params = MappingProxyType(dict(parameters))
        for agent in self.agents:
            started = time.perf_counter()
            try:
                value = await agent.call(record, view, params)
            except Exception as exc:
                failed = getattr(exc, SPENT, None)
                spent = {**outputs, agent.name: failed} if failed else outputs
                usage = usage_summary(spent)
                if usage is not None:
                    setattr(exc, RUN_USAGE, usage)
                raise
            timings[agent.name] = round(time.perf_counter() - started, 6)
            outputs[agent.name] = _json_ready(agent.name, value)
        result: dict[str, Any] = {"outputs": outputs, "timings": timings}
        usage = usage_summary(outputs)
        if usage is not None:
            result["usage"] = usage
        return result
