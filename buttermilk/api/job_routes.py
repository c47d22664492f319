"""The ``/api`` routes of a batch's jobs: pages of them, one job, and the results.

A job is named by its record id, its combination (``variant``, the key) and its repeat;
a fetch without them finds the record's first job in planned order.
"""

from __future__ import annotations

from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from buttermilk.api.errors import documented
from buttermilk.api.report_routes import agreements
from buttermilk.api.results import MEDIA_TYPES, ResultFormat, result_stream
from buttermilk.api.routes import MAX_POSITION, Service
from buttermilk.api.schemas import JobPage, JobView
from buttermilk.batch.service import BatchService
from buttermilk.domain import JobInfo, JobStatus
from buttermilk.domain.variants import MAX_KEY, MAX_REPEATS
from buttermilk.errors import UnknownBatchError

MAX_JOB_PAGE = 1_000
LIST_EXCLUDES = {"record", "traceback"}  # a job list leaves out the bulky fields

router = APIRouter(prefix="/api")

Variant = Annotated[
    str | None,
    Query(
        max_length=MAX_KEY,
        description="Key of the job's combination (as listed; null: the record's first).",
    ),
]
Repeat = Annotated[
    int | None,
    Query(ge=0, lt=MAX_REPEATS, description="The job's repeat, from 0 (null: the first)."),
]


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
    variant: Variant = None,
    disagrees: Annotated[
        bool | None,
        Query(
            description="true: jobs of records where some answer differs from the truth "
            "(false: where none does); needs the batch's evaluate."
        ),
    ] = None,
    unstable: Annotated[
        bool | None,
        Query(
            description="true: jobs of records whose answers differ across combinations "
            "and repeats (stability < 1; false: = 1); needs the batch's evaluate."
        ),
    ] = None,
) -> JobPage:
    """Jobs without their records and tracebacks (see the job route), of every
    combination or of one (``variant``), of every record or of those the report flags
    (``disagrees``, ``unstable``; nothing declared to score is a 422)."""
    records = await _flagged_records(service, batch_id, disagrees, unstable)

    def read() -> tuple[list[JobInfo], int]:
        full_id = service.resolve(batch_id)
        if variant is not None:
            _check_variant(service, full_id, variant)
        if order == "recent":
            jobs = service.store.recent_jobs(
                full_id, status=status, variant=variant, record_ids=records, limit=limit
            )
        else:
            jobs = list(
                service.store.iter_jobs(
                    full_id,
                    status=status,
                    variant=variant,
                    record_ids=records,
                    after_seq=after_seq,
                    limit=limit + 1,
                )
            )
        if records is not None:
            return jobs, service.store.count_jobs(
                full_id, status=status, variant=variant, record_ids=records
            )
        if variant is None:
            counts = service.store.job_counts([full_id])[full_id]
        else:
            counts = service.store.variant_counts(full_id).get(variant, {})
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


async def _flagged_records(
    service: BatchService, batch_id: str, disagrees: bool | None, unstable: bool | None
) -> set[str] | None:
    """Ids of the batch's records that pass the ``disagrees`` and ``unstable`` filters
    (None: no filter given), from the service's per-record agreements."""
    if disagrees is None and unstable is None:
        return None
    found = await agreements(service, batch_id)
    return {
        a.record_id
        for a in found
        if (disagrees is None or a.disagrees_with_truth == disagrees)
        and (unstable is None or (a.stability is not None and (a.stability < 1) == unstable))
    }


async def _read_job(
    service: BatchService,
    batch_id: str,
    record_id: str,
    variant: str | None,
    repeat: int | None,
) -> JobInfo:
    def read() -> JobInfo:
        full_id = service.resolve(batch_id)
        if variant is not None:
            _check_variant(service, full_id, variant)
        return service.store.get_job(full_id, record_id, variant, repeat)

    return await anyio.to_thread.run_sync(read)


def _check_variant(service: BatchService, batch_id: str, variant: str) -> None:
    """UnknownBatchError (404) naming the batch's combinations when it has no ``variant``."""
    keys = [c.key for c in service.store.get_batch(batch_id).combinations()]
    if variant not in keys:
        raise UnknownBatchError(
            f"batch {batch_id} has no combination {variant!r} (its combinations: "
            f"{', '.join(keys)}; in a query string, send '+' as %2B)"
        )


@router.get(
    "/batches/{batch_id}/jobs/{record_id:anytext}",
    response_model=JobInfo,
    responses=documented(404),
    summary="One job",
)
async def get_job(
    batch_id: str,
    record_id: str,
    service: Service,
    variant: Variant = None,
    repeat: Repeat = None,
) -> JobInfo:
    """One job with its record, its result, or its error and traceback.

    ``record_id`` is percent-encoded whole (``/`` as ``%2F``, a newline as ``%0A``).
    Clients rewrite a path segment ``.`` or ``..`` before sending it: the ``job`` route
    takes the record id as a query parameter and reaches every id. A record's jobs of a
    batch with variants or repeats differ in ``variant`` and ``repeat``: give both.
    """
    return await _read_job(service, batch_id, record_id, variant, repeat)


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
    variant: Variant = None,
    repeat: Repeat = None,
) -> JobInfo:
    """The same as ``GET /api/batches/{batch_id}/jobs/{record_id}``, for any record id."""
    return await _read_job(service, batch_id, record_id, variant, repeat)


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
