"""Turn the Hydra config into typed settings: the only place that sees a DictConfig."""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from buttermilk.batch.worker_options import WorkerOptions
from buttermilk.domain import BatchRequest, BatchStatus
from buttermilk.errors import UsageError
from buttermilk.option_types import Count, Seconds
from buttermilk.queue import QueueSettings
from buttermilk.store import StoreSettings

Command = Literal[
    "create", "run", "list", "status", "cancel", "retry", "export", "estimate", "report"
]
COMMANDS: tuple[str, ...] = Command.__args__  # type: ignore[attr-defined]
REQUEST_FIELDS = frozenset(BatchRequest.model_fields) - {"flow", "strata"}  # strata: planned
TAGGED_UNION_FIELDS = frozenset({"queue"})  # settings chosen by their ``type`` key


MAX_SHOWN = 120  # characters of a refused value shown in its error line


def closest(name: str, known: Sequence[str]) -> str | None:
    """The known option ``name`` most likely stands for (a typo, or the section left out)."""
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    if found:
        return found[0]
    last = name.rpartition(".")[2]
    by_last = {option.rpartition(".")[2]: option for option in known}
    found = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.8)
    return by_last[found[0]] if found else None


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest known option, or nothing."""
    match = closest(name, known)
    return f" (did you mean {match}?)" if match else ""


def describe_validation_error(
    exc: ValidationError, prefix: str = "", known: Sequence[str] = ()
) -> str:
    """One line naming the first bad value and what is allowed (``known``: the option
    names, to suggest the closest to an unknown one)."""
    errors = exc.errors()
    first = errors[0]
    loc = list(first["loc"])
    if len(loc) > 2 and loc[0] in TAGGED_UNION_FIELDS:
        del loc[1]  # pydantic names the union member ("local"); users never type it
    where = prefix + ".".join(str(part) for part in loc)
    reason = first["msg"].removeprefix("Value error, ")
    reason = reason[:1].lower() + reason[1:]
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if first["type"] == "missing":
        return f"{where} is required{more}"
    if first["type"] == "extra_forbidden":
        return f"{where} is not a known option{did_you_mean(where, known)}{more}"
    given = repr(first.get("input"))
    given = given if len(given) <= MAX_SHOWN else given[: MAX_SHOWN - 3] + "..."
    return f"{where}={given} is not allowed: {reason}{more}"


class BatchSettings(BaseModel):
    """The ``batch:`` section, minus the fields of a batch request (kept raw in ``request``)."""

    # A batch id prefix typed as digits reaches us as a number: take it as text.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    command: Command | None = None
    flow: str | None = None
    wait: bool = False
    batch_id: str | None = None
    batch_ids: list[str] | None = None
    variant: str | None = None
    evaluate: dict[str, Any] | None = None
    output: Path | None = None
    format: Literal["table", "json"] = "table"
    status: BatchStatus | None = None
    limit: Count = 20
    max_jobs: Count | None = None
    idle_timeout: Seconds | None = 10.0
    worker_concurrency: Count = 100
    grace_period: Seconds = 30.0
    interactive: bool = False
    check_endpoints: bool = True
    request: dict[str, Any] = Field(default_factory=dict)

    @field_validator("output", mode="before")
    @classmethod
    def _named_output(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("give a file name, e.g. batch.output=report.html (or leave it out)")
        return value

    def to_request(self, flow: str) -> BatchRequest:
        """The batch request these options describe; UsageError names any bad value."""
        try:
            return BatchRequest.model_validate({**self.request, "flow": flow})
        except ValidationError as exc:
            raise UsageError(describe_validation_error(exc, "batch.")) from None

    def worker_options(
        self, *, batch_id: str | None = None, interactive: bool | None = None
    ) -> WorkerOptions:
        return WorkerOptions(
            concurrency=self.worker_concurrency,
            max_jobs=self.max_jobs if batch_id is None else None,
            idle_timeout=self.idle_timeout if batch_id is None else None,
            interactive=self.interactive if interactive is None else interactive,
            batch_id=batch_id,
            grace_period=self.grace_period,
        )


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = None
    max_body_bytes: int = Field(
        default=1_048_576, ge=1, description="Largest request body accepted (413 beyond)."
    )


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
"""A logging level name, in any case (``BUTTERMILK_LOG_LEVEL=debug`` works)."""


class AppSettings(BaseModel):
    """Everything the CLI was configured with, typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ui: Literal["batch", "api"] = "batch"
    flow: str | None = None
    state_dir: Path
    log_level: LogLevel = "INFO"
    batch: BatchSettings
    queue: QueueSettings
    store: StoreSettings
    api: ApiSettings = ApiSettings()

    @property
    def flow_name(self) -> str | None:
        """The flow named by ``flow=`` or ``batch.flow=`` (they must agree)."""
        if self.flow and self.batch.flow and self.flow != self.batch.flow:
            raise UsageError(
                f"flow={self.flow!r} and batch.flow={self.batch.flow!r} disagree: give just one"
            )
        return self.flow or self.batch.flow


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The settings models an annotation names (unions and Annotated included)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif get_origin(annotation) in (Union, types.UnionType) or hasattr(annotation, "__metadata__"):
        for arg in get_args(annotation):
            yield from _models_in(arg)


def _option_names(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        if model is BatchSettings and name == "request":
            continue
        nested = list(_models_in(field.annotation))
        if nested:
            for inner in nested:
                yield from _option_names(inner, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


def known_options() -> list[str]:
    """Every option name the settings take (``batch.concurrency``, ``queue.path``, ...)."""
    names = set(_option_names(AppSettings, ""))
    names.update(f"batch.{name}" for name in REQUEST_FIELDS)
    return sorted(names)


# Sections of options (with an example of one), never one value.
SECTIONS = {
    "batch": "batch.concurrency",
    "queue": "queue.path",
    "store": "store.url",
    "api": "api.port",
}
GROUPS = {"queue": "queue=local or queue=pubsub", "store": "store=sqlite or store=postgres"}


def _check_sections(raw: dict[str, Any]) -> None:
    """A section set to one value (``batch=5``) or removed (``~batch``) would lose every
    option in it: refuse it, naming the key and what it takes."""
    for key, example in SECTIONS.items():
        if key not in raw:
            if key != "batch":
                continue  # pydantic says "is required" or takes the defaults
            problem = f"{key} cannot be removed"
        elif isinstance(raw[key], dict):
            continue
        else:
            problem = f"{key}={raw[key]!r} is not allowed"
        choose = f"; choose one with {GROUPS[key]}" if key in GROUPS else ""
        raise UsageError(
            f"{problem}: {key} is a section of options, set each on its own "
            f"(e.g. {example}=...){choose}"
        )


def settings_from_config(cfg: DictConfig) -> AppSettings:
    """Resolve and validate the composed config; UsageError on the first bad value."""
    try:
        raw: Any = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a value"
        raise UsageError(f"{key} is required (give it as {key}=...)") from None
    except Exception as exc:  # interpolation errors of several types
        raise UsageError(f"cannot resolve the config: {exc}") from None
    raw.pop("hydra", None)
    _check_sections(raw)
    batch = dict(raw["batch"])
    # Request fields stay raw here and are validated by BatchRequest on create;
    # ``interactive`` is also the worker's own switch (take interactive jobs).
    request = {key: batch.pop(key) for key in list(batch) if key in REQUEST_FIELDS}
    if "interactive" in request:
        batch["interactive"] = request["interactive"]
    if "evaluate" in request:  # a create's spec, and report's over the batches' own
        batch["evaluate"] = request["evaluate"]
    batch["request"] = request
    raw["batch"] = batch
    try:
        return AppSettings.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, known=known_options())) from None
