"""Creating a batch: check and plan it, store it with its jobs, publish one message per job."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio

from buttermilk import values
from buttermilk.batch.grid import Grid, plan_batch, planned_messages
from buttermilk.batch.planner import Plan
from buttermilk.batch.publishing import (
    mark_published,
    publish,
    publish_or_delete,
    store_while_publishing,
)
from buttermilk.domain import BatchInfo, BatchRequest
from buttermilk.errors import DataSourceError, EndpointUnreachableError
from buttermilk.evaluation.spec import check_request_evaluate
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.base import Queue
from buttermilk.records import Record
from buttermilk.store.store import Store

log = logging.getLogger(__name__)

SAY_SIZE_FROM = 100_000  # jobs: a create this large says what it is storing


@dataclass(frozen=True)
class Created:
    batch: BatchInfo
    rows_read: int


ID_FIRST_CHARS = "abcdfghjkmnpqrstuvwxyz"  # no "e": "1e5" style ids would parse as numbers


def new_batch_id() -> str:
    """12 characters, starting with a letter so that no command line reads it as a number."""
    return secrets.choice(ID_FIRST_CHARS) + secrets.token_hex(6)[1:]


def check_record_sizes(records: Sequence[Record], limit: int | None, transport: str) -> None:
    """Refuse a batch whose records cannot travel through the transport (before storing)."""
    if limit is None:
        return
    for record in records:
        size = len(values.dumps(dict(record.__dict__)))
        if size > limit:
            raise DataSourceError(
                f"record {record.record_id!r} is {size:,} bytes as JSON; the {transport} "
                f"queue carries records of at most {limit:,} bytes"
            )


def prepare(
    store: Store, queue: Queue, flows: FlowCatalog, request: BatchRequest
) -> tuple[FlowConfig, Grid, Plan]:
    """The request's flow, grid and planned records, with every check create makes
    before storing anything (raises what ``BatchService.create`` raises for them)."""
    flow = flows.get(request.flow)
    check_request_evaluate(request, flow)
    grid, plan = plan_batch(flow, request, store)
    check_record_sizes(plan.records, queue.max_record_bytes, queue.name)
    return flow, grid, plan


async def unreachable(flow: FlowConfig, grid: Grid) -> list[str]:
    """One line for each LLM endpoint the flow uses (under each combination) that cannot
    be reached or refuses its key; empty when all answer."""
    from buttermilk.llm.endpoints import check_endpoints, describe, flow_endpoints

    endpoints = flow_endpoints(flow, grid.combinations)
    found = await check_endpoints(endpoints)
    return [describe(e, problem) for e, problem in found]


async def create_batch(
    store: Store,
    queue: Queue,
    flows: FlowCatalog,
    request: BatchRequest,
    *,
    check_endpoints: bool = False,
) -> Created:
    """``BatchService.create`` (see there)."""
    flow, grid, plan = await anyio.to_thread.run_sync(prepare, store, queue, flows, request)
    if check_endpoints:
        problems = await unreachable(flow, grid)
        if problems:
            raise EndpointUnreachableError("; ".join(problems))
    jobs = len(plan.records) * grid.jobs_per_record
    if jobs >= SAY_SIZE_FROM:
        log.info(
            "storing and publishing %s jobs (%s records x %s combinations x %s repeats)",
            f"{jobs:,}",
            f"{len(plan.records):,}",
            f"{len(grid.combinations):,}",
            f"{grid.repeats:,}",
        )
    await queue.prepare(interactive=request.interactive)
    resolved = grid.resolved(request).model_copy(update={"strata": plan.strata})
    batch_id = new_batch_id()

    def store_it() -> BatchInfo:
        return store.create_batch(
            batch_id=batch_id,
            request=resolved,
            flow_snapshot=flow.snapshot(),
            seed=plan.seed,
            records=plan.records,
            variants=grid.keys,
        )

    if not queue.publishes_while_storing:
        batch = await anyio.to_thread.run_sync(store_it)
        messages = planned_messages(batch_id, resolved, plan.records, grid.keys)
        await publish_or_delete(store, batch_id, publish(queue, messages))
    else:
        messages = planned_messages(
            batch_id, resolved, plan.records, grid.keys, created_at=time.time()
        )
        batch = await store_while_publishing(store, batch_id, store_it, publish(queue, messages))
    await anyio.to_thread.run_sync(mark_published, store, batch.id)
    return Created(batch=batch.model_copy(update={"published": True}), rows_read=plan.rows_read)
