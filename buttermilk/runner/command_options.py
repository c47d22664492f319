"""Refusing options a command would ignore (never ignore one silently)."""

from __future__ import annotations

from buttermilk.errors import InvalidOptionError
from buttermilk.runner.settings import BatchSettings, Command

WRITES_OUTPUT = ("export", "report")
WRITES_OUTPUT_WHEN_WAITING = ("create", "retry")
TAKES_EVALUATE = ("report", "create", "estimate")
TAKES_BATCH_ID = ("status", "cancel", "retry", "export", "report")


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


def check_variant_use(command: Command, batch: BatchSettings) -> None:
    """Refuse ``batch.variant`` for a command that would ignore it (only retry takes it)."""
    if batch.variant is not None and command != "retry":
        raise InvalidOptionError(
            "batch.variant",
            batch.variant,
            f"batch.command={command} works on every combination of a batch; batch.variant "
            "is for retry (retry one combination's jobs)",
        )


def check_batch_id_use(command: Command, batch: BatchSettings) -> None:
    """Refuse ``batch.batch_id`` for a command that would ignore it: ``run`` takes the
    jobs of every batch its queue carries, ``create`` and ``estimate`` make a new one,
    ``list`` shows them all."""
    if batch.batch_id is not None and command not in TAKES_BATCH_ID:
        uses = ", ".join(TAKES_BATCH_ID)
        raise InvalidOptionError(
            "batch.batch_id",
            batch.batch_id,
            f"batch.command={command} does not work on one given batch; batch.batch_id is "
            f"for {uses} (to work one batch to its end: create it with batch.wait=true)",
        )
