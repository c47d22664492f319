"""Request and response bodies of the HTTP API.

The create body uses the API's own field names (``flow_name``, ``flow_parameters``); it is
turned into a :class:`BatchRequest`, so every rule about a batch request is checked in one
place, the same for the CLI and the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from buttermilk import values
from buttermilk.domain import BatchRequest, ErrorPolicy, JobStatus, Usd
from buttermilk.option_types import Count, Int64

# API body field -> BatchRequest field, where the names differ.
API_TO_REQUEST = {"flow_name": "flow", "flow_parameters": "parameters"}
REQUEST_TO_API = {core: api for api, core in API_TO_REQUEST.items()}


def api_field(request_field: str) -> str:
    """The API's name for a BatchRequest field."""
    return REQUEST_TO_API.get(request_field, request_field)


def _not_null(schema: dict[str, Any]) -> None:
    """The field's schema without its null branch: null is how the model marks a field the
    body left out (the server's default), which the body may not send itself."""
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches
    schema.pop("default", None)


class CreateBatch(BaseModel):
    """``POST /api/batches``. Fields left out take the server's ``batch.*`` settings."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"flow_name": "sentiment", "max_records": 100, "concurrency": 5},
                {"flow_name": "sentiment", "error_policy": "stop", "flow_parameters": {}},
            ]
        },
    )

    flow_name: str = Field(description="Name of the flow to run (GET /api/flows lists them).")
    shuffle: bool | None = Field(
        default=None,
        description="Shuffle record ids before truncating.",
        json_schema_extra=_not_null,
    )
    max_records: Count | None = Field(
        default=None, description="Run at most this many records (null: all)."
    )
    concurrency: Count | None = Field(
        default=None,
        description="Most jobs of this batch at once per worker.",
        json_schema_extra=_not_null,
    )
    error_policy: ErrorPolicy | None = Field(
        default=None,
        description="continue: other jobs go on; stop: the first failure ends it.",
        json_schema_extra=_not_null,
    )
    interactive: bool | None = Field(
        default=None,
        description="Jobs need a person at a console (interactive workers only).",
        json_schema_extra=_not_null,
    )
    flow_parameters: dict[str, Any] | None = Field(
        default=None,
        description="Passed to every flow run, over the flow's own parameters. Data only: "
        "a _target_ key anywhere is refused.",
    )
    max_cost: Usd | None = Field(
        default=None,
        description="USD: once the batch's LLM spending passes this, it stops as failed.",
    )
    variants: dict[str, Any] | None = Field(
        default=None,
        description="Axes to compare, over the flow's own: AGENT.OPTION (an option of one "
        "agent) or a parameter name -> list of values. Jobs = records x combinations "
        "(the product of the axes) x repeats.",
        examples=[{"vader.threshold": [0.05, 0.3]}],
    )
    repeats: int | None = Field(
        default=None,
        description="Independent runs of every combination on every record (null: the "
        "flow's, 1 unless it sets them).",
    )
    evaluate: dict[str, Any] | None = Field(
        default=None,
        description="What a report scores (null: the flow's evaluate): label (AGENT.KEY..., "
        "the agent one of the flow's), truth (ground_truth, ground_truth.PATH or "
        "metadata.PATH), kind (nominal, ordinal, interval), positive, categories.",
        examples=[{"label": "vader.label", "truth": "ground_truth", "kind": "nominal"}],
    )

    stratify: str | None = Field(
        default=None,
        description="With max_records: sample per group of this field (ground_truth, a "
        "source field, or NAME.KEY); the batch's request.strata then holds the records "
        "planned per group.",
    )
    stratify_mode: Literal["equal", "proportional"] | None = Field(
        default=None,
        description="proportional: each group its share of max_records; equal: the same "
        "number for every group.",
        json_schema_extra=_not_null,
    )
    seed: Int64 | None = Field(
        default=None,
        description="Seed of the shuffle and of stratified samples: the same seed, source "
        "and options plan the same records (left out: the server's batch.seed).",
        json_schema_extra=_not_null,
    )

    def to_request(self, defaults: Mapping[str, Any]) -> BatchRequest:
        """The batch request: the server's defaults, then every field the body sets.

        Raises pydantic's ValidationError with BatchRequest's field names.
        """
        given = {
            API_TO_REQUEST.get(name, name): getattr(self, name) for name in self.model_fields_set
        }
        return BatchRequest.model_validate({**defaults, **given})


class ErrorCountView(BaseModel):
    error_type: str
    error_message: str
    count: int


class CombinationView(BaseModel):
    """One combination of a batch's axes and the progress of its jobs."""

    variant: str = Field(description="Its key, as jobs, exports and retry name it.")
    values: dict[str, Any] = Field(description="Its value on each axis.")
    total: int = Field(description="Its jobs: records x repeats.")
    done: int = Field(description="Its jobs that have ended.")
    progress: float = Field(description="Share of its jobs that have ended, 0..1.")
    counts: dict[str, int] = Field(description="Its jobs per status.")


class EndpointDownView(BaseModel):
    """An LLM endpoint found down by workers of a batch."""

    endpoint: str = Field(description="Its base URL.")
    since: float = Field(description="UNIX seconds: when the first worker found it down.")
    error: str = Field(description="The last failure a worker saw.")
    workers: int = Field(description="Workers that find it down.")


class ConcurrencyView(BaseModel):
    """The adaptive level of calls in flight to one model at one endpoint."""

    endpoint: str = Field(description="Its base URL.")
    model: str = Field(description="The model asked for.")
    level: float = Field(description="Calls in flight allowed to every worker together.")
    ceiling: int = Field(
        description="The most it may grow to: the sharing workers' concurrency, and "
        "requests_per_minute when set."
    )
    workers: int = Field(description="Workers sharing it now.")
    paused_until: float | None = Field(
        default=None, description="UNIX seconds: the endpoint asked to wait (Retry-After)."
    )
    cut_at: float | None = Field(default=None, description="UNIX seconds of the last cut (429).")


class BatchView(BaseModel):
    """A batch with its live counts (``BatchSummary.as_json()``)."""

    model_config = ConfigDict(extra="allow")

    batch_id: str
    flow: str
    status: str
    total: int
    counts: dict[str, int] = Field(description="Jobs per status.")
    progress: float = Field(description="Share of jobs that have ended, 0..1.")
    rate: float | None = Field(description="Jobs ended per second since the batch started.")
    eta_seconds: float | None = Field(description="Seconds until every job has ended.")
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    cost: float | None = Field(
        description="USD its jobs' LLM calls have cost so far (null until one has a price)."
    )
    max_cost: float | None = Field(description="Its cost cap in USD (null: none).")
    input_tokens: int = Field(description="Prompt tokens its jobs have spent so far.")
    output_tokens: int = Field(description="Answer tokens its jobs have spent so far.")
    cached_input_tokens: int = Field(
        default=0, description="Of the prompt tokens, those read from the provider's cache."
    )
    reasoning_tokens: int = Field(
        default=0, description="Of the answer tokens, those a reasoning model spent thinking."
    )
    schema_retry_calls: int = Field(
        default=0,
        description="Calls its LLM agents made to ask again for an answer that did not fit "
        "the schema (what schema retries cost, in calls).",
    )
    schema_retry_input_tokens: int = Field(
        default=0, description="Of the prompt tokens, those the schema retry calls spent."
    )
    schema_retry_output_tokens: int = Field(
        default=0, description="Of the answer tokens, those the schema retry calls spent."
    )
    schema_retry_cost: float | None = Field(
        default=None,
        description="USD: of the cost, what the schema retry calls cost (null until one had "
        "a price).",
    )
    max_job_cost: float | None = Field(
        default=None, description="USD: the most one job attempt has cost so far."
    )
    in_flight_cost: float | None = Field(
        default=None,
        description="USD its running jobs may still add (running jobs x max_job_cost; null: "
        "none running or no price), also past max_cost: their calls are paid when answered.",
    )
    published: bool
    seed: int = Field(description="The shuffle seed the batch used (given, or drawn at create).")
    request: dict[str, Any] = Field(
        description="The stored batch request (in GET /api/batches: without its parameters)."
    )
    common_errors: list[ErrorCountView] = Field(
        description="Most common errors of failed jobs (only on GET /api/batches/{batch_id})."
    )
    variants: dict[str, list[Any]] = Field(
        description="Its axes, the flow's and the request's: axis -> values ({}: none)."
    )
    repeats: int = Field(description="Runs of every combination on every record.")
    combination_count: int = Field(description="How many combinations its axes make.")
    combinations: list[CombinationView] | None = Field(
        description="Progress per combination, in planned order (null in GET /api/batches: "
        "GET /api/batches/{batch_id} has it)."
    )
    endpoints_down: list[EndpointDownView] | None = Field(
        default=None,
        description="LLM endpoints workers found down while running it (its jobs wait for "
        "them, released without spending an attempt); empty once they are back or it ended "
        "(null in GET /api/batches: GET /api/batches/{batch_id} has it).",
    )
    concurrency: list[ConcurrencyView] | None = Field(
        default=None,
        description="Adaptive concurrency per model and endpoint its jobs call: it shrinks on "
        "429 and grows back on success (empty when it is not live or no LLM call is running; "
        "null in GET /api/batches).",
    )


class BatchPage(BaseModel):
    items: list[BatchView] = Field(description="Newest first.")
    total: int = Field(description="Batches matching the filters, over all pages.")
    limit: int
    offset: int


class JobView(BaseModel):
    """One job in a list: its status, timing and error, without the record and traceback."""

    batch_id: str
    record_id: str
    variant: str = Field(description="Key of its combination (default: a batch without axes).")
    repeat: int = Field(description="Which repeat of its combination it is, from 0.")
    seq: int = Field(description="Position in the batch's planned order.")
    status: JobStatus
    attempts: int
    worker: str | None
    started_at: float | None
    finished_at: float | None
    duration: float | None
    result: dict[str, Any] | None
    error_type: str | None
    error_message: str | None
    cost: float | None = Field(default=None, description="USD of its last run's LLM calls.")
    input_tokens: int | None = None
    output_tokens: int | None = None

    @field_serializer("result", when_used="json")
    def _exact_json(self, value: dict[str, Any] | None) -> Any:
        return values.json_ready(value)  # bytes and other tagged values (buttermilk.values)


class RetryBatch(BaseModel):
    """``POST /api/batches/{batch_id}/retry``: an empty body retries every combination."""

    model_config = ConfigDict(extra="forbid")

    variant: str | None = Field(
        default=None, description="Retry only this combination's jobs (its key; null: all)."
    )


class JobPage(BaseModel):
    items: list[JobView] = Field(description="In planned order.")
    total: int = Field(description="Jobs matching the filter, over all pages.")
    limit: int
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null on the last page."
    )


class FlowView(BaseModel):
    name: str
    description: str = ""
    data: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Data sources by name."
    )
    agents: list[str] = Field(default_factory=list, description="Agent names, in order.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="The flow's default parameters."
    )
    error: str | None = Field(default=None, description="Why the flow config cannot be loaded.")
