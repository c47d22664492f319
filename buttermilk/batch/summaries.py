"""Reading batches: one batch's summary (counts, common errors, per combination), and the
list of batches with their counts."""

from __future__ import annotations

import time

from buttermilk.domain import (
    BatchInfo,
    BatchStatus,
    BatchSummary,
    CombinationProgress,
    JobStatus,
    combination_progress,
)
from buttermilk.store.concurrency import levels as concurrency_levels
from buttermilk.store.endpoints import endpoints_down
from buttermilk.store.store import Store


def batch_summary(store: Store, batch_id: str, per_combination: bool = True) -> BatchSummary:
    """``BatchService.summary`` (see there), in the calling thread."""
    full_id = store.resolve_id(batch_id)
    batch = store.get_batch(full_id)
    counts = store.job_counts([full_id])[full_id]
    # A job whose worker was lost on its last try fails now (on Pub/Sub its message is
    # gone, so no claim would ever end it); the batch may complete with it.
    live = batch.status in (BatchStatus.PENDING, BatchStatus.RUNNING)
    if live and counts.get(JobStatus.RUNNING) and store.fail_lost_jobs([full_id]):
        batch = store.get_batch(full_id)
        counts = store.job_counts([full_id])[full_id]
    open_jobs = counts.get(JobStatus.PENDING, 0) + counts.get(JobStatus.RUNNING, 0)
    # Only then a write: status is polled while workers run, and must not take the
    # writer's lock each time. (A worker died before marking the batch completed.)
    stale = batch.status == BatchStatus.RUNNING and not open_jobs
    if stale and store.complete_if_done(full_id):
        batch = store.get_batch(full_id)
    errors = store.common_errors(full_id) if counts.get(JobStatus.FAILED) else []
    combinations = _per_combination(store, batch, counts) if per_combination else None
    live = batch.status in (BatchStatus.PENDING, BatchStatus.RUNNING)
    return BatchSummary(
        batch=batch,
        counts=counts,
        common_errors=errors,
        now=time.time(),
        combinations=combinations,
        endpoints_down=endpoints_down(store, full_id) if live else [],
        concurrency=concurrency_levels(store, full_id) if live else [],
    )


def _per_combination(
    store: Store, batch: BatchInfo, counts: dict[JobStatus, int]
) -> list[CombinationProgress]:
    planned = batch.combinations()
    if len(planned) == 1 and batch.request_error is None:
        by_variant = {planned[0].key: counts}  # its counts are the batch's: no read
    else:
        by_variant = store.variant_counts(batch.id)
    return combination_progress(planned, by_variant)


def list_summaries(
    store: Store, *, status: BatchStatus | None, flow: str | None, limit: int, offset: int
) -> list[BatchSummary]:
    """``BatchService.list`` (see there), in the calling thread."""
    found = store.list_batches(status=status, flow=flow, limit=limit, offset=offset)
    counts = store.job_counts([b.id for b in found])
    now = time.time()
    return [BatchSummary(batch=b, counts=counts[b.id], now=now) for b in found]
