"""Typed shape of a flow config (``conf/flows/NAME.yaml``)."""

from __future__ import annotations

import codecs
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.domain.variants import MAX_REPEATS, check_axes
from buttermilk.values import refuse_non_finite

FileFormat = Literal["jsonl", "json", "csv", "parquet"]
RECORD_FIELDS = ("record_id", "content", "uri", "ground_truth")


class FileSource(BaseModel):
    """Records read from local files: JSONL, JSON (array), CSV or Parquet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["file"] = "file"
    path: str = Field(description="A file path or a glob pattern (``data/*.jsonl``).")
    format: FileFormat | None = Field(
        default=None, description="File format; taken from the extension when not set."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Record field -> source field, e.g. {record_id: id, content: text}.",
    )
    id_prefix: str = Field(
        default="", description="Prepended to every record id, to keep ids of sources apart."
    )
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of JSONL, JSON and CSV files (a UTF-8 byte-order mark is "
        "dropped); e.g. cp1252 for files saved by older Windows programs.",
    )

    delimiter: str = Field(
        default=",", description="CSV only: the one character between fields (e.g. ';', '\\t')."
    )

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            info = None
        # Codecs such as base64, zlib and rot13 turn bytes into bytes (or text into text):
        # not a way to read a text file.
        if info is None or not getattr(info, "_is_text_encoding", True):
            raise ValueError(
                f"{'unknown' if info is None else 'not a text'} encoding {value!r}: use a "
                "Python text codec name such as utf-8, cp1252, latin-1 or utf-16"
            )
        return value

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1 or value in '"\r\n':
            raise ValueError(
                "a CSV delimiter is one character other than a quote or a line break, "
                "e.g. ',', ';', '\\t' or '|'"
            )
        return value

    @field_validator("columns")
    @classmethod
    def _known_record_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(RECORD_FIELDS))
        if unknown:
            allowed = ", ".join(RECORD_FIELDS)
            raise ValueError(f"unknown record field(s) {unknown}: columns may map {allowed}")
        return value


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
    data: dict[str, FileSource] = Field(default_factory=dict)
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
