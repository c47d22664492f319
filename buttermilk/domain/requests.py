"""What a user asks for when creating a batch: the typed request, with its limits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.domain.variants import MAX_REPEATS, check_axes
from buttermilk.option_types import Count, Int64, NotABool
from buttermilk.values import refuse_non_finite

ErrorPolicy = Literal["continue", "stop"]
StratifyMode = Literal["equal", "proportional"]
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
    variants: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Axes to compare: AGENT.OPTION or a parameter name -> list of values; "
        "jobs = records x combinations x repeats. At create, the flow's own axes with these "
        "over them.",
    )
    repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS), NotABool] | None = Field(
        default=None,
        description="Independent runs of every combination on every record (null: the "
        "flow's repeats, 1 unless it sets them).",
    )
    max_cost: Usd | None = Field(
        default=None,
        description="USD: once the batch's LLM spending passes this, it stops as failed "
        "(null: no cap).",
    )
    evaluate: EvaluationSpec | None = Field(
        default=None,
        description="What a report scores (null: the flow's evaluate): the label "
        "(AGENT.KEY...), the truth, the kind; the label's agent must be one of the flow's.",
    )
    stratify: str | None = Field(
        default=None,
        min_length=1,
        description="With max_records: sample per group of this field (a record field such "
        "as ground_truth, a source field, or NAME.KEY), as stratify_mode says.",
    )
    stratify_mode: StratifyMode = Field(
        default="proportional",
        description="proportional: each group its share of max_records; equal: every "
        "group the same number (a smaller group gives all it has).",
    )
    strata: dict[str, int] | None = Field(
        default=None,
        description="Set by create when stratifying: the records planned per group (a "
        "group named by type and value: text as it is or quoted, other values as JSON, "
        "(missing) for rows without the field).",
    )

    @field_validator("parameters", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("variants", mode="before")
    @classmethod
    def _axes(cls, value: Any) -> Any:
        found = find_target_key(value, "variants")
        if found:
            raise ValueError(f"{TARGET_KEY} is not allowed in variants (found at {found})")
        return check_axes(value)

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
