"""``batch.command=report``: score one batch (or several of one flow) against its ground
truth, and show the report as tables, as JSON, or write it to a .json, .csv or .html file.

Imported only when ``report`` runs (the statistics behind it import pandas, scikit-learn,
statsmodels); ``list`` and ``status`` never load it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from buttermilk.batch.export import check_output, export_format, write_atomically
from buttermilk.domain.evaluation import EvaluationSpec, Report
from buttermilk.errors import InvalidOptionError, UsageError
from buttermilk.evaluation.score_rows import write_csv
from buttermilk.runner import render
from buttermilk.runner.commands import EXIT_OK, App, batch_or_newest
from buttermilk.runner.report_view import report_view, summary_line
from buttermilk.runner.settings import BatchSettings, describe_validation_error, did_you_mean

log = logging.getLogger("buttermilk")

REPORT_FORMATS = {".json": "json", ".csv": "csv", ".html": "html"}
HTML_MODULE = "buttermilk.evaluation.html"  # eval-dash's self-contained HTML writer

ReportWriter = Callable[[Report, Path], Any]


def evaluate_override(batch: BatchSettings) -> EvaluationSpec | None:
    """``batch.evaluate`` as a spec (None: the batches' own); UsageError naming the bad
    key and what it allows."""
    raw = batch.evaluate
    if raw is None:
        return None
    known = [f"batch.evaluate.{name}" for name in EvaluationSpec.model_fields]
    for key in raw:  # a typo first: it explains the "required" label that follows from it
        if f"batch.evaluate.{key}" not in known:
            name = f"batch.evaluate.{key}"
            raise UsageError(
                f"{name} is not a known option{did_you_mean(name, known)}; "
                f"batch.evaluate takes {', '.join(EvaluationSpec.model_fields)}"
            )
    try:
        return EvaluationSpec.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, "batch.evaluate.", known)) from None


def report_ids(app: App) -> list[str]:
    """The full ids of the batches to report on: ``batch.batch_ids`` (several, in the
    order given), else ``batch.batch_id`` (a unique prefix), else the newest batch."""
    batch = app.settings.batch
    if batch.batch_ids is None:
        return [batch_or_newest(app, "report")]
    if batch.batch_id:
        raise UsageError(
            f"batch.batch_id={batch.batch_id!r} and batch.batch_ids={batch.batch_ids!r}: give "
            "one batch with batch.batch_id, or several with batch.batch_ids"
        )
    if not batch.batch_ids:
        raise InvalidOptionError(
            "batch.batch_ids", [], "list at least one batch id (or prefix): [k3f9, m2a1]"
        )
    found: list[str] = []
    for given in batch.batch_ids:
        full = app.store.resolve_id(given)
        if full in found:
            raise InvalidOptionError(
                "batch.batch_ids", batch.batch_ids, f"{given!r} names batch {full} twice"
            )
        found.append(full)
    return found


def _write_json(report: Report, path: Path) -> None:
    path.write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))


def _html_writer(path: Path) -> ReportWriter:
    try:
        module: Any = importlib.import_module(HTML_MODULE)
    except ModuleNotFoundError:
        raise InvalidOptionError(
            "batch.output",
            str(path),
            "this installation cannot write HTML reports yet: use a .json or .csv file",
        ) from None
    writer: ReportWriter = module.write_report
    return writer


def report_writer(path: Path) -> ReportWriter:
    """The one place that chooses how a report file is written, by its extension (.json,
    .csv, .html); checks ``path`` can be written first. InvalidOptionError otherwise."""
    check_output(path, REPORT_FORMATS)
    fmt = export_format(path, REPORT_FORMATS)
    if fmt == "html":
        return _html_writer(path)
    return _write_json if fmt == "json" else write_csv


def write_report(report: Report, path: Path) -> None:
    """Write ``report`` to ``path`` whole or not at all (a temporary file, renamed)."""
    writer = report_writer(path)
    write_atomically(path, lambda tmp: writer(report, tmp), REPORT_FORMATS)


async def report(app: App) -> int:
    """Score the batches and show (or write) the report; exit 0. Unknown batches, a bad
    ``batch.evaluate`` and nothing to score are UsageErrors (exit 2)."""
    spec = evaluate_override(app.settings.batch)
    output = app.settings.batch.output
    if output is not None:
        report_writer(output)  # a bad file name fails before any work
    ids = report_ids(app)
    found = await app.service.report(ids, evaluate=spec)
    if output is not None:
        write_report(found, output)
        log.info("%s", summary_line(found))
        log.info("wrote the report to %s", output.expanduser().resolve())
    elif app.json:
        render.print_json(found.model_dump(mode="json"))
    else:
        render.stdout_console().print(report_view(found))
    return EXIT_OK
