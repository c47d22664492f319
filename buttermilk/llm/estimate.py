"""What a batch would send to its flow's LLM agents, worked out without calling them.

The records are planned exactly as ``create`` plans them (same sources, shuffle,
max_records and seed), and so is the grid: every combination of the batch's axes runs
``repeats`` times on every record. Each combination's flow is the flow with its values set
(:func:`~buttermilk.flows.variants.flow_for`), so an axis may change an agent's model (and
so its price) or a parameter its prompts read; each LLM agent's prompts are rendered for
every planned record under each combination, their tokens estimated by
:func:`~buttermilk.llm.usage.count_tokens` (and their images' by
:func:`~buttermilk.llm.image_tokens.count_images`, or reported as not counted, and why),
and counted once per repeat. Nothing is
called, stored or published.

Earlier agents' outputs are unknown before the batch runs, so prompts are rendered with
no outputs: a template that needs one (or a metadata key a record lacks) fails for that
record, which counts as *unrenderable* and is reported with the first such problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pkgutil import resolve_name
from typing import TYPE_CHECKING, Any

from buttermilk.agents.llm import ANSWER_TOKENS_GUESS, LLM
from buttermilk.batch.grid import plan_batch
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.flows.models import AgentConfig, FlowConfig
from buttermilk.flows.runner import merge_parameters
from buttermilk.flows.variants import flow_for
from buttermilk.llm.estimate_rows import AgentEstimate, CombinationEstimate, Estimate
from buttermilk.llm.image_tokens import count_images
from buttermilk.llm.prompts import PromptError
from buttermilk.llm.schema import PROBLEM_CHARS, feedback
from buttermilk.llm.usage import TOKENS_PER_MESSAGE, count_text, count_tokens
from buttermilk.records import Record

if TYPE_CHECKING:
    from buttermilk.store.store import Store

__all__ = ["AgentEstimate", "CombinationEstimate", "Estimate", "estimate_agent", "estimate_batch"]


def _llm_class(target: str) -> type[LLM] | None:
    found = resolve_name(target)
    return found if isinstance(found, type) and issubclass(found, LLM) else None


def retry_tokens(agent: LLM) -> int:
    """The most prompt tokens a schema retry adds to the record's first prompt, about:
    with ``schema_feedback``, the unusable answer (``max_tokens``, else
    :data:`~buttermilk.agents.llm.ANSWER_TOKENS_GUESS`) and what was wrong with it."""
    if not agent.config.schema_feedback:
        return 0
    answer = agent.config.max_tokens or ANSWER_TOKENS_GUESS
    return 2 * TOKENS_PER_MESSAGE + answer + count_text(feedback("x" * PROBLEM_CHARS))


def estimate_agent(
    name: str, agent: LLM, records: Sequence[Record], parameters: Mapping[str, Any]
) -> AgentEstimate:
    """Render ``agent``'s prompts for every record (with no earlier outputs). An agent
    whose answers may not fit (a schema, or JSON mode) may ask ``schema_retries`` more
    times per record: each retry sends the first prompt and :func:`retry_tokens`."""
    checked = agent.schema is not None or agent.json_mode
    retries = agent.config.schema_retries if checked else 0
    found = AgentEstimate(
        agent=name,
        model=agent.config.model,
        price=agent.price_of(),
        max_tokens=agent.config.max_tokens,
        tries=retries + 1,
    )
    extra = retry_tokens(agent)
    for record in records:
        try:
            messages = agent.render_messages(record, {}, parameters)
        except PromptError as exc:
            found.unrenderable += 1
            found.problem = found.problem or str(exc)
            continue
        found.calls += 1
        images = count_images(messages, agent.config.model)
        found.add_images(images)
        prompt = count_tokens(messages) + images.tokens
        found.input_tokens += prompt
        found.retry_input_tokens += retries * (prompt + extra)
    return found


class _Rendered:
    """Estimates of an agent per (its options, the parameters): a combination that changes
    neither (an axis of another agent) reuses what an earlier one rendered."""

    def __init__(self, records: Sequence[Record]) -> None:
        self.records = records
        self._done: dict[str, AgentEstimate] = {}

    def of(self, config: AgentConfig, parameters: Mapping[str, Any]) -> AgentEstimate:
        key = json.dumps([config.target, config.kwargs, parameters], sort_keys=True, default=repr)
        found = self._done.get(key)
        if found is None:
            cls = _llm_class(config.target)
            assert cls is not None  # only LLM agents are estimated
            found = estimate_agent(config.name, cls(**config.kwargs), self.records, parameters)
            self._done[key] = found
        return found


def estimate_batch(
    flows: FlowCatalog, request: BatchRequest, store: Store | None = None
) -> Estimate:
    """Plan ``request`` as create would (records and grid) and estimate its LLM calls per
    combination (blocking: run it in a thread). Raises what create raises for an unusable
    flow, axes or data. ``store``: where ``type: batch`` sources read earlier batches."""
    flow: FlowConfig = flows.get(request.flow)
    grid, plan = plan_batch(flow, request, store)  # as create plans it
    found = Estimate(
        flow=flow.name,
        records=len(plan.records),
        seed=plan.seed,
        shuffle=request.shuffle,
        max_records=request.max_records,
        variants=grid.axes,
        repeats=grid.repeats,
        other_agents=[c.name for c in flow.agents if _llm_class(c.target) is None],
    )
    rendered = _Rendered(plan.records)
    for combination in grid.combinations:
        varied = flow_for(flow, combination)
        parameters = merge_parameters(varied.parameters, request.parameters)
        agents = [
            rendered.of(config, parameters).repeated(grid.repeats)
            for config in varied.agents
            if _llm_class(config.target) is not None
        ]
        found.combinations.append(CombinationEstimate(combination.key, combination.values, agents))
    return found
