"""Which spec a report scores with, and whether its label names an agent of the flow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from buttermilk.domain import BatchInfo, BatchRequest
from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.errors import EvaluationError
from buttermilk.flows.models import FlowConfig


def _agent_names(flow: FlowConfig | dict[str, Any]) -> list[str]:
    if isinstance(flow, FlowConfig):
        return [agent.name for agent in flow.agents]
    agents = flow.get("agents") or []
    return [str(a.get("name")) for a in agents if isinstance(a, dict)]


def check_label_agent(spec: EvaluationSpec, flow: FlowConfig | dict[str, Any], option: str) -> None:
    """Raise EvaluationError (one line, naming the flow's agents) unless the label's first
    segment names an agent of ``flow`` (a FlowConfig or a batch's flow snapshot)."""
    names = _agent_names(flow)
    if spec.agent not in names:
        flow_name = flow.name if isinstance(flow, FlowConfig) else flow.get("name")
        raise EvaluationError(
            f"{option}.label={spec.label!r}: flow {flow_name!r} has no agent {spec.agent!r} "
            f"(its agents: {', '.join(names) or 'none'}); the label is AGENT.KEY[.KEY...]"
        )


def _declared(batch: BatchInfo) -> EvaluationSpec | None:
    """The batch's request's spec, else its flow snapshot's (None: neither declares one)."""
    if batch.request.evaluate is not None:
        return batch.request.evaluate
    raw = batch.flow_snapshot.get("evaluate")
    if raw is None:
        return None
    try:
        return EvaluationSpec.model_validate(raw)
    except ValidationError as exc:
        raise EvaluationError(
            f"batch {batch.id}: its flow's evaluate cannot be used ({exc.errors()[0]['msg']}); "
            "give one with batch.evaluate={label: AGENT.KEY}"
        ) from None


def _spec_text(spec: EvaluationSpec | None) -> str:
    """``label=judge.label, truth=ground_truth, kind=nominal``: the fields set."""
    if spec is None:
        return "none"
    fields = spec.model_dump(exclude_defaults=True)
    fields.setdefault("kind", spec.kind)
    return ", ".join(f"{name}={value}" for name, value in fields.items())


def check_request_evaluate(request: BatchRequest, flow: FlowConfig) -> None:
    """The check create (and estimate) make of a request's ``evaluate``: its label names
    an agent of ``flow``. Raises EvaluationError."""
    if request.evaluate is not None:
        check_label_agent(request.evaluate, flow, "evaluate")


def spec_for(batches: Sequence[BatchInfo], explicit: EvaluationSpec | None) -> EvaluationSpec:
    """The spec a report over ``batches`` uses: ``explicit`` > each batch's request's
    ``evaluate`` > its flow snapshot's. Raises EvaluationError when none declares one,
    when the batches declare different ones (and none is given), or when the label names
    no agent of a batch's flow."""
    if explicit is not None:
        chosen = explicit
    else:
        declared = [(batch, _declared(batch)) for batch in batches]
        for batch, spec in declared:
            if spec is None:
                raise EvaluationError(
                    f"batch {batch.id} declares nothing to score: set "
                    "batch.evaluate={label: AGENT.KEY}"
                )
        specs = [spec for _, spec in declared if spec is not None]
        if any(spec != specs[0] for spec in specs):
            raise EvaluationError(
                "the batches declare different evaluate specs ("
                + "; ".join(f"batch {batch.id}: {_spec_text(spec)}" for batch, spec in declared)
                + "): give one with batch.evaluate={label: AGENT.KEY}"
            )
        chosen = specs[0]
    for batch in batches:
        check_label_agent(chosen, batch.flow_snapshot, "evaluate")
    return chosen
