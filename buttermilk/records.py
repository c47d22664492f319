"""The unit of work a flow runs on: one record of a data source."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSONDict = dict[str, Any]


class Record(BaseModel):
    """One item of a dataset, as agents see it."""

    model_config = ConfigDict(frozen=True)

    record_id: str = Field(description="Unique within the batch's data sources.")
    content: Any = Field(default=None, description="The text (or other value) to process.")
    metadata: JSONDict = Field(default_factory=dict, description="Source fields not mapped.")
    uri: str | None = Field(default=None, description="Where the record came from, if known.")
    ground_truth: Any = Field(default=None, description="A known label, for evaluation.")
