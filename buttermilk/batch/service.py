"""BatchService: every batch operation, shared by the CLI and the HTTP API."""

from __future__ import annotations

import builtins
import itertools
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio

from buttermilk import values
from buttermilk.batch.export import export_jobs
from buttermilk.batch.grid import (
    Grid,
    check_size,
    grid_for,
    planned_messages,
    requeued_messages,
)
from buttermilk.batch.planner import Plan, plan_records
from buttermilk.domain import (
    BatchInfo,
    BatchRequest,
    BatchStatus,
    BatchSummary,
    CombinationProgress,
    JobStatus,
    combination_progress,
)
from buttermilk.domain.evaluation import EvaluationSpec, RecordAgreement, Report
from buttermilk.errors import (
    DataSourceError,
    EndpointUnreachableError,
    EvaluationError,
    QueueError,
    VariantError,
)
from buttermilk.evaluation.spec import check_label_agent, spec_for
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner
from buttermilk.flows.sources import check_sources
from buttermilk.queue.base import JobMessage, Queue
from buttermilk.records import Record
from buttermilk.store.endpoints import endpoints_down
from buttermilk.store.store import Store

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 5_000
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


class BatchService:
    """Create, inspect, cancel, retry and export batches over one store and one queue."""

    def __init__(self, store: Store, queue: Queue, flows: FlowCatalog) -> None:
        self.store = store
        self.queue = queue
        self.flows = flows

    # -- create --------------------------------------------------------------------

    def _prepare(self, request: BatchRequest) -> tuple[FlowConfig, Grid, Plan]:
        flow = self.flows.get(request.flow)
        if request.evaluate is not None:
            check_label_agent(request.evaluate, flow, "evaluate")
        check_sources(flow)
        FlowRunner(flow)  # fail now, not on every worker, if an agent cannot be set up
        grid = grid_for(flow, request)  # each combination's agents too
        plan = plan_records(
            flow, shuffle=request.shuffle, max_records=request.max_records, seed=request.seed
        )
        if not plan.records:
            raise DataSourceError(f"flow {flow.name!r}: its data sources hold no records")
        check_size(grid, len(plan.records))
        check_record_sizes(plan.records, self.queue.max_record_bytes, self.queue.name)
        return flow, grid, plan

    async def create(self, request: BatchRequest, *, check_endpoints: bool = False) -> Created:
        """Plan the batch, store it with its jobs, then publish one message per job.

        With ``check_endpoints``, every LLM endpoint the flow uses (under each combination)
        is checked first, and EndpointUnreachableError (one line per endpoint, joined)
        raised, with nothing created, when one cannot be reached or refuses its key; each
        one that answers has its structured-output modes probed and remembered in this
        process (:func:`~buttermilk.llm.endpoints.probe_modes`). If publishing fails,
        the batch is deleted again (messages already sent then point to no batch, and
        workers drop them). If this process dies while publishing, the batch stays
        unpublished and ``retry`` finishes it.
        """
        flow, grid, plan = await anyio.to_thread.run_sync(self._prepare, request)
        if check_endpoints:
            problems = await self._unreachable(flow, grid)
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
        await self.queue.prepare(interactive=request.interactive)
        batch = await anyio.to_thread.run_sync(
            lambda: self.store.create_batch(
                batch_id=new_batch_id(),
                request=grid.resolved(request),
                flow_snapshot=flow.snapshot(),
                seed=plan.seed,
                records=plan.records,
                variants=grid.keys,
            )
        )
        try:
            await self._publish(planned_messages(batch, plan.records, grid.keys))
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.store.delete_batch, batch.id)
            if isinstance(exc, Exception) and not isinstance(exc, QueueError):
                raise QueueError(
                    f"publishing batch {batch.id} failed, so it was removed: {exc}"
                ) from exc
            raise
        await anyio.to_thread.run_sync(self._published, batch.id)
        return Created(batch=batch.model_copy(update={"published": True}), rows_read=plan.rows_read)

    async def unreachable_endpoints(self, request: BatchRequest) -> builtins.list[str]:
        """What is wrong with each LLM endpoint the batch ``request`` would use that cannot be
        reached or refuses its key (one line each, naming it and how to point elsewhere);
        empty when all answer. Raises what create raises for an unusable flow or axes."""

        def prepare() -> tuple[FlowConfig, Grid]:
            flow = self.flows.get(request.flow)
            return flow, grid_for(flow, request)

        return await self._unreachable(*await anyio.to_thread.run_sync(prepare))

    async def _unreachable(self, flow: FlowConfig, grid: Grid) -> builtins.list[str]:
        from buttermilk.llm.endpoints import check_endpoints, describe, flow_endpoints, probe_modes

        endpoints = flow_endpoints(flow, grid.combinations)
        found = await check_endpoints(endpoints, probe=probe_modes)  # and learn their modes
        return [describe(e, problem) for e, problem in found]

    def _published(self, batch_id: str) -> None:
        self.store.mark_published(batch_id)
        self.store.complete_if_done(batch_id)  # in case workers finished every job already

    async def _publish(self, messages: Iterator[JobMessage]) -> None:
        while chunk := list(itertools.islice(messages, PUBLISH_CHUNK)):
            await self.queue.publish(chunk)

    # -- read ----------------------------------------------------------------------

    def resolve(self, batch_id: str | None) -> str:
        return self.store.resolve_id(batch_id or "")

    async def summary(self, batch_id: str, *, per_combination: bool = True) -> BatchSummary:
        """A batch with its counts and most common errors (``batch_id`` may be a prefix),
        and, with ``per_combination``, its counts per combination (a batch of several
        combinations: one more grouped read of its jobs; callers that poll leave it out)."""
        return await anyio.to_thread.run_sync(self._summary, batch_id, per_combination)

    def _summary(self, batch_id: str, per_combination: bool = True) -> BatchSummary:
        full_id = self.store.resolve_id(batch_id)
        batch = self.store.get_batch(full_id)
        counts = self.store.job_counts([full_id])[full_id]
        # A job whose worker was lost on its last try fails now (on Pub/Sub its message is
        # gone, so no claim would ever end it); the batch may complete with it.
        live = batch.status in (BatchStatus.PENDING, BatchStatus.RUNNING)
        if live and counts.get(JobStatus.RUNNING) and self.store.fail_lost_jobs([full_id]):
            batch = self.store.get_batch(full_id)
            counts = self.store.job_counts([full_id])[full_id]
        open_jobs = counts.get(JobStatus.PENDING, 0) + counts.get(JobStatus.RUNNING, 0)
        # Only then a write: status is polled while workers run, and must not take the
        # writer's lock each time. (A worker died before marking the batch completed.)
        stale = batch.status == BatchStatus.RUNNING and not open_jobs
        if stale and self.store.complete_if_done(full_id):
            batch = self.store.get_batch(full_id)
        errors = self.store.common_errors(full_id) if counts.get(JobStatus.FAILED) else []
        combinations = self._per_combination(batch, counts) if per_combination else None
        live = batch.status in (BatchStatus.PENDING, BatchStatus.RUNNING)
        return BatchSummary(
            batch=batch,
            counts=counts,
            common_errors=errors,
            now=time.time(),
            combinations=combinations,
            endpoints_down=endpoints_down(self.store, full_id) if live else [],
        )

    def _per_combination(
        self, batch: BatchInfo, counts: dict[JobStatus, int]
    ) -> list[CombinationProgress]:
        planned = batch.combinations()
        if len(planned) == 1 and batch.request_error is None:
            by_variant = {planned[0].key: counts}  # its counts are the batch's: no read
        else:
            by_variant = self.store.variant_counts(batch.id)
        return combination_progress(planned, by_variant)

    async def list(
        self,
        *,
        status: BatchStatus | None = None,
        flow: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[BatchSummary]:
        """Batches, newest first, each with its job counts."""

        def work() -> list[BatchSummary]:
            found = self.store.list_batches(status=status, flow=flow, limit=limit, offset=offset)
            counts = self.store.job_counts([b.id for b in found])
            now = time.time()
            return [BatchSummary(batch=b, counts=counts[b.id], now=now) for b in found]

        return await anyio.to_thread.run_sync(work)

    # -- evaluate ------------------------------------------------------------------

    async def report(
        self, batch_ids: Sequence[str], evaluate: EvaluationSpec | None = None
    ) -> Report:
        """Scores of one batch, or of several batches of one flow, against their truth.

        ``batch_ids`` may be unique prefixes. The spec is ``evaluate``, else each batch's
        request's, else its flow's. Figures cover the jobs finished so far (``live`` while
        a batch has not ended). Raises UnknownBatchError for an id that names no batch (or
        several), EvaluationError when nothing declares what to score, the label names no
        agent of the flow, the batches are of different flows, or the labels cannot be
        scored as the kind says; StoreError when the store cannot be read.
        """
        return await anyio.to_thread.run_sync(self._report, list(batch_ids), evaluate)

    def _batches_and_spec(
        self, batch_ids: Sequence[str], evaluate: EvaluationSpec | None
    ) -> tuple[Sequence[BatchInfo], EvaluationSpec]:
        if not batch_ids:
            raise EvaluationError("a report needs at least one batch id")
        full_ids = list(dict.fromkeys(self.store.resolve_id(bid) for bid in batch_ids))
        batches = [self.store.get_batch(full_id) for full_id in full_ids]
        flows = sorted({batch.flow for batch in batches})
        if len(flows) > 1:
            raise EvaluationError(
                f"batches of different flows ({', '.join(flows)}) cannot be reported together: "
                "give batches of one flow"
            )
        return batches, spec_for(batches, evaluate)

    def _report(self, batch_ids: Sequence[str], evaluate: EvaluationSpec | None) -> Report:
        from buttermilk.evaluation.report import build_report

        batches, spec = self._batches_and_spec(batch_ids, evaluate)
        rows = [job for batch in batches for job in self.store.scored_jobs(batch.id, spec)]
        return build_report(batches, spec, rows)

    async def record_agreements(
        self, batch_id: str, evaluate: EvaluationSpec | None = None
    ) -> builtins.list[RecordAgreement]:
        """Each record of the batch (``batch_id`` may be a prefix) with its majority
        answer, its stability across combinations and repeats and whether some answer
        disagrees with its truth, in planned order. Raises as :meth:`report` does."""

        def work() -> builtins.list[RecordAgreement]:
            from buttermilk.evaluation.report import record_agreements

            batches, spec = self._batches_and_spec([batch_id], evaluate)
            return record_agreements(spec, list(self.store.scored_jobs(batches[0].id, spec)))

        return await anyio.to_thread.run_sync(work)

    # -- change --------------------------------------------------------------------

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Cancel a live batch: no job of it starts any more, running ones stop within seconds."""
        full_id = await anyio.to_thread.run_sync(self.store.resolve_id, batch_id)
        return await anyio.to_thread.run_sync(self.store.cancel, full_id)

    async def retry(
        self, batch_id: str, *, variant: str | None = None, option: str = "batch.variant"
    ) -> tuple[BatchInfo, int]:
        """Requeue every job of the batch (of one combination: ``variant``, its key) that
        did not complete; returns how many. Raises VariantError for a key the batch lacks
        (naming it as ``option``, the caller's name for it), BatchStateError when there is
        nothing to retry."""
        full_id = await anyio.to_thread.run_sync(self.store.resolve_id, batch_id)
        batch = await anyio.to_thread.run_sync(self.store.get_batch, full_id)
        if variant is not None:
            keys = [c.key for c in batch.combinations()]
            if variant not in keys:
                raise VariantError(
                    f"{option}={variant!r}: batch {full_id} has no such combination "
                    f"(its combinations: {', '.join(keys)})"
                )
        await self.queue.prepare(interactive=batch.interactive)
        requeued = await anyio.to_thread.run_sync(
            lambda: self.store.requeue(full_id, variant=variant)
        )
        await self._publish(requeued_messages(requeued.batch, requeued.jobs))
        await anyio.to_thread.run_sync(self._published, full_id)
        return requeued.batch, len(requeued.jobs)

    async def export(self, batch_id: str, path: Path) -> int:
        """Write the batch's jobs (results and errors) to ``path``; returns the row count."""
        full_id = await anyio.to_thread.run_sync(self.store.resolve_id, batch_id)
        return await anyio.to_thread.run_sync(export_jobs, self.store, full_id, path)
