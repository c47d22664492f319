"""Run a flow's agents, in order, over one record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
from pydantic import BaseModel

from buttermilk.errors import PermanentError
from buttermilk.flows.agents import Agent, build_agent
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


def _json_ready(name: str, value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
    except TypeError as exc:
        raise PermanentError(
            f"agent {name!r} returned a value that is not JSON-serialisable: {exc}"
        ) from None


class FlowRunner:
    """A flow's agents, built once and run for each record."""

    def __init__(self, flow: FlowConfig) -> None:
        self.flow = flow
        self.agents: list[Agent] = [build_agent(cfg) for cfg in flow.agents]

    async def run(self, record: Record, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """Call every agent; returns ``{"outputs": {name: output}, "timings": {name: s}}``."""
        outputs: dict[str, Any] = {}
        timings: dict[str, float] = {}
        view = MappingProxyType(outputs)
        params = MappingProxyType(dict(parameters))
        for agent in self.agents:
            started = time.perf_counter()
            value = await agent.call(record, view, params)
            timings[agent.name] = round(time.perf_counter() - started, 6)
            outputs[agent.name] = _json_ready(agent.name, value)
        return {"outputs": outputs, "timings": timings}
