"""One function per ``batch.command``; each returns the process exit code.

Results go to stdout (tables, or JSON with ``batch.format=json``); progress and logs go
to stderr.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from buttermilk.batch.export import check_output
from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchStatus, BatchSummary, JobStatus
from buttermilk.errors import ButtermilkError, InvalidOptionError, UnknownFlowError, UsageError
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.queue import Queue, open_queue
from buttermilk.runner import render
from buttermilk.runner.settings import AppSettings, BatchSettings, Command
from buttermilk.store import open_store

if TYPE_CHECKING:
    from buttermilk.batch.worker_options import WorkerStats
    from buttermilk.runner.console import TerminalConsole
    from buttermilk.store import Store

log = logging.getLogger("buttermilk")

EXIT_OK = 0
EXIT_BATCH_DID_NOT_COMPLETE = 1
EXIT_JOBS_FAILED = 3  # a batch waited on completed, but some of its jobs failed
EXIT_INTERRUPTED = 130


@dataclass
class App:
    settings: AppSettings
    store: Store
    queue: Queue
    service: BatchService

    @property
    def json(self) -> bool:
        return self.settings.batch.format == "json"


@asynccontextmanager
async def open_app(settings: AppSettings, flows: FlowCatalog) -> AsyncIterator[App]:
    store = open_store(settings.store)
    try:
        async with open_queue(settings.queue) as queue:
            yield App(settings, store, queue, BatchService(store, queue, flows))
    finally:
        store.close()


def choose_command(settings: AppSettings) -> Command:
    if settings.batch.command is not None:
        return settings.batch.command
    if settings.flow_name:
        # Debug: a refused create must print only its error line.
        log.debug(
            "no batch.command given and a flow is named: creating a batch (batch.command=create)"
        )
        return "create"
    log.debug("no batch.command given and no flow named: running jobs (batch.command=run)")
    return "run"


WRITES_OUTPUT = ("export", "report")
WRITES_OUTPUT_WHEN_WAITING = ("create", "retry")


def check_output_use(command: Command, batch: BatchSettings) -> None:
    """Refuse a ``batch.output`` the command would not write (never ignore it silently)."""
    output, wait = batch.output, batch.wait
    if output is not None and command in WRITES_OUTPUT and batch.format == "json":
        raise InvalidOptionError(
            "batch.format",
            batch.format,
            f"batch.command={command} writes batch.output={str(output)!r} in the format its "
            "extension names; batch.format=json is for stdout: leave one of them out",
        )
    if (
        output is None
        or command in WRITES_OUTPUT
        or (command in WRITES_OUTPUT_WHEN_WAITING and wait)
    ):
        return
    if command in WRITES_OUTPUT_WHEN_WAITING:
        reason = (
            f"batch.command={command} writes it only with batch.wait=true (or export the "
            "batch once it ended, with batch.command=export)"
        )
    else:
        reason = (
            f"batch.command={command} writes no file (batch.output is for export and report, "
            "and for create or retry with batch.wait=true)"
        )
    raise InvalidOptionError("batch.output", str(output), reason)


def check_report_options(command: Command, batch: BatchSettings) -> None:
    """Refuse ``batch.batch_ids`` and ``batch.evaluate`` where they would be ignored."""
    if batch.batch_ids is not None and command != "report":
        raise InvalidOptionError(
            "batch.batch_ids",
            batch.batch_ids,
            f"batch.command={command} works on one batch (batch.batch_id); batch.batch_ids "
            "is for report (line up several batches of one flow)",
        )
    if batch.evaluate is not None and command not in TAKES_EVALUATE:
        raise InvalidOptionError(
            "batch.evaluate",
            batch.evaluate,
            f"batch.command={command} scores nothing; batch.evaluate is for report (and "
            "create, which stores it with the batch)",
        )


TAKES_EVALUATE = ("report", "create", "estimate")


def check_variant_use(command: Command, batch: BatchSettings) -> None:
    """Refuse ``batch.variant`` for a command that would ignore it (only retry takes it)."""
    if batch.variant is not None and command != "retry":
        raise InvalidOptionError(
            "batch.variant",
            batch.variant,
            f"batch.command={command} works on every combination of a batch; batch.variant "
            "is for retry (retry one combination's jobs)",
        )


async def dispatch(settings: AppSettings, flows: FlowCatalog) -> int:
    """Run the chosen command; returns its exit code.

    An error raised inside a task group reaches here wrapped in an ExceptionGroup: the
    error itself is raised instead, so that the CLI can report it in one line.
    """
    command = choose_command(settings)
    check_output_use(command, settings.batch)
    check_variant_use(command, settings.batch)
    check_report_options(command, settings.batch)
    try:
        async with open_app(settings, flows) as app:
            return await COMMANDS[command](app)
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error in a (nested) exception group, or the first of ours among several;
    the group itself when neither fits."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        found = pending.pop(0)
        if isinstance(found, BaseExceptionGroup):
            pending[:0] = found.exceptions
        else:
            leaves.append(found)
    if len(leaves) == 1:
        return leaves[0]
    ours = [e for e in leaves if isinstance(e, ButtermilkError)]
    return ours[0] if ours else group


# -- helpers -----------------------------------------------------------------------


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
                return


def _console_for(interactive: bool) -> TerminalConsole | None:
    if not interactive:
        return None
    if not sys.stdin.isatty():
        raise UsageError(
            "batch.interactive=true needs a person at a console, but stdin is not a terminal"
        )
    from buttermilk.runner.console import TerminalConsole  # rich's panels: only for a worker

    return TerminalConsole()


def _batch_id(app: App, command: str) -> str:
    given = app.settings.batch.batch_id
    if not given:
        raise UsageError(
            f"batch.command={command} needs batch.batch_id=ID (a unique prefix is enough)"
        )
    return app.store.resolve_id(given)


def _show_summary(app: App, summary: BatchSummary) -> None:
    if app.json:
        render.print_json(summary.as_json())
    else:
        render.stdout_console().print(render.status_view(summary))


async def _export(app: App, batch_id: str) -> None:
    output = app.settings.batch.output
    if output is not None:
        rows = await app.service.export(batch_id, output)
        log.info("wrote %d rows to %s", rows, output.resolve())


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

    worker = Worker(app.store, app.queue, options, console=_console_for(interactive))
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


async def _wait(app: App, batch_id: str, interactive: bool) -> int:
    """Work and follow a batch until it ends (:func:`work_batch`), then show it, export
    it when asked, and say how it ended."""
    summary = await work_batch(app, batch_id, interactive=interactive)
    if summary is None:
        log.warning(
            "stopped waiting; batch %s goes on: run workers with ui=batch batch.command=run",
            batch_id,
        )
        return EXIT_INTERRUPTED
    _show_summary(app, summary)
    await _export(app, batch_id)
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


# -- commands ----------------------------------------------------------------------


async def create(app: App) -> int:
    settings = app.settings
    flow = settings.flow_name
    if not flow:
        raise UnknownFlowError(None, app.service.flows.names())
    request = settings.batch.to_request(flow)
    if settings.batch.output is not None:
        check_output(settings.batch.output)
    wait_console = settings.batch.wait and request.interactive
    if wait_console:
        _console_for(True)  # fail before creating anything
    created = await app.service.create(request, check_endpoints=settings.batch.check_endpoints)
    batch = created.batch
    log.info(
        "created batch %s: %d jobs of flow %s (%d records read; queue %s)",
        batch.id,
        batch.total,
        batch.flow,
        created.rows_read,
        app.queue.name,
    )
    if settings.batch.wait:
        return await _wait(app, batch.id, request.interactive)
    if app.json:
        render.print_json((await app.service.summary(batch.id)).as_json())
    else:
        print(batch.id)
        worker_hint = "ui=batch batch.interactive=true" if request.interactive else "ui=batch"
        log.info("run workers with: python -m buttermilk.runner.cli %s", worker_hint)
        log.info(
            "follow it with:   python -m buttermilk.runner.cli ui=batch batch.command=status "
            "batch.batch_id=%s",
            batch.id,
        )
    return EXIT_OK


async def run(app: App) -> int:
    options = app.settings.batch.worker_options()
    from buttermilk.batch.worker import Worker  # the worker and its flows: only to run jobs
    from buttermilk.runner.progress import show_worker, worker_line

    worker = Worker(app.store, app.queue, options, console=_console_for(options.interactive))
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


async def list_batches(app: App) -> int:
    b = app.settings.batch
    summaries = await app.service.list(status=b.status, flow=app.settings.flow_name, limit=b.limit)
    if app.json:
        render.print_json([s.as_json() for s in summaries])
    else:
        render.stdout_console().print(render.list_view(summaries))
    return EXIT_OK


def batch_or_newest(app: App, command: str) -> str:
    """The full id of ``batch.batch_id`` (a unique prefix), or of the newest batch."""
    if app.settings.batch.batch_id:
        return _batch_id(app, command)
    newest = app.store.list_batches(limit=1)
    if not newest:
        raise UsageError("there are no batches yet: create one with ui=batch flow=NAME")
    log.info("no batch.batch_id given: showing the newest batch, %s", newest[0].id)
    return newest[0].id


async def status(app: App) -> int:
    _show_summary(app, await app.service.summary(batch_or_newest(app, "status")))
    return EXIT_OK


async def cancel(app: App) -> int:
    batch_id = _batch_id(app, "cancel")
    before = app.store.get_batch(batch_id).status
    batch = await app.service.cancel(batch_id)
    if before == BatchStatus.CANCELLED:
        log.info("batch %s was already cancelled", batch_id)
    else:
        log.info(
            "cancelled batch %s (was %s); its running jobs stop within seconds",
            batch_id,
            before.value,
        )
    if app.json:
        render.print_json((await app.service.summary(batch.id)).as_json())
    return EXIT_OK


async def retry(app: App) -> int:
    batch_id = _batch_id(app, "retry")
    batch, count = await app.service.retry(batch_id, variant=app.settings.batch.variant)
    log.info(
        "requeued %d jobs of batch %s (failed, cancelled, pending, or left running by a dead "
        "worker) and published them; a job whose old message is still queued runs once",
        count,
        batch_id,
    )
    if app.settings.batch.wait:
        return await _wait(app, batch_id, batch.interactive)
    if app.json:
        render.print_json((await app.service.summary(batch_id)).as_json())
    return EXIT_OK


async def export(app: App) -> int:
    batch_id = _batch_id(app, "export")
    if app.settings.batch.output is None:
        raise UsageError("batch.command=export needs batch.output=PATH (.jsonl, .csv or .parquet)")
    check_output(app.settings.batch.output)
    await _export(app, batch_id)
    return EXIT_OK


async def estimate(app: App) -> int:
    """What a create with these options would send to the flow's LLM agents: calls, input
    tokens and input cost over its whole grid (records x combinations x repeats), per
    combination, without calling a model, storing or publishing anything."""
    flow = app.settings.flow_name
    if not flow:
        raise UnknownFlowError(None, app.service.flows.names())
    request = app.settings.batch.to_request(flow)
    await app.service.check_evaluate(request)  # as create checks it
    from buttermilk.llm.estimate import estimate_batch  # the OpenAI client: only when used
    from buttermilk.runner.estimate_view import estimate_view

    found = await anyio.to_thread.run_sync(
        estimate_batch, app.service.flows, request, app.service.store
    )
    if app.settings.batch.check_endpoints:
        for problem in await app.service.unreachable_endpoints(request):
            log.warning("%s", problem)
    if app.json:
        render.print_json(found.as_json())
    else:
        render.stdout_console().print(estimate_view(found))
    if request.seed is None and request.shuffle:
        log.info(
            "planned with seed %d: create the same batch with batch.seed=%d",
            found.seed,
            found.seed,
        )
    return EXIT_OK


async def report(app: App) -> int:
    """Scores against the ground truth, agreement and comparisons (see report_command)."""
    from buttermilk.runner.report_command import report as run_report  # the statistics

    return await run_report(app)


COMMANDS: dict[str, Callable[[App], Awaitable[int]]] = {
    "create": create,
    "run": run,
    "list": list_batches,
    "status": status,
    "cancel": cancel,
    "retry": retry,
    "export": export,
    "estimate": estimate,
    "report": report,
}
