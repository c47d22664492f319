"""Typed batch requests and the batch / job views the store returns."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from buttermilk import values
from buttermilk.flows.models import refuse_non_finite
from buttermilk.option_types import Count, Int64, NotABool
from buttermilk.records import Record


class BatchStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self in ENDED_BATCH


ENDED_BATCH = frozenset({BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED})


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ErrorPolicy = Literal["continue", "stop"]
TARGET_KEY = "_target_"
MAX_RETRY_DELAY = 300.0
"""Seconds: the longest pause before a retry (backoff doubles up to this)."""
MAX_JOB_TIMEOUT = 7 * 24 * 3600.0
"""Seconds: the longest ``job_timeout`` (a week; null means no limit at all)."""

RetryDelay = Annotated[float, Field(ge=0, le=MAX_RETRY_DELAY, allow_inf_nan=False), NotABool]
JobTimeout = Annotated[float, Field(gt=0, le=MAX_JOB_TIMEOUT, allow_inf_nan=False), NotABool]
Usd = Annotated[float, Field(gt=0, allow_inf_nan=False), NotABool]


def find_target_key(value: Any, path: str) -> str | None:
    """The dotted path of the first ``_target_`` key inside ``value``, if any."""
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}"
            if key == TARGET_KEY:
                return here
            found = find_target_key(item, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = find_target_key(item, f"{path}[{index}]")
            if found:
                return found
    return None


class BatchRequest(BaseModel):
    """Everything a user chooses when creating a batch (CLI ``batch.*`` or API body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: str = Field(min_length=1, description="Name of the flow to run.")
    shuffle: bool = Field(default=True, description="Shuffle record ids before truncating.")
    max_records: Count | None = Field(
        default=None, description="Run at most this many records (null: all)."
    )
    concurrency: Count = Field(default=5, description="Most jobs of this batch at once per worker.")
    error_policy: ErrorPolicy = Field(
        default="continue", description="continue: other jobs go on; stop: end the batch."
    )
    interactive: bool = Field(default=False, description="Jobs need a person at a console.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Passed to every flow run, over the flow's own."
    )
    max_attempts: Count = Field(default=3, description="Tries per job before it fails.")
    retry_delay: RetryDelay = Field(
        default=1.0,
        description="Seconds before the first retry; doubles each time, up to 300.",
    )
    job_timeout: JobTimeout | None = Field(
        default=None,
        description="Seconds a job may run before it fails, up to a week (null: no limit).",
    )
    seed: Int64 | None = Field(default=None, description="Shuffle seed, for a repeatable order.")
    max_cost: Usd | None = Field(
        default=None,
        description="USD: once the batch's LLM spending passes this, it stops as failed "
        "(null: no cap).",
    )

    @field_validator("parameters", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("parameters")
    @classmethod
    def _no_code_in_parameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        found = find_target_key(value, "parameters")
        if found:
            raise ValueError(
                f"{TARGET_KEY} is not allowed in parameters (found at {found}): "
                "batch parameters are data and may not name code to instantiate"
            )
        refuse_non_finite(value, "parameters")
        return value

    @classmethod
    def from_stored(cls, raw: Any, flow: str) -> tuple[BatchRequest, str | None]:
        """The request stored with a batch of ``flow``, and what is wrong with it (None: nothing).

        Never raises: a row written by an older or faulty version may hold values this
        version refuses (``"retry_delay": null``). Those fields read as their defaults, so
        that the batch still lists and shows, and the problem names them; no worker may run
        such a batch as if it were what its creator asked for.
        """
        try:
            return cls.model_validate(raw), None
        except ValidationError as exc:
            errors = exc.errors()
        problem = "its stored request cannot be used: " + "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'request'}="
            f"{error.get('input')!r} ({error['msg'][:1].lower()}{error['msg'][1:]})"
            for error in errors
        )
        bad = {str(error["loc"][0]) for error in errors if error["loc"]}
        given = raw if isinstance(raw, dict) else {}
        kept = {k: v for k, v in given.items() if k in cls.model_fields and k not in bad}
        try:
            return cls.model_validate({**kept, "flow": flow}), problem
        except ValidationError:  # e.g. an empty flow name: defaults for everything
            return cls.model_construct(flow=flow), problem


class BatchInfo(BaseModel):
    """A batch as stored."""

    id: str
    flow: str
    status: BatchStatus
    request: BatchRequest
    flow_snapshot: dict[str, Any]
    total: int
    seed: int
    published: bool
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    cost: float | None = None
    """USD spent by its jobs so far (None until a call with a known price)."""
    input_tokens: int = 0
    output_tokens: int = 0
    request_error: str | None = None
    """Why the stored request cannot be used (its fields then read as defaults); workers
    fail the batch's jobs with it instead of running them. None for a sound batch."""
    stored_request: dict[str, Any] | None = None
    """The request exactly as stored, when it cannot be used (else None: see ``request``)."""

    @property
    def interactive(self) -> bool:
        return self.request.interactive


class JobInfo(BaseModel):
    """One job (one record of a batch) as stored."""

    batch_id: str
    record_id: str
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

    @field_serializer("result", when_used="json")
    def _exact_json(self, value: dict[str, Any] | None) -> Any:
        return values.json_ready(value)  # bytes and other tagged values (buttermilk.values)


class ErrorCount(BaseModel):
    error_type: str
    error_message: str
    count: int


class BatchSummary(BaseModel):
    """A batch with its live counts, for ``status`` and ``list``."""

    batch: BatchInfo
    counts: dict[JobStatus, int]
    common_errors: list[ErrorCount] = Field(default_factory=list)
    now: float

    @property
    def done(self) -> int:
        c = self.counts
        return (
            c.get(JobStatus.COMPLETED, 0)
            + c.get(JobStatus.FAILED, 0)
            + c.get(JobStatus.CANCELLED, 0)
        )

    @property
    def progress(self) -> float:
        """Share of jobs that have ended, 0..1."""
        return self.done / self.batch.total if self.batch.total else 1.0

    @property
    def elapsed(self) -> float | None:
        start = self.batch.started_at
        if start is None:
            return None
        end = self.batch.finished_at or self.now
        return max(end - start, 0.0)

    @property
    def processed(self) -> int:
        """Jobs that ran to an outcome (completed or failed; not cancelled)."""
        return self.counts.get(JobStatus.COMPLETED, 0) + self.counts.get(JobStatus.FAILED, 0)

    @property
    def rate(self) -> float | None:
        """Jobs processed per second since the batch started."""
        elapsed = self.elapsed
        if not elapsed or not self.processed:
            return None
        return self.processed / elapsed

    @property
    def eta(self) -> float | None:
        """Seconds until every job has ended, at the current rate."""
        if self.batch.status.ended:
            return 0.0
        rate = self.rate
        if not rate:
            return None
        return (self.batch.total - self.done) / rate

    def as_json(self) -> dict[str, Any]:
        """A plain dict for ``batch.format=json`` and the HTTP API."""
        b = self.batch
        return {
            "batch_id": b.id,
            "flow": b.flow,
            "status": b.status.value,
            "total": b.total,
            "counts": {status.value: self.counts.get(status, 0) for status in JobStatus},
            "progress": round(self.progress, 4),
            "rate": self.rate,
            "eta_seconds": self.eta,
            "created_at": b.created_at,
            "started_at": b.started_at,
            "finished_at": b.finished_at,
            "error": b.error,
            "cost": b.cost,
            "max_cost": b.request.max_cost,
            "input_tokens": b.input_tokens,
            "output_tokens": b.output_tokens,
            "published": b.published,
            "request": b.request.model_dump(mode="json")
            if b.stored_request is None
            else b.stored_request,
            "request_error": b.request_error,
            "common_errors": [e.model_dump() for e in self.common_errors],
        }
