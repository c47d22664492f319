"""Typed shape of a flow config (``conf/flows/NAME.yaml``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.domain.variants import MAX_REPEATS, check_axes
from buttermilk.flows.source_models import (
    RECORD_FIELDS,
    DataSource,
    FileFormat,
    FileSource,
)
from buttermilk.values import refuse_non_finite

__all__ = [
    "RECORD_FIELDS",
    "AgentConfig",
    "DataSource",
    "FileFormat",
    "FileSource",
    "FlowConfig",
]


class AgentConfig(BaseModel):
    """One processing step: ``_target_`` names a callable, other keys are its arguments."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    name: str = Field(description="Key of this agent's output in the job result.")
    target: str = Field(alias="_target_", description="Import path of a class or function.")

    @model_validator(mode="after")
    def _finite_arguments(self) -> AgentConfig:
        for key, value in (self.model_extra or {}).items():
            refuse_non_finite(value, key)
        return self

    @property
    def kwargs(self) -> dict[str, Any]:
        """Arguments for the target, i.e. every key but ``name`` and ``_target_``."""
        return dict(self.model_extra or {})


class FlowConfig(BaseModel):
    """A named set of data sources plus an ordered list of agents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    data: dict[str, DataSource] = Field(default_factory=dict)
    agents: list[AgentConfig] = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Axes to compare: AGENT.OPTION or a parameter name -> list of values.",
    )
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS, strict=True)
    evaluate: EvaluationSpec | None = Field(
        default=None,
        description="What a report scores: the label (AGENT.KEY...) and the truth it is "
        "compared with (see buttermilk.domain.evaluation).",
    )

    @field_validator("variants", mode="before")
    @classmethod
    def _axes(cls, value: Any) -> Any:
        return check_axes(value)

    @field_validator("parameters")
    @classmethod
    def _finite_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        refuse_non_finite(value, "parameters")
        return value

    @model_validator(mode="after")
    def _unique_agent_names(self) -> FlowConfig:
        names = [agent.name for agent in self.agents]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"agent names must be unique in a flow; repeated: {duplicated}")
        if self.evaluate is not None and self.evaluate.agent not in names:
            raise ValueError(
                f"evaluate.label {self.evaluate.label!r}: the flow has no agent "
                f"{self.evaluate.agent!r} (its agents: {', '.join(names)})"
            )
        return self

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, stored with a batch so workers run exactly what was planned."""
        return self.model_dump(mode="json", by_alias=True)
