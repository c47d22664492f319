"""Jobs as stored: one (record, variant, repeat) of a batch."""

from __future__ import annotations

from typing import Any, NamedTuple

from pydantic import BaseModel, field_serializer

from buttermilk import values
from buttermilk.domain.statuses import JobStatus
from buttermilk.domain.variants import DEFAULT_KEY
from buttermilk.records import Record


class JobKey(NamedTuple):
    """What names a job within its batch: its record, combination (key) and repeat (0-based)."""

    record_id: str
    variant: str = DEFAULT_KEY
    repeat: int = 0

    def __str__(self) -> str:
        if self.variant == DEFAULT_KEY and self.repeat == 0:
            return repr(self.record_id)
        return f"{self.record_id!r} ({self.variant}, repeat {self.repeat})"


class JobInfo(BaseModel):
    """One job (one record x combination x repeat of a batch) as stored."""

    batch_id: str
    record_id: str
    variant: str = DEFAULT_KEY
    repeat: int = 0
    seq: int
    status: JobStatus
    attempts: int
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    record: Record | None = None
    cost: float | None = None
    """USD of its last run's calls (None: unknown, or no paid call)."""
    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def key(self) -> JobKey:
        return JobKey(self.record_id, self.variant, self.repeat)

    @field_serializer("result", when_used="json")
    def _exact_json(self, value: dict[str, Any] | None) -> Any:
        return values.json_ready(value)  # bytes and other tagged values (buttermilk.values)
