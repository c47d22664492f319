"""Live progress for ``run`` (a worker's counts) and ``wait`` (a batch's counts).

On a terminal: a live bar or line on stderr. Otherwise (pipes, CI): a log line every
few seconds, so logs stay readable.
"""

from __future__ import annotations

import logging
import sys
import time

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from buttermilk.batch.outage import Outage
from buttermilk.batch.service import BatchService
from buttermilk.batch.storelink import unreachable_store
from buttermilk.batch.worker import Worker, WorkerStats
from buttermilk.domain import BatchSummary, JobStatus
from buttermilk.runner.render import progress_line, rate

log = logging.getLogger("buttermilk")

POLL = 0.5
POLL_LAST = 0.05  # near the end: no job pending, and jobs ending between two looks


def _pause(summary: BatchSummary, before: BatchSummary | None) -> float:
    """Seconds until the next look at a batch: POLL, or sooner (but not under POLL_LAST)
    when its rate says it ends before then, or once no job is pending and jobs are still
    ending; so the command returns soon after the batch ends rather than up to POLL later
    (slow jobs that end seldom are looked at every POLL, as before)."""
    eta = summary.eta
    if eta is not None and eta < POLL:
        return max(POLL_LAST, eta)
    ending = before is not None and summary.done > before.done
    return POLL_LAST if ending and not summary.counts.get(JobStatus.PENDING) else POLL


LOG_EVERY = 5.0


def worker_line(stats: WorkerStats, held: int) -> str:
    # Outcomes dropped because another worker took the job over count apart, if any.
    taken = f"{stats.taken_over} taken over by other workers, " if stats.taken_over else ""
    return (
        f"{stats.completed} completed, {stats.failed} failed, {stats.retried} retried, "
        f"{taken}{held} in hand, rate {rate(stats.rate)}"
    )


async def show_worker(worker: Worker) -> None:
    """Show the worker's counts until cancelled.

    A live line on a terminal; plain log lines elsewhere, and for interactive workers,
    whose questions to the person must not be redrawn over.
    """
    if sys.stderr.isatty() and worker.console is None:
        console = Console(stderr=True)
        with console.status("") as status:
            while True:
                status.update(f"worker {worker.name}: {worker_line(worker.stats, worker.held)}")
                await anyio.sleep(POLL)
    last = time.monotonic()
    while True:
        await anyio.sleep(POLL)
        if time.monotonic() - last >= LOG_EVERY:
            last = time.monotonic()
            log.info("progress: %s", worker_line(worker.stats, worker.held))


async def _poll(
    service: BatchService, batch_id: str, outage: Outage, *, per_combination: bool = False
) -> BatchSummary:
    """The batch's summary, waiting out a store that cannot be reached (said once)."""
    while True:
        try:
            summary = await service.summary(batch_id, per_combination=per_combination)
        except Exception as exc:
            error = unreachable_store(exc, service.store.safe_url)
            if error is None:
                raise
            outage.failed(error)
            await outage.pause()
            continue
        outage.recovered()
        return summary


async def follow_batch(
    service: BatchService, batch_id: str, *, live: bool = True, bar: bool | None = None
) -> BatchSummary:
    """Show the batch's progress until it ends; returns its final summary.

    ``live=False`` logs lines instead of drawing a bar (a person answers questions here).
    ``bar``: draw a rich progress bar (a notebook renders it too); None: on a terminal.
    """
    outage = Outage(
        f"cannot read the status of batch {batch_id}: {{error}}; retrying with backoff",
        f"reading the status of batch {batch_id} again, after {{seconds:.0f}}s",
    )
    summary = await _poll(service, batch_id, outage)
    before: BatchSummary | None = None
    if live and (sys.stderr.isatty() if bar is None else bar):
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(stderr=True), transient=False) as shown:
            task = shown.add_task(f"batch {batch_id}", total=summary.batch.total, failed=0)
            while True:
                shown.update(
                    task, completed=summary.done, failed=summary.counts.get(JobStatus.FAILED, 0)
                )
                if summary.batch.status.ended:
                    return await _poll(service, batch_id, outage, per_combination=True)
                await anyio.sleep(_pause(summary, before))
                before, summary = summary, await _poll(service, batch_id, outage)
    last = time.monotonic()
    while not summary.batch.status.ended:
        await anyio.sleep(_pause(summary, before))
        before, summary = summary, await _poll(service, batch_id, outage)
        if time.monotonic() - last >= LOG_EVERY:
            last = time.monotonic()
            log.info("batch %s: %s", batch_id, progress_line(summary))
    # Polls leave out the counts per combination (a read of every job); the end has them.
    return await _poll(service, batch_id, outage, per_combination=True)
