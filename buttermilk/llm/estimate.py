"""What a batch would send to its flow's LLM agents, worked out without calling them.

The records are planned exactly as ``create`` plans them (same sources, shuffle,
max_records and seed), and each LLM agent's prompts are rendered for every planned
record, their tokens estimated by :func:`~buttermilk.llm.usage.count_tokens`. Nothing is
called, stored or published.

Earlier agents' outputs are unknown before the batch runs, so prompts are rendered with
no outputs: a template that needs one (or a metadata key a record lacks) fails for that
record, which counts as *unrenderable* and is reported with the first such problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pkgutil import resolve_name
from typing import Any

from buttermilk.agents.llm import LLM
from buttermilk.batch.planner import plan_records
from buttermilk.domain import BatchRequest
from buttermilk.errors import DataSourceError
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner, merge_parameters
from buttermilk.flows.sources import check_sources
from buttermilk.llm.prompts import PromptError
from buttermilk.llm.usage import CHARS_PER_TOKEN, Price, count_tokens
from buttermilk.records import Record

PER_MILLION = 1_000_000
NOTES = (
    "Prompts are rendered without earlier agents' outputs, which are not known before "
    "the batch runs.",
    f"Tokens are estimated at about {CHARS_PER_TOKEN} characters each; servers count their own.",
    "One call per record: retries of failed or invalid answers are not included.",
)


@dataclass
class AgentEstimate:
    """One LLM agent's share of the batch."""

    agent: str
    model: str
    price: Price | None
    max_tokens: int | None
    calls: int = 0
    input_tokens: int = 0
    unrenderable: int = 0
    problem: str | None = None  # the first reason a prompt could not be rendered

    @property
    def input_cost(self) -> float | None:
        if self.price is None:
            return None
        return self.input_tokens * self.price.input / PER_MILLION

    @property
    def max_output_tokens(self) -> int | None:
        """The most answer tokens the calls may take (``max_tokens`` per call)."""
        return None if self.max_tokens is None else self.calls * self.max_tokens

    @property
    def max_cost(self) -> float | None:
        """Input cost plus the most the answers may cost (needs a price and max_tokens)."""
        if self.price is None or self.max_output_tokens is None:
            return None
        spent = self.input_tokens * self.price.input
        spent += self.max_output_tokens * self.price.output
        return spent / PER_MILLION

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "model": self.model,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "price": self.price.model_dump() if self.price else None,
            "input_cost": self.input_cost,
            "max_output_tokens": self.max_output_tokens,
            "max_cost": self.max_cost,
            "unrenderable": self.unrenderable,
            "problem": self.problem,
        }


def _sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


@dataclass
class Estimate:
    """What a batch of ``records`` records would send to each LLM agent of ``flow``."""

    flow: str
    records: int
    seed: int
    shuffle: bool
    max_records: int | None
    agents: list[AgentEstimate] = field(default_factory=list)
    other_agents: list[str] = field(default_factory=list)  # not LLM agents: no estimate

    @property
    def unpriced(self) -> list[str]:
        return [a.agent for a in self.agents if a.price is None]

    def total(self) -> dict[str, Any]:
        """Sums over the agents; costs count the agents with a price only."""
        return {
            "calls": sum(a.calls for a in self.agents),
            "input_tokens": sum(a.input_tokens for a in self.agents),
            "input_cost": _sum([a.input_cost for a in self.agents]),
            "max_output_tokens": sum(a.max_output_tokens or 0 for a in self.agents),
            "max_cost": _sum([a.max_cost for a in self.agents])
            if all(a.max_cost is not None for a in self.agents)
            else None,
            "unrenderable": sum(a.unrenderable for a in self.agents),
        }

    def notes(self) -> list[str]:
        found = list(NOTES)
        if self.unpriced:
            found.append(
                f"No price for agent(s) {', '.join(self.unpriced)}: set price or prices "
                "(conf/llm_prices.yaml) to see their cost."
            )
        if any(a.max_tokens is None for a in self.agents):
            found.append("Answer tokens are bounded only where max_tokens is set.")
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "records": self.records,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "max_records": self.max_records,
            "agents": [a.as_json() for a in self.agents],
            "other_agents": self.other_agents,
            "total": self.total(),
            "notes": self.notes(),
        }


def _llm_agent(target: str, options: Mapping[str, Any]) -> LLM | None:
    found = resolve_name(target)
    if isinstance(found, type) and issubclass(found, LLM):
        return found(**options)
    return None


def estimate_agent(
    name: str, agent: LLM, records: Sequence[Record], parameters: Mapping[str, Any]
) -> AgentEstimate:
    """Render ``agent``'s prompts for every record (with no earlier outputs)."""
    found = AgentEstimate(
        agent=name,
        model=agent.config.model,
        price=agent.price_of(),
        max_tokens=agent.config.max_tokens,
    )
    for record in records:
        try:
            messages = agent.render_messages(record, {}, parameters)
        except PromptError as exc:
            found.unrenderable += 1
            found.problem = found.problem or str(exc)
            continue
        found.calls += 1
        found.input_tokens += count_tokens(messages)
    return found


def estimate_batch(flows: FlowCatalog, request: BatchRequest) -> Estimate:
    """Plan ``request`` as create would and estimate its LLM calls (blocking: run it in a
    thread). Raises what create raises for an unusable flow or data."""
    flow: FlowConfig = flows.get(request.flow)
    check_sources(flow)
    FlowRunner(flow)  # every agent can be set up, as create checks
    plan = plan_records(
        flow, shuffle=request.shuffle, max_records=request.max_records, seed=request.seed
    )
    if not plan.records:
        raise DataSourceError(f"flow {flow.name!r}: its data sources hold no records")
    parameters = merge_parameters(flow.parameters, request.parameters)
    found = Estimate(
        flow=flow.name,
        records=len(plan.records),
        seed=plan.seed,
        shuffle=request.shuffle,
        max_records=request.max_records,
    )
    for config in flow.agents:
        agent = _llm_agent(config.target, config.kwargs)
        if agent is None:
            found.other_agents.append(config.name)
        else:
            found.agents.append(estimate_agent(config.name, agent, plan.records, parameters))
    return found
