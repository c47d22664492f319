"""A report as flat rows, one per Score: each combination's, the overall one and the
majority vote's (for ``batch.output=report.csv`` and notebooks).

Columns, in order (a figure that does not apply to the spec's kind is empty):
``batch_id``, ``variant`` (the combination's key, ``overall`` or ``majority``),
``axes.<axis>`` (one per axis of any combination), ``jobs``, ``scored``, ``missing``
(total) and ``missing_not_finished`` / ``missing_failed`` / ``missing_no_label`` /
``missing_no_truth``, ``accuracy`` with ``accuracy_low`` / ``accuracy_high`` (its 95% CI)
and ``accuracy_method``, ``macro_f1``, ``cohen_kappa``, ``precision`` / ``recall`` /
``f1`` (of the spec's ``positive`` class), ``mae``, ``rmse``, ``pearson`` and ``spearman``
(``mae``, ``pearson`` and ``spearman`` with their ``_low`` / ``_high``), ``stability``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from buttermilk.domain.evaluation import Interval, Report, Score

FIGURES = (
    "jobs",
    "scored",
    "missing",
    "missing_not_finished",
    "missing_failed",
    "missing_no_label",
    "missing_no_truth",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "accuracy_method",
    "macro_f1",
    "cohen_kappa",
    "precision",
    "recall",
    "f1",
    "mae",
    "mae_low",
    "mae_high",
    "rmse",
    "pearson",
    "pearson_low",
    "pearson_high",
    "spearman",
    "spearman_low",
    "spearman_high",
    "stability",
)


def scores_of(report: Report) -> Iterator[Score]:
    """Every Score of the report: the combinations', the overall one, the majority vote's."""
    yield from report.combinations
    yield report.overall
    if report.agreement is not None and report.agreement.majority is not None:
        yield report.agreement.majority


def axis_names(report: Report) -> list[str]:
    """Every axis of the report's combinations, in the order first met."""
    names: dict[str, None] = {}
    for score in report.combinations:
        names.update(dict.fromkeys(score.axes))
    return list(names)


def _interval(name: str, found: Interval | None) -> dict[str, Any]:
    if found is None:
        return {name: None, f"{name}_low": None, f"{name}_high": None}
    return {name: found.estimate, f"{name}_low": found.low, f"{name}_high": found.high}


def score_row(score: Score, axes: list[str]) -> dict[str, Any]:
    """One Score as a flat row (see the module's docstring for its columns)."""
    missing = score.missing
    positive = score.positive
    return {
        "batch_id": score.batch_id,
        "variant": score.variant,
        **{f"axes.{axis}": score.axes.get(axis) for axis in axes},
        "jobs": score.jobs,
        "scored": score.scored,
        "missing": missing.total,
        "missing_not_finished": missing.not_finished,
        "missing_failed": missing.failed,
        "missing_no_label": missing.no_label,
        "missing_no_truth": missing.no_truth,
        **_interval("accuracy", score.accuracy),
        "accuracy_method": score.accuracy.method if score.accuracy else None,
        "macro_f1": score.macro_f1,
        "cohen_kappa": score.cohen_kappa,
        "precision": positive.precision if positive else None,
        "recall": positive.recall if positive else None,
        "f1": positive.f1 if positive else None,
        "mae": score.mae,
        "mae_low": score.mae_interval.low if score.mae_interval else None,
        "mae_high": score.mae_interval.high if score.mae_interval else None,
        "rmse": score.rmse,
        **_interval("pearson", score.pearson),
        **_interval("spearman", score.spearman),
        "stability": score.stability,
    }


def report_rows(report: Report) -> list[dict[str, Any]]:
    """One row per Score of the report, every row with the same columns."""
    axes = axis_names(report)
    return [score_row(score, axes) for score in scores_of(report)]


def _cell(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def write_csv(report: Report, path: Path) -> int:
    """Write :func:`report_rows` to ``path`` as CSV (UTF-8, a header line; an empty cell is
    a figure that does not apply); returns the row count."""
    rows = report_rows(report)
    columns = ["batch_id", "variant", *(f"axes.{a}" for a in axis_names(report)), *FIGURES]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(value) for key, value in row.items()})
    return len(rows)
