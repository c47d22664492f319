"""The commands that only read batches: list, status, and report (scores)."""

from __future__ import annotations

from buttermilk.runner import render
from buttermilk.runner.command_app import EXIT_OK, App, batch_or_newest, show_summary


async def list_batches(app: App) -> int:
    b = app.settings.batch
    summaries = await app.service.list(status=b.status, flow=app.settings.flow_name, limit=b.limit)
    if app.json:
        render.print_json([s.as_json() for s in summaries])
    else:
        render.stdout_console().print(render.list_view(summaries))
    return EXIT_OK


async def status(app: App) -> int:
    show_summary(app, await app.service.summary(batch_or_newest(app, "status")))
    return EXIT_OK


async def report(app: App) -> int:
    """Scores against the ground truth, agreement and comparisons (see report_command)."""
    from buttermilk.runner.report_command import report as run_report  # the statistics

    return await run_report(app)
