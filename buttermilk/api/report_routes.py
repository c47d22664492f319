"""The ``/api`` routes of a batch's evaluation: its report, its charts, and its throughput
and cost over time. Each is a thin call into :class:`BatchService` and the store.

A report scores what the batch (or its flow) declares, or what the query says: ``label``
(with ``truth``, ``kind``, ``positive``, ``categories``) overrides it. ``also`` (repeated)
lines further batches of the same flow up with it. A query parameter the route does not
take is a 422 naming it (a typo never silently scores something else).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import anyio
import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, ValidationError

from buttermilk.api.errors import FieldError, documented
from buttermilk.api.routes import Service
from buttermilk.batch.service import BatchService
from buttermilk.domain.evaluation import EvaluationSpec, Kind, RecordAgreement, Report
from buttermilk.domain.timeline import Timeline
from buttermilk.errors import UnknownBatchError, UsageError

MAX_ALSO = 20  # batches lined up with the first one
MAX_PATH = 500  # characters of a label or truth path
MAX_CATEGORIES = 200

router = APIRouter(prefix="/api")

Label = Annotated[
    str | None,
    Query(
        max_length=MAX_PATH,
        description="Override: the label's path into a job's outputs (AGENT.KEY...). "
        "Without it the batch's (or its flow's) evaluate is used, and the other overrides "
        "are refused.",
    ),
]
Truth = Annotated[
    str | None,
    Query(max_length=MAX_PATH, description="ground_truth, ground_truth.PATH or metadata.PATH."),
]
KindQuery = Annotated[Kind | None, Query(description="nominal, ordinal or interval.")]
Positive = Annotated[
    str | None,
    Query(
        max_length=MAX_PATH,
        description="The positive class: a number or true/false is read as one (JSON); "
        'send text that looks like one quoted ("1").',
    ),
]
Categories = Annotated[
    list[str] | None,
    Query(
        max_length=MAX_CATEGORIES,
        description="The labels in order: repeat the parameter or give a comma list "
        '(categories=low,mid,high); each read as `positive` is ("a,b" quoted: one label).',
    ),
]
Also = Annotated[
    list[str] | None,
    Query(
        max_length=MAX_ALSO,
        description="Ids (or unique prefixes) of more batches of the same flow to line up.",
    ),
]
REPORT_PARAMETERS = ("label", "truth", "kind", "positive", "categories", "also")


def only_parameters(*names: str) -> Callable[[Request], None]:
    """A dependency refusing (422, naming them and the allowed ones) query parameters
    other than ``names``."""

    def check(request: Request) -> None:
        unknown = sorted(set(request.query_params) - set(names))
        if unknown:
            takes = f"it takes {', '.join(names)}" if names else "it takes none"
            raise FieldError(
                unknown[0],
                f"unknown query parameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)}: {takes}",
                "unknown_parameter",
            )

    return check


def split_list(values: Sequence[str]) -> list[str]:
    """Each value split at the commas outside double quotes (``low,mid`` is two items,
    ``"a,b"`` one, quotes kept)."""
    items: list[str] = []
    for value in values:
        current, quoted, escaped = "", False, False
        for char in value:
            if char == "," and not quoted:
                items.append(current)
                current = ""
                continue
            current += char
            if escaped:
                escaped = False
            elif char == "\\" and quoted:
                escaped = True
            elif char == '"':
                quoted = not quoted
        items.append(current)
    return items


def _label_value(text: str) -> Any:
    """A label from a query string: JSON numbers, booleans and quoted text are read as JSON,
    anything else is the text itself."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def evaluate_override(
    label: str | None,
    truth: str | None,
    kind: Kind | None,
    positive: str | None,
    categories: Sequence[str] | None,
) -> EvaluationSpec | None:
    """The spec the query gives (None: none given). Raises FieldError (422) naming the
    parameter when one cannot be used, or when an override comes without ``label``."""
    given = {"truth": truth, "kind": kind, "positive": positive, "categories": categories}
    if label is None:
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise FieldError(extra[0], f"{extra[0]} overrides the evaluate spec: give label too")
        return None
    fields: dict[str, Any] = {"label": label}
    if truth is not None:
        fields["truth"] = truth
    if kind is not None:
        fields["kind"] = kind
    if positive is not None:
        fields["positive"] = _label_value(positive)
    if categories is not None:
        items = split_list(categories)
        if len(items) > MAX_CATEGORIES:
            raise FieldError("categories", f"categories: at most {MAX_CATEGORIES} labels")
        fields["categories"] = [_label_value(c) for c in items]
    try:
        return EvaluationSpec.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = str(error["msg"]).removeprefix("Value error, ")
        named = [name for name in fields if reason.startswith(f"evaluate.{name}")]
        field = str(error["loc"][0]) if error["loc"] else (named or ["label"])[0]
        raise FieldError(
            field, f"{field}={error.get('input')!r} is not allowed: {reason}"
        ) from None


def _lined_up(service: BatchService, batch_id: str, also: Sequence[str]) -> list[str]:
    """The full ids of ``batch_id`` and ``also``: UnknownBatchError (404) for one that
    names no batch; FieldError on ``also`` for a batch named twice or of another flow."""
    first = service.store.get_batch(service.resolve(batch_id))
    found = [first.id]
    for given in also:
        batch = service.store.get_batch(service.resolve(given))
        if batch.id in found:
            raise FieldError(
                "also",
                f"also={given!r} names batch {batch.id} twice: line up different batches",
            )
        if batch.flow != first.flow:
            raise FieldError(
                "also",
                f"also={given!r} is a batch of flow {batch.flow!r}, batch {first.id} of flow "
                f"{first.flow!r}: line up batches of one flow",
            )
        found.append(batch.id)
    return found


async def scored(
    service: BatchService,
    batch_ids: Sequence[str],
    evaluate: EvaluationSpec | None,
    also: Sequence[str] = (),
) -> Report:
    """The service's report of ``batch_ids`` and ``also`` (checked by :func:`_lined_up`);
    a refusal other than an unknown batch (404) is a 422."""
    if also:
        batch_ids = await anyio.to_thread.run_sync(_lined_up, service, batch_ids[0], also)
    try:
        return await service.report(batch_ids, evaluate)
    except UnknownBatchError:
        raise
    except UsageError as exc:  # nothing declared to score, a label naming no agent, ...
        field = "positive" if str(exc).startswith("evaluate.positive") else "evaluate"
        raise FieldError(field, str(exc), "unscorable") from exc


async def agreements(
    service: BatchService, batch_id: str, evaluate: EvaluationSpec | None = None
) -> list[RecordAgreement]:
    """The service's per-record agreements; refusals as :func:`scored` answers them."""
    try:
        return await service.record_agreements(batch_id, evaluate)
    except UnknownBatchError:
        raise
    except UsageError as exc:
        raise FieldError("evaluate", str(exc), "unscorable") from exc


@router.get(
    "/batches/{batch_id}/report",
    response_model=Report,
    responses=documented(404, 422),
    summary="A batch's scores against its truth",
    dependencies=[Depends(only_parameters(*REPORT_PARAMETERS))],
)
async def get_report(
    batch_id: str,
    service: Service,
    label: Label = None,
    truth: Truth = None,
    kind: KindQuery = None,
    positive: Positive = None,
    categories: Categories = None,
    also: Also = None,
) -> Report:
    """Scores per combination and overall, agreement across combinations and repeats, and
    paired comparisons: the CLI's ``batch.command=report`` JSON, field for field.

    Figures cover the jobs finished so far (``live`` while a batch runs). An unknown
    batch is a 404; nothing declared to score, or an override that cannot be used, a 422.
    """
    spec = evaluate_override(label, truth, kind, positive, categories)
    return await scored(service, [batch_id], spec, also or [])


class ChartView(BaseModel):
    id: str
    title: str
    figure: dict[str, Any] = Field(description="A plotly figure: {data, layout}.")


class ReportCharts(BaseModel):
    """What the dashboard's results page draws: the report, the first batch's timeline,
    and the charts built from both (buttermilk.evaluation.charts, as the HTML report)."""

    report: Report
    timeline: Timeline
    charts: list[ChartView]
    config: dict[str, Any] = Field(description="plotly.js's config for every chart.")


@router.get(
    "/batches/{batch_id}/report/charts",
    response_model=ReportCharts,
    responses=documented(404, 422),
    summary="A batch's report with its charts",
    dependencies=[Depends(only_parameters(*REPORT_PARAMETERS))],
)
async def get_report_charts(
    batch_id: str,
    service: Service,
    label: Label = None,
    truth: Truth = None,
    kind: KindQuery = None,
    positive: Positive = None,
    categories: Categories = None,
    also: Also = None,
) -> dict[str, Any]:
    """The report (as ``/report`` answers it), the batch's timeline, and plotly figures of
    both: accuracy (or MAE) per combination with CIs, labels, stability, throughput and
    cost, and a confusion matrix per combination."""
    from buttermilk.evaluation.charts import CONFIG, report_charts

    spec = evaluate_override(label, truth, kind, positive, categories)
    report = await scored(service, [batch_id], spec, also or [])
    timeline = await anyio.to_thread.run_sync(service.store.timeline, report.batch_ids[0])
    charts = report_charts(report, timeline)
    return {"report": report, "timeline": timeline, "charts": charts, "config": CONFIG}


@router.get(
    "/batches/{batch_id}/timeline",
    response_model=Timeline,
    responses=documented(404, 422),
    summary="A batch's throughput and cost over time",
    dependencies=[Depends(only_parameters())],
)
async def get_timeline(batch_id: str, service: Service) -> Timeline:
    """Jobs ended (completed, failed, cancelled), their cost in USD and tokens per time
    bucket, counted from the batch's creation; buckets are 1 s to 12 h wide (whole days
    past that), at most 120 over the batch's span. Only buckets holding an ended job."""

    def read() -> Timeline:
        return service.store.timeline(service.resolve(batch_id))

    return await anyio.to_thread.run_sync(read)
