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

import anyio
import orjson
from pydantic import ValidationError

from buttermilk.batch.export import check_output, export_format, write_atomically
from buttermilk.domain.evaluation import EvaluationSpec, Report
from buttermilk.errors import InvalidOptionError, UsageError
from buttermilk.evaluation.score_rows import write_csv
from buttermilk.runner import render
from buttermilk.runner.command_app import EXIT_OK, App, batch_or_newest
from buttermilk.runner.report_view import report_view, summary_line
from buttermilk.runner.settings import BatchSettings, describe_validation_error, did_you_mean

log = logging.getLogger("buttermilk")

REPORT_FORMATS = {".json": "json", ".csv": "csv", ".html": "html"}
HTML_MODULE = "buttermilk.evaluation.html"  # eval-dash's self-contained HTML writer

ReportWriter = Callable[[Report, Path, Any], None]


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


def _write_json(report: Report, path: Path, timeline: Any = None) -> None:
    path.write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))


def _write_csv(report: Report, path: Path, timeline: Any = None) -> None:
    write_csv(report, path)


def _html_module(path: Path) -> Any:
    try:
        return importlib.import_module(HTML_MODULE)
    except ModuleNotFoundError:
        raise InvalidOptionError(
            "batch.output",
            str(path),
            "this installation cannot write HTML reports: use a .json or .csv file",
        ) from None


def _write_html(report: Report, path: Path, timeline: Any = None) -> None:
    html: str = _html_module(path).render_report_html(report, timeline)
    path.write_text(html, encoding="utf-8")


WRITERS: dict[str, ReportWriter] = {"json": _write_json, "csv": _write_csv, "html": _write_html}


def report_format(path: Path) -> str:
    """The one place that chooses how a report file is written: its format by extension
    (.json, .csv, .html), after checking ``path`` can be written and its writer is here.
    InvalidOptionError (naming ``batch.output``) otherwise."""
    check_output(path, REPORT_FORMATS)
    fmt = export_format(path, REPORT_FORMATS)
    if fmt == "html":
        _html_module(path)
    return fmt


def write_report(report: Report, path: Path, timeline: Any = None) -> None:
    """Write ``report`` to ``path`` whole or not at all (a temporary file, renamed).
    ``timeline``: the batch's throughput and cost over time, for the HTML report's chart."""
    writer = WRITERS[report_format(path)]
    write_atomically(path, lambda tmp: writer(report, tmp, timeline), REPORT_FORMATS)


def _timeline(app: App, ids: list[str]) -> Any:
    """One batch's throughput and cost over time (None for several, or a store without)."""
    read = getattr(app.store, "timeline", None)
    return read(ids[0]) if read is not None and len(ids) == 1 else None


async def report(app: App) -> int:
    """Score the batches and show (or write) the report; exit 0. Unknown batches, a bad
    ``batch.evaluate`` and nothing to score are UsageErrors (exit 2)."""
    spec = evaluate_override(app.settings.batch)
    output = app.settings.batch.output
    if output is not None:
        fmt = report_format(output)  # a bad file name fails before any work
    ids = report_ids(app)
    found = await app.service.report(ids, evaluate=spec)
    for note in found.notes:  # on stderr too, whatever the output (a table of zeros misleads)
        log.warning("%s", note)
    if output is not None:
        timeline = await anyio.to_thread.run_sync(_timeline, app, ids) if fmt == "html" else None
        write_report(found, output, timeline)
        log.info("%s", summary_line(found))
        log.info("wrote the report to %s", output.expanduser().resolve())
    elif app.json:
        render.print_json(found.model_dump(mode="json"))
    else:
        render.stdout_console().print(report_view(found))
    return EXIT_OK
