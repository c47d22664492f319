"""Running jobs in this process: ``batch.command=run`` (a worker), and working and
following one batch until it ends (create or retry with ``batch.wait=true``)."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from buttermilk.domain import BatchStatus, BatchSummary, JobStatus
from buttermilk.errors import UsageError
from buttermilk.runner import render
from buttermilk.runner.command_app import (
    EXIT_BATCH_DID_NOT_COMPLETE,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    App,
    export_output,
    show_summary,
)
from buttermilk.stopping import hard_stop as end_shielded_waits

if TYPE_CHECKING:
    from buttermilk.batch.worker_options import WorkerStats
    from buttermilk.runner.console import TerminalConsole

log = logging.getLogger("buttermilk")


async def _watch_signals(on_first: Callable[[], None], hard_stop: anyio.CancelScope) -> None:
    """First SIGINT/SIGTERM: ``on_first`` (graceful); second: cancel ``hard_stop``."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        first = True
        async for signum in signals:
            name = signal.Signals(signum).name
            if first:
                first = False
                log.warning("%s: stopping gracefully (send it again to stop at once)", name)
                on_first()
            else:
                log.warning("%s again: stopping now", name)
                hard_stop.cancel()
                end_shielded_waits()  # e.g. calls of cancelled jobs awaiting paid answers
                return


def console_for(interactive: bool) -> TerminalConsole | None:
    """The console an interactive worker asks its questions on (None when not
    interactive); UsageError when stdin is not a terminal."""
    if not interactive:
        return None
    if not sys.stdin.isatty():
        raise UsageError(
            "batch.interactive=true needs a person at a console, but stdin is not a terminal"
        )
    from buttermilk.runner.console import TerminalConsole  # rich's panels: only for a worker

    return TerminalConsole()


async def work_batch(
    app: App,
    batch_id: str,
    *,
    interactive: bool = False,
    signals: bool = True,
    bar: bool | None = None,
) -> BatchSummary | None:
    """Follow a batch until it ends, working it in this process too; returns its final
    summary, or None when stopped first (a signal, or this task cancelled).

    A queue that cannot keep to one batch's messages (Pub/Sub) may hand this process jobs
    of other batches too: it runs them like any worker, and stops once this batch ends.
    ``signals``: the first SIGINT/SIGTERM stops gracefully (main thread only). ``bar``: a
    progress bar on stderr (None: on a terminal).
    """
    options = app.settings.batch.worker_options(batch_id=batch_id, interactive=interactive)
    from buttermilk.batch.worker import Worker  # the worker and its flows: only to run jobs
    from buttermilk.runner.progress import follow_batch

    worker = Worker(app.store, app.queue, options, console=console_for(interactive))
    summary: BatchSummary | None = None
    follow = anyio.CancelScope()

    def stop() -> None:
        follow.cancel()
        worker.stop()

    async with anyio.create_task_group() as tg:
        if signals:
            tg.start_soon(_watch_signals, stop, tg.cancel_scope)
        async with anyio.create_task_group() as work:
            work.start_soon(worker.run)  # it stops by itself once the batch has ended
            with follow:
                summary = await follow_batch(app.service, batch_id, live=not interactive, bar=bar)
            worker.stop()
        tg.cancel_scope.cancel()
    return summary


async def wait_for(app: App, batch_id: str, interactive: bool) -> int:
    """Work and follow a batch until it ends (:func:`work_batch`), then show it, export
    it when asked, and say how it ended; returns the exit code."""
    summary = await work_batch(app, batch_id, interactive=interactive)
    if summary is None:
        log.warning(
            "stopped waiting; batch %s goes on: run workers with ui=batch batch.command=run",
            batch_id,
        )
        return EXIT_INTERRUPTED
    show_summary(app, summary)
    await export_output(app, batch_id)
    return _ended(summary)


def _ended(summary: BatchSummary) -> int:
    """Say how a batch waited on ended, in the last line; returns the exit code: 0 when
    every job completed, EXIT_JOBS_FAILED when it completed with failed jobs, 1 when the
    batch failed or was cancelled."""
    batch = summary.batch
    counts = summary.counts
    completed = counts.get(JobStatus.COMPLETED, 0)
    line = f"batch {batch.id} {batch.status.value}: {completed} of {batch.total} jobs completed"
    for status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PENDING, JobStatus.RUNNING):
        if counts.get(status):
            line += f", {counts[status]} {status.value}"
    if batch.status != BatchStatus.COMPLETED:
        log.warning("%s", line + (f" ({batch.error})" if batch.error else ""))
        return EXIT_BATCH_DID_NOT_COMPLETE
    if counts.get(JobStatus.FAILED):
        log.warning("%s", line)
        return EXIT_JOBS_FAILED
    log.info("%s", line)
    return EXIT_OK


async def run(app: App) -> int:
    options = app.settings.batch.worker_options()
    from buttermilk.batch.worker import Worker  # the worker and its flows: only to run jobs
    from buttermilk.runner.progress import show_worker, worker_line

    worker = Worker(app.store, app.queue, options, console=console_for(options.interactive))
    idle = (
        f"stops after {options.idle_timeout:g}s idle"
        if options.idle_timeout is not None
        else "runs until stopped"
    )
    log.info(
        "worker %s: taking %sjobs from the %s queue, up to %d at once; %s",
        worker.name,
        "interactive " if options.interactive else "",
        app.queue.name,
        options.concurrency,
        idle,
    )
    stats: WorkerStats | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_signals, worker.stop, tg.cancel_scope)
        tg.start_soon(show_worker, worker)
        stats = await worker.run()
        tg.cancel_scope.cancel()
    if stats is None:
        return EXIT_INTERRUPTED
    line = f"worker finished in {render.duration(stats.elapsed)}: {worker_line(stats, 0)}"
    if app.json:
        render.print_json(
            {
                "worker": worker.name,
                "elapsed": stats.elapsed,
                "completed": stats.completed,
                "failed": stats.failed,
                "retried": stats.retried,
                "cancelled": stats.cancelled,
                "taken_over": stats.taken_over,
                "skipped": stats.skipped,
                "malformed": stats.malformed,
                "rate": stats.rate,
                "active": stats.active,
            }
        )
    else:
        print(line)
    return EXIT_OK
