"""What a report should say, computed in the test from exported rows with the libraries
themselves (scikit-learn, statsmodels, scipy, krippendorff): the known answers the
report's figures are checked against."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

from buttermilk.domain.evaluation import Interval, Score

approx = pytest.approx


def exported(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def label_of(row: dict[str, Any]) -> Any:
    outputs = row.get("outputs") or {}
    return (outputs.get("judge") or {}).get("label")


def answered(row: dict[str, Any]) -> bool:
    return row["status"] == "completed" and label_of(row) is not None


def missing(rows: list[dict[str, Any]]) -> dict[str, int]:
    found = Counter()
    for row in rows:
        if row["status"] == "failed":
            found["failed"] += 1
        elif row["status"] != "completed":
            found["not_finished"] += 1
        elif label_of(row) is None:
            found["no_label"] += 1
        elif row["ground_truth"] is None:
            found["no_truth"] += 1
    return {k: found[k] for k in ("not_finished", "failed", "no_label", "no_truth")}


def vote(answers: list[Any], order: list[Any]) -> tuple[Any, float]:
    """Majority answer (ties: first in ``order``) and its share."""
    counts = Counter(answers)
    top = max(counts.values())
    winner = next(value for value in order if counts.get(value) == top)
    return winner, top / len(answers)


def check_interval(found: Interval | None, estimate: float, low: float, high: float) -> None:
    assert found is not None
    assert found.estimate == approx(estimate)
    assert found.low == approx(low)
    assert found.high == approx(high)


def check_categorical(
    score: Score,
    rows: list[dict[str, Any]],
    order: list[Any],
    *,
    kind: str = "nominal",
    positive: Any = None,
    labels: list[Any] | None = None,
) -> None:
    """Every figure of a nominal or ordinal Score against the libraries on ``rows``
    (``labels``: each row's label, when not its judge's)."""
    given = labels if labels is not None else [label_of(r) for r in rows]
    pairs = [
        (r["ground_truth"], g)
        for r, g in zip(rows, given, strict=True)
        if r["status"] == "completed" and g is not None and r["ground_truth"] is not None
    ]
    assert score.jobs == len(rows)
    assert score.scored == len(pairs)
    if labels is None:
        assert score.missing.model_dump() == missing(rows)
    assert dict(score.label_counts) == dict(Counter(p for _, p in pairs))
    counts = [n for _, n in score.label_counts]
    assert counts == sorted(counts, reverse=True)
    y_true = [t for t, _ in pairs]
    y_pred = [p for _, p in pairs]
    code = {value: i for i, value in enumerate(order)}
    correct = sum(t == p for t, p in pairs)
    low, high = proportion_confint(correct, len(pairs), method="wilson")
    check_interval(score.accuracy, accuracy_score(y_true, y_pred), low, high)
    assert score.macro_f1 == approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    present = sorted(set(y_true) | set(y_pred), key=code.__getitem__)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=present, zero_division=0)
    assert [c.label for c in score.classes] == present
    assert [c.precision for c in score.classes] == approx(list(p))
    assert [c.recall for c in score.classes] == approx(list(r))
    assert [c.f1 for c in score.classes] == approx(list(f))
    assert [c.support for c in score.classes] == list(s)
    if positive is not None:
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=[positive], zero_division=0
        )
        assert score.positive is not None
        assert (score.positive.precision, score.positive.recall, score.positive.f1) == approx(
            (p[0], r[0], f[0])
        )
        assert score.positive.support == s[0]
    if kind == "ordinal":
        kappa = cohen_kappa_score(
            [code[t] for t in y_true], [code[p] for p in y_pred], weights="linear"
        )
    else:
        kappa = cohen_kappa_score(y_true, y_pred)
    assert score.cohen_kappa == approx(kappa)
    assert score.confusion is not None
    assert score.confusion.labels == order
    assert score.confusion.matrix == confusion_matrix(y_true, y_pred, labels=order).tolist()


def stability(rows: list[dict[str, Any]], order: list[Any]) -> float:
    """Mean over records (two answers or more) of the share giving their majority."""
    per: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        if answered(row):
            per[row["record_id"]].append(label_of(row))
    shares = [vote(found, order)[1] for found in per.values() if len(found) > 1]
    return float(np.mean(shares))


def raters_matrix(rows: list[dict[str, Any]], value: Any) -> tuple[np.ndarray, list[str]]:
    """raters (batch, variant, repeat) x records, NaN where no answer."""
    raters = sorted({(r["batch_id"], r["variant"], r["repeat"]) for r in rows})
    records = list(dict.fromkeys(r["record_id"] for r in rows))
    matrix = np.full((len(raters), len(records)), np.nan)
    for row in rows:
        if answered(row):
            matrix[
                raters.index((row["batch_id"], row["variant"], row["repeat"])),
                records.index(row["record_id"]),
            ] = value(label_of(row))
    return matrix, records


def alpha(matrix: np.ndarray, level: str) -> float:
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def fleiss(matrix: np.ndarray) -> float:
    complete = matrix[:, ~np.isnan(matrix).any(axis=0)]
    table, _ = aggregate_raters(complete.T.astype(int))
    return float(fleiss_kappa(table, method="fleiss"))


def paired(
    rows: list[dict[str, Any]], key: Any, a: Any, b: Any, order: list[Any]
) -> dict[str, Any]:
    """McNemar's exact p and the paired difference's t interval of two combinations
    (``key(row)`` names a row's combination), each on its majority answer per record."""
    correct: dict[Any, dict[str, bool]] = {a: {}, b: {}}
    for side in (a, b):
        per: dict[str, list[Any]] = defaultdict(list)
        truth: dict[str, Any] = {}
        for row in rows:
            if key(row) == side and answered(row) and row["ground_truth"] is not None:
                per[row["record_id"]].append(label_of(row))
                truth[row["record_id"]] = row["ground_truth"]
        correct[side] = {rid: vote(f, order)[0] == truth[rid] for rid, f in per.items()}
    shared = [rid for rid in correct[a] if rid in correct[b]]
    table = [[0, 0], [0, 0]]
    for rid in shared:
        table[0 if correct[a][rid] else 1][0 if correct[b][rid] else 1] += 1
    d = [int(correct[a][rid]) - int(correct[b][rid]) for rid in shared]
    low, high = DescrStatsW(d).tconfint_mean()
    return {
        "records": len(shared),
        "table": table,
        "p": mcnemar(table, exact=True).pvalue,
        "difference": (float(np.mean(d)), low, high),
    }


def interval_figures(y_true: list[float], y_pred: list[float]) -> dict[str, Any]:
    found = pearsonr(y_pred, y_true)
    ci = found.confidence_interval()
    return {
        "mae": mean_absolute_error(y_true, y_pred),
        "rmse": math.sqrt(mean_squared_error(y_true, y_pred)),
        "pearson": (found.statistic, ci.low, ci.high),
        "spearman": spearmanr(y_pred, y_true).statistic,
    }
