"""One function per ``batch.command``, chosen and run by :func:`dispatch`; each returns the
process exit code.

The commands live by what they do: ``commands_batch`` (create, cancel, retry, export,
estimate), ``commands_read`` (list, status, report) and ``commands_work`` (run, and
working a batch until it ends); what they share in ``command_app``, and the checks of
options a command would ignore in ``command_options``.

Results go to stdout (tables, or JSON with ``batch.format=json``); progress and logs go
to stderr.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from buttermilk.errors import ButtermilkError
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.runner.command_app import (
    EXIT_BATCH_DID_NOT_COMPLETE,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OK,
    STORE_ONLY,
    App,
    batch_or_newest,
    open_app,
)
from buttermilk.runner.command_options import (
    check_batch_id_use,
    check_output_use,
    check_report_options,
    check_variant_use,
)
from buttermilk.runner.commands_batch import cancel, create, estimate, export, retry
from buttermilk.runner.commands_read import list_batches, report, status
from buttermilk.runner.commands_work import run, work_batch
from buttermilk.runner.settings import AppSettings, Command

__all__ = [
    "COMMANDS",
    "EXIT_BATCH_DID_NOT_COMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_JOBS_FAILED",
    "EXIT_OK",
    "App",
    "batch_or_newest",
    "check_batch_id_use",
    "check_output_use",
    "check_report_options",
    "check_variant_use",
    "choose_command",
    "dispatch",
    "open_app",
    "work_batch",
]

log = logging.getLogger("buttermilk")


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


async def dispatch(settings: AppSettings, flows: FlowCatalog) -> int:
    """Run the chosen command; returns its exit code.

    An error raised inside a task group reaches here wrapped in an ExceptionGroup: the
    error itself is raised instead, so that the CLI can report it in one line.
    """
    command = choose_command(settings)
    check_output_use(command, settings.batch)
    check_variant_use(command, settings.batch)
    check_report_options(command, settings.batch)
    check_batch_id_use(command, settings.batch)
    try:
        async with open_app(settings, flows, queue=command not in STORE_ONLY) as app:
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
