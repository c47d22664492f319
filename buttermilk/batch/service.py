"""BatchService: every batch operation, shared by the CLI and the HTTP API.

A façade over the modules that own each part: ``creating`` (check, plan, store and
publish), ``publishing``, ``summaries`` (reads), ``reports`` (scores), ``requeue`` (retry)
and ``export``.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from buttermilk.batch.publishing import PUBLISH_CHUNK
from buttermilk.batch.summaries import batch_summary, list_summaries
from buttermilk.domain import BatchInfo, BatchRequest, BatchStatus, BatchSummary
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.queue.base import Queue
from buttermilk.store.store import Store

# What only create, retry, export and report need (the planner, the sources, the flow
# models, the statistics' inputs) is imported where they are called: list and status, the
# commands a person waits on, start without it.
if TYPE_CHECKING:
    from buttermilk.batch.creating import Created
    from buttermilk.batch.grid import Grid
    from buttermilk.domain.evaluation import EvaluationSpec, RecordAgreement, Report
    from buttermilk.flows.models import FlowConfig

__all__ = ["PUBLISH_CHUNK", "BatchService"]


class BatchService:
    """Create, inspect, cancel, retry and export batches over one store and one queue."""

    def __init__(self, store: Store, queue: Queue, flows: FlowCatalog) -> None:
        self.store = store
        self.queue = queue
        self.flows = flows

    # -- create --------------------------------------------------------------------

    async def check_evaluate(self, request: BatchRequest) -> None:
        """Create's check of ``request.evaluate`` alone (estimate makes it too): raises
        UnknownFlowError, or EvaluationError when its label names no agent of the flow."""

        from buttermilk.evaluation.spec import check_request_evaluate

        def check() -> None:
            check_request_evaluate(request, self.flows.get(request.flow))

        await anyio.to_thread.run_sync(check)

    async def create(self, request: BatchRequest, *, check_endpoints: bool = False) -> Created:
        """Plan the batch, store it with its jobs, then publish one message per job.

        With ``check_endpoints``, every LLM endpoint the flow uses (under each combination)
        is checked first, and EndpointUnreachableError (one line per endpoint, joined)
        raised, with nothing created, when one cannot be reached or refuses its key. If
        publishing fails,
        the batch is deleted again (messages already sent then point to no batch, and
        workers drop them). If this process dies while publishing, the batch stays
        unpublished and ``retry`` finishes it.
        """
        from buttermilk.batch.creating import create_batch

        return await create_batch(
            self.store, self.queue, self.flows, request, check_endpoints=check_endpoints
        )

    async def unreachable_endpoints(self, request: BatchRequest) -> builtins.list[str]:
        """What is wrong with each LLM endpoint the batch ``request`` would use that cannot be
        reached or refuses its key (one line each, naming it and how to point elsewhere);
        empty when all answer. Raises what create raises for an unusable flow or axes."""

        from buttermilk.batch.creating import unreachable
        from buttermilk.batch.grid import grid_for

        def prepare() -> tuple[FlowConfig, Grid]:
            flow = self.flows.get(request.flow)
            return flow, grid_for(flow, request)

        return await unreachable(*await anyio.to_thread.run_sync(prepare))

    # -- read ----------------------------------------------------------------------

    def resolve(self, batch_id: str | None) -> str:
        return self.store.resolve_id(batch_id or "")

    async def summary(self, batch_id: str, *, per_combination: bool = True) -> BatchSummary:
        """A batch with its counts and most common errors (``batch_id`` may be a prefix),
        and, with ``per_combination``, its counts per combination (a batch of several
        combinations: one more grouped read of its jobs; callers that poll leave it out)."""
        return await anyio.to_thread.run_sync(batch_summary, self.store, batch_id, per_combination)

    async def list(
        self,
        *,
        status: BatchStatus | None = None,
        flow: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> builtins.list[BatchSummary]:
        """Batches, newest first, each with its job counts."""

        def work() -> builtins.list[BatchSummary]:
            return list_summaries(self.store, status=status, flow=flow, limit=limit, offset=offset)

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
        from buttermilk.batch.reports import batch_report

        ids = builtins.list(batch_ids)
        return await anyio.to_thread.run_sync(batch_report, self.store, ids, evaluate)

    async def record_agreements(
        self, batch_id: str, evaluate: EvaluationSpec | None = None
    ) -> builtins.list[RecordAgreement]:
        """Each record of the batch (``batch_id`` may be a prefix) with its majority
        answer, its stability across combinations and repeats and whether some answer
        disagrees with its truth, in planned order. Raises as :meth:`report` does."""
        from buttermilk.batch.reports import batch_record_agreements

        return await anyio.to_thread.run_sync(
            batch_record_agreements, self.store, batch_id, evaluate
        )

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
        from buttermilk.batch.requeue import retry_batch

        return await retry_batch(self.store, self.queue, batch_id, variant=variant, option=option)

    async def export(self, batch_id: str, path: Path) -> int:
        """Write the batch's jobs (results and errors) to ``path``; returns the row count."""
        from buttermilk.batch.export import export_jobs

        full_id = await anyio.to_thread.run_sync(self.store.resolve_id, batch_id)
        return await anyio.to_thread.run_sync(export_jobs, self.store, full_id, path)
