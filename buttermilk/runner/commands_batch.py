"""The commands that create or change a batch: create, cancel, retry, export, and
estimate (what a create would cost, without creating anything)."""

from __future__ import annotations

import logging

import anyio

from buttermilk.domain import BatchStatus
from buttermilk.errors import UnknownFlowError, UsageError
from buttermilk.runner import render
from buttermilk.runner.command_app import EXIT_OK, App, batch_id_given, export_output
from buttermilk.runner.commands_work import console_for, wait_for

log = logging.getLogger("buttermilk")


async def create(app: App) -> int:
    settings = app.settings
    flow = settings.flow_name
    if not flow:
        raise UnknownFlowError(None, app.service.flows.names())
    request = settings.batch.to_request(flow)
    if settings.batch.output is not None:
        from buttermilk.batch.export import check_output  # the writers: only with an output

        check_output(settings.batch.output)
    wait_console = settings.batch.wait and request.interactive
    if wait_console:
        console_for(True)  # fail before creating anything
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
        return await wait_for(app, batch.id, request.interactive)
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


async def cancel(app: App) -> int:
    batch_id = batch_id_given(app, "cancel")
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
    batch_id = batch_id_given(app, "retry")
    batch, count = await app.service.retry(batch_id, variant=app.settings.batch.variant)
    log.info(
        "requeued %d jobs of batch %s (failed, cancelled, pending, or left running by a dead "
        "worker) and published them; a job whose old message is still queued runs once",
        count,
        batch_id,
    )
    if app.settings.batch.wait:
        return await wait_for(app, batch_id, batch.interactive)
    if app.json:
        render.print_json((await app.service.summary(batch_id)).as_json())
    return EXIT_OK


async def export(app: App) -> int:
    batch_id = batch_id_given(app, "export")
    if app.settings.batch.output is None:
        raise UsageError("batch.command=export needs batch.output=PATH (.jsonl, .csv or .parquet)")
    from buttermilk.batch.export import check_output  # the writers

    check_output(app.settings.batch.output)
    await export_output(app, batch_id)
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
