"""The ``/api`` routes: each one a thin call into :class:`BatchService`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import ValidationError

from buttermilk.api.errors import FieldError, as_body_errors, documented
from buttermilk.api.schemas import BatchPage, BatchView, CreateBatch, FlowView, RetryBatch
from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchStatus
from buttermilk.errors import EvaluationError, UnknownFlowError, UsageError, VariantError
from buttermilk.flows.catalog import FlowCatalog

MAX_PAGE = 500
MAX_POSITION = 2**31 - 1  # offsets and seqs: past any count the store holds, and bindable
# A batch list leaves out the request's flow parameters: they are as large as the client
# made them, and the dashboard polls the list every second. GET /api/batches/{id} has them.
BATCH_LIST_EXCLUDES = {"parameters"}

router = APIRouter(prefix="/api")


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
    responses=documented(422, 503),
    summary="Create a batch",
)
async def create_batch(
    body: CreateBatch, service: Service, defaults: Defaults, response: Response, raw: Request
) -> dict[str, Any]:
    """Plan a batch of the flow's records and queue one job per record.

    When the server checks endpoints (``batch.check_endpoints``, on by default), an LLM
    endpoint of the flow that cannot be reached or refuses its key is answered with 503
    and the same one-line message as the CLI's; nothing is created.

    Fields left out take the server's ``batch.*`` settings (the CLI's defaults).
    """
    try:
        request = body.to_request(defaults)
    except ValidationError as exc:
        raise as_body_errors(exc) from None
    try:
        check = bool(getattr(raw.app.state, "check_endpoints", False))
        created = await service.create(request, check_endpoints=check)
    except VariantError as exc:  # an axis the flow cannot take, or too many jobs
        raise FieldError("variants", str(exc)) from exc
    except EvaluationError as exc:  # a label naming no agent of the flow
        raise FieldError("evaluate", str(exc)) from exc
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


@router.post(
    "/batches/{batch_id}/retry",
    response_model=BatchView,
    responses=documented(404, 409, 422),
    summary="Retry a batch's jobs that did not complete",
)
async def retry_batch(
    batch_id: str,
    service: Service,
    body: Annotated[RetryBatch | None, Body()] = None,
) -> dict[str, Any]:
    """Requeue its failed, cancelled and pending jobs (and running ones whose worker died),
    or only those of one combination (``variant``); the batch becomes live again.

    Answers the batch, with ``requeued``: how many jobs were requeued. A key the batch
    lacks gives 422; nothing to retry gives 409.
    """
    variant = body.variant if body else None
    try:
        batch, count = await service.retry(batch_id, variant=variant, option="variant")
    except VariantError as exc:
        raise FieldError("variant", str(exc)) from exc
    return {**(await service.summary(batch.id)).as_json(), "requeued": count}


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
