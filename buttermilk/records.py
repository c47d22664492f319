"""The unit of work a flow runs on: one record of a data source."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from buttermilk import values

JSONDict = dict[str, Any]


class Record(BaseModel):
    """One item of a dataset, as agents see it.

    Values are the source's own: text, numbers, lists, objects, and where a source holds
    them, bytes, big integers, non-finite floats and decimals. In JSON (the API, messages)
    those are written as the tags of :mod:`buttermilk.values`.
    """

    model_config = ConfigDict(frozen=True)

    record_id: str = Field(description="Unique within the batch's data sources.")
    content: Any = Field(default=None, description="The text (or other value) to process.")
    metadata: JSONDict = Field(default_factory=dict, description="Source fields not mapped.")
    uri: str | None = Field(default=None, description="Where the record came from, if known.")
    ground_truth: Any = Field(default=None, description="A known label, for evaluation.")

    @field_serializer("content", "metadata", "ground_truth", when_used="json")
    def _exact_json(self, value: Any) -> Any:
        return values.json_ready(value)
