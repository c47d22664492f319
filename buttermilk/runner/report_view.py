"""How a report looks in a terminal: its scores per combination, per class, the agreement
block and the paired comparisons (rich tables, in the style of :mod:`render`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from buttermilk.domain.evaluation import Comparison, Interval, Missing, Report, Score
from buttermilk.runner.render import value_text, when


def figure(value: float | None, digits: int = 3) -> str:
    """A figure to ``digits`` decimals; ``-`` where it could not be computed."""
    return "-" if value is None else f"{value:.{digits}f}"


def interval(found: Interval | None, digits: int = 3) -> str:
    """``0.812 [0.761, 0.855]``: an estimate with its 95% CI (``-`` for no estimate)."""
    if found is None or found.estimate is None:
        return "-"
    text = figure(found.estimate, digits)
    if found.low is None or found.high is None:
        return text
    return f"{text} [{figure(found.low, digits)}, {figure(found.high, digits)}]"


def p_value(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def missing_text(missing: Missing) -> str:
    """``0`` or ``5 (3 failed, 2 no label)``: jobs not scored, by reason."""
    return missing.text()


def live_line(report: Report) -> str | None:
    """``live: 40 of 600 jobs finished`` while a batch runs (figures cover those)."""
    if not report.live:
        return None
    return f"live: {report.finished} of {report.jobs} jobs finished; figures cover those so far"


def _header(report: Report) -> Table:
    spec = report.evaluate
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("batches" if len(report.batch_ids) > 1 else "batch", ", ".join(report.batch_ids))
    info.add_row("flow", report.flow)
    scored = f"{spec.label} against {spec.truth} ({spec.kind})"
    if spec.positive is not None:
        scored += f", positive class {value_text(spec.positive)}"
    info.add_row("scores", scored)
    info.add_row("jobs", f"{report.finished} of {report.jobs} finished")
    info.add_row("generated", when(report.generated_at))
    return info


def _numeric(report: Report) -> bool:
    return report.evaluate.kind == "interval"


def scores_view(report: Report, scores: Sequence[Score], title: str = "scores") -> Table:
    """One row per score: its key, axis values, n scored, n missing by reason, and the
    figures of the spec's kind (accuracy with CI, macro-F1, Cohen's kappa; or MAE, RMSE,
    Pearson and Spearman with CIs)."""
    axes: dict[str, None] = {}
    for score in scores:
        axes.update(dict.fromkeys(score.axes))
    several = len(report.batch_ids) > 1
    positive = report.evaluate.positive is not None
    stability = any(score.stability is not None for score in scores)
    table = Table(box=box.SIMPLE, title=title, title_justify="left")
    if several:
        table.add_column("batch")
    table.add_column("variant")
    for axis in axes:
        table.add_column(axis)
    table.add_column("scored", justify="right")
    table.add_column("missing", justify="right")
    if _numeric(report):
        for name in ("MAE [95% CI]", "RMSE", "Pearson r [95% CI]", "Spearman rho [95% CI]"):
            table.add_column(name, justify="right")
    else:
        for name in ("accuracy [95% CI]", "macro-F1", "Cohen's kappa"):
            table.add_column(name, justify="right")
        if positive:
            for name in ("precision", "recall", "F1"):
                table.add_column(name, justify="right")
    if stability:
        table.add_column("stability", justify="right")
    for score in scores:
        cells: list[Any] = [score.batch_id or "all"] if several else []
        cells.append(score.variant)
        cells.extend(value_text(score.axes[a]) if a in score.axes else "-" for a in axes)
        cells.extend([f"{score.scored} of {score.jobs}", missing_text(score.missing)])
        if _numeric(report):
            cells.extend(
                [
                    interval(score.mae_interval) if score.mae_interval else figure(score.mae),
                    figure(score.rmse),
                    interval(score.pearson),
                    interval(score.spearman),
                ]
            )
        else:
            cells.extend(
                [interval(score.accuracy), figure(score.macro_f1), figure(score.cohen_kappa)]
            )
            if positive:
                p = score.positive
                cells.extend(
                    [figure(p.precision), figure(p.recall), figure(p.f1)] if p else ["-", "-", "-"]
                )
        if stability:
            cells.append(figure(score.stability))
        table.add_row(*cells)
    return table


def classes_view(scores: Sequence[Score], several: bool = False) -> Table | None:
    """Precision, recall, F1 and support per class of each score (nominal, ordinal);
    ``several``: the report lines up several batches (a batch column first)."""
    if not any(score.classes for score in scores):
        return None
    table = Table(box=box.SIMPLE, title="per class", title_justify="left")
    if several:
        table.add_column("batch")
    for name, justify in [
        ("variant", "left"),
        ("class", "left"),
        ("precision", "right"),
        ("recall", "right"),
        ("F1", "right"),
        ("support", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for score in scores:
        for c in score.classes:
            table.add_row(
                *([score.batch_id or "all"] if several else []),
                score.variant,
                value_text(c.label),
                figure(c.precision),
                figure(c.recall),
                figure(c.f1),
                str(c.support),
            )
    return table


def agreement_view(report: Report) -> Table | None:
    """Krippendorff's alpha, Fleiss' kappa, stability and the majority vote's score."""
    found = report.agreement
    if found is None:
        return None
    table = Table(box=box.SIMPLE, title="agreement across combinations and repeats")
    table.title_justify = "left"
    table.add_column("raters", justify="right")
    table.add_column("records", justify="right")
    table.add_column(f"Krippendorff's alpha ({report.evaluate.kind})", justify="right")
    table.add_column("Fleiss' kappa", justify="right")
    table.add_column("stability", justify="right")
    majority = found.majority
    if _numeric(report):
        table.add_column("majority vote MAE [95% CI]", justify="right")
        vote = interval(majority.mae_interval) if majority else "-"
    else:
        table.add_column("majority vote accuracy [95% CI]", justify="right")
        vote = interval(majority.accuracy) if majority else "-"
    table.add_row(
        str(found.raters),
        str(found.records),
        figure(found.krippendorff_alpha),
        figure(found.fleiss_kappa),
        figure(found.stability),
        vote,
    )
    return table


def comparisons_view(found: Sequence[Comparison]) -> Table | None:
    """Each pair of combinations on the records both answered: McNemar's exact test."""
    if not found:
        return None
    table = Table(box=box.SIMPLE, title="paired comparisons (McNemar)", title_justify="left")
    for name, justify in [
        ("a", "left"),
        ("b", "left"),
        ("records", "right"),
        ("only a right", "right"),
        ("only b right", "right"),
        ("accuracy a - b [95% CI]", "right"),
        ("p", "right"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in found:
        table.add_row(
            c.a,
            c.b,
            str(c.records),
            str(c.only_a_correct),
            str(c.only_b_correct),
            interval(c.difference),
            p_value(c.p_value),
        )
    return table


def report_view(report: Report) -> Group:
    """The whole report: header, scores (combinations and overall), per class, agreement,
    comparisons."""
    scores = [*report.combinations, report.overall]
    parts: list[Any] = [_header(report)]
    live = live_line(report)
    if live:
        parts.append(Text(live, style="yellow"))
    parts.append(scores_view(report, scores))
    parts.extend(Text(f"note: {note}", style="bold yellow") for note in report.notes)
    several = len(report.batch_ids) > 1
    for block in (classes_view(scores, several), agreement_view(report)):
        if block is not None:
            parts.append(block)
    if report.agreement is not None:
        parts.extend(Text(f"note: {note}", style="yellow") for note in report.agreement.notes)
    compared = comparisons_view(report.comparisons)
    if compared is not None:
        parts.append(compared)
    return Group(*parts)


def summary_line(report: Report) -> str:
    """One line: the overall score (and the live count while a batch runs)."""
    overall = report.overall
    if _numeric(report):
        figures = f"MAE {figure(overall.mae)}, Pearson r {interval(overall.pearson)}"
    else:
        figures = f"accuracy {interval(overall.accuracy)}, macro-F1 {figure(overall.macro_f1)}"
    line = (
        f"{report.evaluate.label} against {report.evaluate.truth}: {figures} "
        f"({overall.scored} of {overall.jobs} jobs scored)"
    )
    live = live_line(report)
    return f"{line}; {live}" if live else line
