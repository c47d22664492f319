"""One combination's answers (or all, or the majority vote's) against the truth: a Score.

Every statistic comes from a library, on the scored jobs (finished, with a label and a
truth the kind can use):

- nominal / ordinal: accuracy (scikit-learn ``accuracy_score``) with a Wilson 95% interval
  (statsmodels ``proportion_confint(method="wilson")``); macro-F1 and per-class precision,
  recall, F1 and support (``precision_recall_fscore_support``, ``zero_division=0``) over
  the labels present in the truth or the answers (scikit-learn's default); Cohen's kappa
  against the truth (``cohen_kappa_score``; ordinal: ``weights="linear"``, codes in the
  scale's order); the confusion matrix (``confusion_matrix``) over every label of the
  report, in the codebook's order, so that matrices of all combinations line up.
- interval: MAE and RMSE (``mean_absolute_error``, ``root_mean_squared_error``); Pearson's
  r with its 95% interval (scipy ``pearsonr(...).confidence_interval()``, Fisher's z);
  Spearman's rho as Pearson's r of the ranks (scipy ``rankdata``, average ranks), with the
  same Fisher-z interval on the ranks.

Missing jobs are counted under their first reason: not finished (pending, running or
cancelled), failed, no label (for interval: also a label that is not a finite number),
no truth.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from buttermilk.domain.evaluation import (
    ClassScore,
    Confusion,
    EvaluationSpec,
    Interval,
    Missing,
    Score,
    ScoredJob,
)
from buttermilk.domain.statuses import JobStatus
from buttermilk.evaluation.labels import Codebook, answer, label_key, majority, truth

INTERVAL_LABEL_COUNTS = 50
"""Most (value, count) pairs an interval score lists (numbers take many values)."""


def finite(value: Any) -> float | None:
    """``value`` as a float, None for NaN (a statistic that cannot be computed)."""
    number = float(value)
    return number if math.isfinite(number) else None


def _missing(jobs: Sequence[ScoredJob], spec: EvaluationSpec, book: Codebook | None) -> Missing:
    missing = Missing()
    for job in jobs:
        if job.status == JobStatus.FAILED:
            missing.failed += 1
        elif job.status != JobStatus.COMPLETED:
            missing.not_finished += 1
        elif answer(job, spec, book) is None:
            missing.no_label += 1
        elif truth(job, spec, book) is None:
            missing.no_truth += 1
    return missing


def stability(
    jobs: Sequence[ScoredJob], spec: EvaluationSpec, book: Codebook | None
) -> float | None:
    """Mean over records (of two answers or more) of the share of their answers that give
    the record's majority answer; None when no record has two."""
    by_record: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for job in jobs:
        given = answer(job, spec, book)
        if given is not None:
            by_record[job.batch_id, job.record_id].append(given)
    shares = [majority(found)[1] for found in by_record.values() if len(found) > 1]
    return sum(shares) / len(shares) if shares else None


def score(
    jobs: Sequence[ScoredJob],
    spec: EvaluationSpec,
    book: Codebook | None,
    *,
    batch_id: str | None,
    variant: str,
    axes: dict[str, Any] | None = None,
    with_stability: bool = False,
) -> Score:
    """The Score of ``jobs`` (see the module's docstring for each figure's source)."""
    pairs = []
    for job in jobs:
        given = answer(job, spec, book)
        known = truth(job, spec, book) if given is not None else None
        if given is not None and known is not None:
            pairs.append((known, given, job.label))
    counted = Counter(label_key(raw) for _, _, raw in pairs)
    firsts = {label_key(raw): raw for _, _, raw in reversed(pairs)}
    label_counts = [(firsts[key], n) for key, n in counted.most_common()]
    if spec.kind == "interval":
        label_counts = label_counts[:INTERVAL_LABEL_COUNTS]
    result = Score(
        batch_id=batch_id,
        variant=variant,
        axes=axes or {},
        jobs=len(jobs),
        scored=len(pairs),
        missing=_missing(jobs, spec, book),
        label_counts=label_counts,
        stability=stability(jobs, spec, book) if with_stability else None,
    )
    if not pairs:
        return result
    y_true = [p[0] for p in pairs]
    y_pred = [p[1] for p in pairs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input, one class: None, not a warning
        if spec.kind == "interval":
            return result.model_copy(update=_interval(y_true, y_pred))
        assert book is not None
        return result.model_copy(update=_categorical(y_true, y_pred, spec, book))


def _categorical(
    y_true: list[int], y_pred: list[int], spec: EvaluationSpec, book: Codebook
) -> dict[str, Any]:
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )
    from statsmodels.stats.proportion import proportion_confint

    n = len(y_true)
    correct = sum(t == p for t, p in zip(y_true, y_pred, strict=True))
    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    accuracy = Interval(
        estimate=float(accuracy_score(y_true, y_pred)),
        low=float(low),
        high=float(high),
        method="wilson",
    )
    present = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0
    )
    classes = [
        ClassScore(
            label=book.values[code],
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
        )
        for i, code in enumerate(present)
    ]
    positive = None
    if spec.positive is not None:
        code = book.code(spec.positive)
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[code], zero_division=0)
        positive = ClassScore(
            label=spec.positive,
            precision=float(p[0]),
            recall=float(r[0]),
            f1=float(f[0]),
            support=int(s[0]),
        )
    kappa = cohen_kappa_score(
        y_true, y_pred, labels=present, weights="linear" if spec.kind == "ordinal" else None
    )
    every = list(range(len(book)))
    matrix = confusion_matrix(y_true, y_pred, labels=every)
    return {
        "accuracy": accuracy,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "cohen_kappa": finite(kappa),
        "classes": classes,
        "positive": positive,
        "confusion": Confusion(labels=list(book.values), matrix=matrix.tolist()),
    }


def _correlation(x: list[float], y: list[float], method: str) -> Interval:
    from scipy.stats import pearsonr

    if len(x) < 3:
        return Interval(estimate=None, method=method)
    found = pearsonr(x, y)
    estimate = finite(found.statistic)
    if estimate is None:
        return Interval(estimate=None, method=method)
    ci = found.confidence_interval(confidence_level=0.95)
    return Interval(estimate=estimate, low=finite(ci.low), high=finite(ci.high), method=method)


def _interval(y_true: list[float], y_pred: list[float]) -> dict[str, Any]:
    from scipy.stats import rankdata
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    return {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "pearson": _correlation(y_pred, y_true, "pearson, fisher z"),
        "spearman": _correlation(
            list(rankdata(y_pred)), list(rankdata(y_true)), "pearson of ranks, fisher z"
        ),
    }
