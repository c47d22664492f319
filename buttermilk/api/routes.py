"""The ``/api`` routes: each one a thin call into :class:`BatchService`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, cast

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.convertors import Convertor, register_url_convertor

from buttermilk.api.errors import FieldError, as_body_errors, documented
from buttermilk.api.results import MEDIA_TYPES, ResultFormat, result_stream
from buttermilk.api.schemas import BatchPage, BatchView, CreateBatch, FlowView, JobPage, JobView
from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchStatus, JobInfo, JobStatus
from buttermilk.errors import UnknownFlowError, UsageError
from buttermilk.flows.catalog import FlowCatalog

MAX_PAGE = 500
MAX_JOB_PAGE = 1_000
MAX_POSITION = 2**31 - 1  # offsets and seqs: past any count the store holds, and bindable
LIST_EXCLUDES = {"record", "traceback"}  # a job list leaves out the bulky fields
# A batch list leaves out the request's flow parameters: they are as large as the client
# made them, and the dashboard polls the list every second. GET /api/batches/{id} has them.
BATCH_LIST_EXCLUDES = {"parameters"}

router = APIRouter(prefix="/api")


class AnyTextConvertor(Convertor[str]):
    """A path parameter holding any characters, line breaks included (a record id).

    Starlette's ``path`` convertor is ``.*`` and its route pattern ends in ``$``: a newline
    stops the match (404), and one at the end is dropped, so ``a%0A`` would fetch job ``a``.
    """

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", AnyTextConvertor())


def _service(request: Request) -> BatchService:
    return cast(BatchService, request.app.state.service)


def _defaults(request: Request) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], request.app.state.defaults)


Service = Annotated[BatchService, Depends(_service)]
Defaults = Annotated[Mapping[str, Any], Depends(_defaults)]


@router.post(
    "/batches",
    status_code=201,
    response_model=BatchView,
    responses=documented(422),
    summary="Create a batch",
)
async def create_batch(
    body: CreateBatch, service: Service, defaults: Defaults, response: Response
) -> dict[str, Any]:
    """Plan a batch of the flow's records and queue one job per record.

    Fields left out take the server's ``batch.*`` settings (the CLI's defaults).
    """
    try:
        request = body.to_request(defaults)
    except ValidationError as exc:
        raise as_body_errors(exc) from None
    try:
        created = await service.create(request)
    except UsageError as exc:  # the flow is unknown, or its config or data cannot be used
        code = "unknown_flow" if isinstance(exc, UnknownFlowError) else "unusable_flow"
        raise FieldError("flow_name", str(exc), code) from exc
    summary = await service.summary(created.batch.id)
    response.headers["Location"] = f"/api/batches/{created.batch.id}"
    return summary.as_json()


def _list_item(batch: dict[str, Any]) -> dict[str, Any]:
    request = {k: v for k, v in batch["request"].items() if k not in BATCH_LIST_EXCLUDES}
    return {**batch, "request": request}


@router.get("/batches", response_model=BatchPage, summary="List batches")
async def list_batches(
    service: Service,
    status: BatchStatus | None = None,
    flow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_POSITION)] = 0,
) -> dict[str, Any]:
    """Batches, newest first, with their job counts; ``total`` counts every page.

    Each item's ``request`` leaves out ``parameters`` (the flow parameters, as large as the
    creator made them), and ``common_errors`` is empty: ``GET /api/batches/{batch_id}`` has both.
    """
    summaries = await service.list(status=status, flow=flow, limit=limit, offset=offset)
    total = await anyio.to_thread.run_sync(
        lambda: service.store.count_batches(status=status, flow=flow)
    )
    return {
        "items": [_list_item(s.as_json()) for s in summaries],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get(
    "/batches/{batch_id}", response_model=BatchView, responses=documented(404), summary="A batch"
)
async def get_batch(batch_id: str, service: Service) -> dict[str, Any]:
    """Status, counts per job status, progress, rate, ETA, timestamps and common errors."""
    return (await service.summary(batch_id)).as_json()


@router.delete(
    "/batches/{batch_id}",
    response_model=BatchView,
    responses=documented(404, 409),
    summary="Cancel a batch",
)
async def cancel_batch(batch_id: str, service: Service) -> dict[str, Any]:
    """No job of it starts any more; running ones stop within seconds.

    Cancelling a cancelled batch changes nothing; a completed or failed one gives 409.
    """
    batch = await service.cancel(batch_id)
    return (await service.summary(batch.id)).as_json()


@router.get(
    "/batches/{batch_id}/jobs",
    response_model=JobPage,
    responses=documented(404),
    summary="List a batch's jobs",
)
async def list_jobs(
    batch_id: str,
    service: Service,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_JOB_PAGE)] = 50,
    after_seq: Annotated[
        int, Query(ge=-1, le=MAX_POSITION, description="next_after_seq of the page before")
    ] = -1,
    order: Annotated[
        Literal["planned", "recent"],
        Query(description="planned: in planned order, paged; recent: latest started first"),
    ] = "planned",
) -> JobPage:
    """Jobs without their records and tracebacks (see the job route)."""

    def read() -> tuple[list[JobInfo], int]:
        full_id = service.resolve(batch_id)
        if order == "recent":
            jobs = service.store.recent_jobs(full_id, status=status, limit=limit)
        else:
            jobs = list(
                service.store.iter_jobs(
                    full_id, status=status, after_seq=after_seq, limit=limit + 1
                )
            )
        counts = service.store.job_counts([full_id])[full_id]
        total = counts.get(status, 0) if status else sum(counts.values())
        return jobs, total

    jobs, total = await anyio.to_thread.run_sync(read)
    page = jobs[:limit]
    return JobPage(
        items=[JobView.model_validate(job.model_dump(exclude=LIST_EXCLUDES)) for job in page],
        total=total,
        limit=limit,
        next_after_seq=page[-1].seq if len(jobs) > limit else None,
    )


async def _read_job(service: BatchService, batch_id: str, record_id: str) -> JobInfo:
    def read() -> JobInfo:
        return service.store.get_job(service.resolve(batch_id), record_id)

    return await anyio.to_thread.run_sync(read)


@router.get(
    "/batches/{batch_id}/jobs/{record_id:anytext}",
    response_model=JobInfo,
    responses=documented(404),
    summary="One job",
)
async def get_job(batch_id: str, record_id: str, service: Service) -> JobInfo:
    """One job with its record, its result, or its error and traceback.

    ``record_id`` is percent-encoded whole (``/`` as ``%2F``, a newline as ``%0A``).
    Clients rewrite a path segment ``.`` or ``..`` before sending it: the ``job`` route
    takes the record id as a query parameter and reaches every id.
    """
    return await _read_job(service, batch_id, record_id)


@router.get(
    "/batches/{batch_id}/job",
    response_model=JobInfo,
    responses=documented(404),
    summary="One job, by a record id in the query",
)
async def get_job_by_query(
    batch_id: str,
    service: Service,
    record_id: Annotated[str, Query(description="The record id, whatever it holds.")],
) -> JobInfo:
    """The same as ``GET /api/batches/{batch_id}/jobs/{record_id}``, for any record id."""
    return await _read_job(service, batch_id, record_id)


@router.get(
    "/batches/{batch_id}/results",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One row per job, as written by batch.command=export.",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        },
        **documented(404),
    },
    summary="Stream the results",
)
async def get_results(
    batch_id: str,
    service: Service,
    fmt: Annotated[ResultFormat, Query(alias="format")] = "jsonl",
) -> StreamingResponse:
    """Every job's row (ids, status, record, outputs, errors) as JSONL or CSV, streamed."""
    full_id = await anyio.to_thread.run_sync(service.resolve, batch_id)
    return StreamingResponse(
        await result_stream(service.store, full_id, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="batch-{full_id}.{fmt}"'},
    )


def _flow_views(flows: FlowCatalog) -> list[FlowView]:
    views: list[FlowView] = []
    for name in flows.names():
        try:
            flow = flows.get(name)
        except UsageError as exc:  # one broken flow file must not hide the others
            views.append(FlowView(name=name, error=str(exc)))
            continue
        views.append(
            FlowView(
                name=name,
                description=flow.description,
                data={key: source.model_dump(mode="json") for key, source in flow.data.items()},
                agents=[agent.name for agent in flow.agents],
                parameters=flow.parameters,
            )
        )
    return views


@router.get("/flows", response_model=list[FlowView], summary="List flows")
async def list_flows(service: Service) -> list[FlowView]:
    """Every flow the server knows, with its description, data sources and parameters."""
    return await anyio.to_thread.run_sync(_flow_views, service.flows)
