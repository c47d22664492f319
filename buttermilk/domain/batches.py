"""Batches as stored, and their live summaries."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, Field

from buttermilk.domain.concurrency import ConcurrencyLevel
from buttermilk.domain.progress import CombinationProgress
from buttermilk.domain.requests import BatchRequest
from buttermilk.domain.statuses import BatchStatus, JobStatus
from buttermilk.domain.variants import Combination, combinations


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
    cached_input_tokens: int = 0
    """Of ``input_tokens``, those the provider read from its prompt cache."""
    reasoning_tokens: int = 0
    """Of ``output_tokens``, those a reasoning model spent thinking."""
    schema_retry_calls: int = 0
    """Calls of its LLM agents that asked again because an answer did not fit the schema."""
    schema_retry_input_tokens: int = 0
    """Of ``input_tokens``, those the schema retry calls spent."""
    schema_retry_output_tokens: int = 0
    """Of ``output_tokens``, those the schema retry calls spent."""
    schema_retry_cost: float | None = None
    """USD: of ``cost``, what the schema retry calls cost (None until one had a price)."""
    max_job_cost: float | None = None
    """USD: the most one job attempt of it has cost so far (None until one had a price)."""
    request_error: str | None = None
    """Why the stored request cannot be used (its fields then read as defaults); workers
    fail the batch's jobs with it instead of running them. None for a sound batch."""
    stored_request: dict[str, Any] | None = None
    """The request exactly as stored, when it cannot be used (else None: see ``request``)."""

    @property
    def interactive(self) -> bool:
        return self.request.interactive

    @property
    def repeats(self) -> int:
        return self.request.repeats or 1

    def combinations(self) -> list[Combination]:
        """The batch's combinations in planned order (one, ``default``, without axes)."""
        return combinations(self.request.variants)

    @property
    def combination_count(self) -> int:
        """How many combinations it has (without listing them)."""
        return math.prod(len(values) for values in self.request.variants.values())

    @property
    def compares(self) -> bool:
        """Whether it has more than one combination or repeats them (a comparison)."""
        return self.combination_count > 1 or self.repeats > 1


class ErrorCount(BaseModel):
    error_type: str
    error_message: str
    count: int


class EndpointDown(BaseModel):
    """An LLM endpoint that workers found down while running the batch: its jobs wait."""

    endpoint: str  # the base URL
    since: float  # UNIX seconds: when the first worker marked it down
    error: str  # the last failure a worker saw (one line)
    workers: int  # workers that have it down


class BatchSummary(BaseModel):
    """A batch with its live counts, for ``status`` and ``list``."""

    batch: BatchInfo
    counts: dict[JobStatus, int]
    common_errors: list[ErrorCount] = Field(default_factory=list)
    now: float
    combinations: list[CombinationProgress] | None = None
    """Counts per combination in planned order (None: not read, as in ``list``)."""
    endpoints_down: list[EndpointDown] | None = None
    """LLM endpoints workers have found down (empty for an ended batch; None: not read, as
    in ``list``)."""
    concurrency: list[ConcurrencyLevel] | None = None
    """The adaptive levels of calls in flight to the LLM models its jobs call, per model and
    endpoint (empty for an ended batch; None: not read, as in ``list``)."""

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
    def in_flight_cost(self) -> float | None:
        """USD the running jobs may still add to the batch's cost, by its history: each
        running job at most as much as the dearest job attempt so far (``max_job_cost``).
        None when none runs or no job had a price; an estimate, not a guarantee (a job
        may cost more than any before it)."""
        running = self.counts.get(JobStatus.RUNNING, 0)
        most = self.batch.max_job_cost
        if not running or most is None:
            return None
        return round(running * most, 10)

    @property
    def eta(self) -> float | None:
        """Seconds until every job has ended, at the current rate (None: no rate yet, or an
        LLM endpoint it calls is down, so its jobs wait for it rather than run)."""
        if self.batch.status.ended:
            return 0.0
        if self.endpoints_down:
            return None
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
            "cached_input_tokens": b.cached_input_tokens,
            "reasoning_tokens": b.reasoning_tokens,
            "schema_retry_calls": b.schema_retry_calls,
            "schema_retry_input_tokens": b.schema_retry_input_tokens,
            "schema_retry_output_tokens": b.schema_retry_output_tokens,
            "schema_retry_cost": b.schema_retry_cost,
            "max_job_cost": b.max_job_cost,
            "in_flight_cost": self.in_flight_cost,
            "published": b.published,
            "seed": b.seed,
            "request": b.request.model_dump(mode="json")
            if b.stored_request is None
            else b.stored_request,
            "request_error": b.request_error,
            "common_errors": [e.model_dump() for e in self.common_errors],
            "variants": b.request.variants,
            "repeats": b.repeats,
            "combination_count": b.combination_count,
            "combinations": None
            if self.combinations is None
            else [c.as_json() for c in self.combinations],
            "endpoints_down": None
            if self.endpoints_down is None
            else [e.model_dump() for e in self.endpoints_down],
            "concurrency": None
            if self.concurrency is None
            else [c.model_dump() for c in self.concurrency],
        }
