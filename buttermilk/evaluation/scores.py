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
- interval: MAE and RMSE (``mean_absolute_error``, ``root_mean_squared_error``); MAE's
  95% interval, the t interval of the mean of the absolute errors (statsmodels
  ``DescrStatsW(|answer - truth|).tconfint_mean()``; no bounds below two scored jobs);
  the answers' histogram over the report's common bins (numpy ``histogram``, edges from
  ``histogram_bin_edges(..., "auto")`` over every scored answer of the report, at most
  :data:`HISTOGRAM_BINS` bins); Pearson's
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
from typing import Any

from buttermilk.domain.evaluation import ClassScore, Confusion, Interval, Missing, Score
from buttermilk.evaluation.coded import COMPLETED, FAILED, Coded, majorities

INTERVAL_LABEL_COUNTS = 50
"""Most (value, count) pairs an interval score lists (numbers take many values)."""
HISTOGRAM_BINS = 30
"""Most bins of an interval score's histogram of answers."""


def finite(value: Any) -> float | None:
    """``value`` as a float, None for NaN (a statistic that cannot be computed)."""
    number = float(value)
    return number if math.isfinite(number) else None


def _missing(coded: Coded, rows: Any) -> Missing:
    import numpy as np

    status = coded.status[rows]
    completed = status == COMPLETED
    answered = completed & (coded.answer[rows] >= 0)
    return Missing(
        not_finished=int(np.sum((status != COMPLETED) & (status != FAILED))),
        failed=int(np.sum(status == FAILED)),
        no_label=int(np.sum(completed & ~answered)),
        no_truth=int(np.sum(answered & (coded.truth[rows] < 0))),
    )


def stability(coded: Coded, rows: Any) -> float | None:
    """Mean over records (of two answers or more, per batch) of the share of their
    answers that give the record's majority answer; None when no record has two."""
    import numpy as np

    given = rows[coded.answer[rows] >= 0]
    _, top, total = majorities(coded.unit[given], coded.answer[given], len(coded.units), coded.size)
    several = total > 1
    if not several.any():
        return None
    return float(np.mean(top[several] / total[several]))


def histogram_edges(coded: Coded) -> Any:
    """Interval: the bin edges every score of the report shares (None: not interval, or
    no scored answer)."""
    import numpy as np

    if coded.numbers is None:
        return None
    scored = (coded.answer >= 0) & (coded.truth >= 0)
    if not scored.any():
        return None
    answers = coded.numbers[coded.answer[scored]]
    edges = np.histogram_bin_edges(answers, bins="auto")
    if len(edges) - 1 > HISTOGRAM_BINS:
        edges = np.histogram_bin_edges(answers, bins=HISTOGRAM_BINS)
    return edges


def score(
    coded: Coded,
    rows: Any,
    *,
    batch_id: str | None,
    variant: str,
    axes: dict[str, Any] | None = None,
    with_stability: bool = False,
    edges: Any = None,
) -> Score:
    """The Score of the jobs at ``rows`` (an index array into ``coded``); see the module's
    docstring for each figure's source. ``with_stability`` is ignored for kind interval
    (stability is None there); ``edges``: interval's common histogram bins."""
    import numpy as np

    if coded.spec.kind == "interval":
        with_stability = False

    answer, truth = coded.answer[rows], coded.truth[rows]
    scored = (answer >= 0) & (truth >= 0)
    y_pred, y_true = answer[scored], truth[scored]
    found, counts = np.unique(y_pred, return_counts=True)
    order = np.lexsort((found, -counts))
    label_counts = [(coded.values[int(found[i])], int(counts[i])) for i in order]
    if coded.spec.kind == "interval":
        label_counts = label_counts[:INTERVAL_LABEL_COUNTS]
    result = Score(
        batch_id=batch_id,
        variant=variant,
        axes=axes or {},
        jobs=len(rows),
        scored=int(scored.sum()),
        missing=_missing(coded, rows),
        label_counts=label_counts,
        stability=stability(coded, rows) if with_stability else None,
    )
    if not len(y_true):
        return result
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input, one class: None, not a warning
        if coded.spec.kind == "interval":
            numbers = coded.numbers
            update = _interval(numbers[y_true], numbers[y_pred])
            if edges is not None:
                counts, _ = np.histogram(numbers[y_pred], bins=edges)
                update["label_histogram"] = [
                    (float(edges[i]), float(edges[i + 1]), int(n)) for i, n in enumerate(counts)
                ]
            return result.model_copy(update=update)
        return result.model_copy(update=_categorical(y_true, y_pred, coded))


def _categorical(y_true: Any, y_pred: Any, coded: Coded) -> dict[str, Any]:
    import numpy as np
    from sklearn.metrics import (
        accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )
    from statsmodels.stats.proportion import proportion_confint

    spec = coded.spec
    n = len(y_true)
    correct = int(np.sum(y_true == y_pred))
    low, high = proportion_confint(correct, n, alpha=0.05, method="wilson")
    accuracy = Interval(
        estimate=float(accuracy_score(y_true, y_pred)),
        low=float(low),
        high=float(high),
        method="wilson",
    )
    present = np.union1d(y_true, y_pred)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=present, zero_division=0
    )
    classes = [
        ClassScore(
            label=coded.values[int(code)],
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            support=int(support[i]),
        )
        for i, code in enumerate(present)
    ]
    positive = None
    if spec.positive is not None:
        code = next(i for i, v in enumerate(coded.values) if _same(v, spec.positive))
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
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(coded.size))
    return {
        "accuracy": accuracy,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "cohen_kappa": finite(kappa),
        "classes": classes,
        "positive": positive,
        "confusion": Confusion(labels=list(coded.values), matrix=matrix.tolist()),
    }


def _same(a: Any, b: Any) -> bool:
    from buttermilk.evaluation.labels import label_key

    return label_key(a) == label_key(b)


def _correlation(x: Any, y: Any, method: str) -> Interval:
    from scipy.stats import pearsonr

    if len(x) < 3:
        return Interval(estimate=None, method=method)
    found = pearsonr(x, y)
    estimate = finite(found.statistic)
    if estimate is None:
        return Interval(estimate=None, method=method)
    ci = found.confidence_interval(confidence_level=0.95)
    return Interval(estimate=estimate, low=finite(ci.low), high=finite(ci.high), method=method)


def _mae_interval(y_true: Any, y_pred: Any, mae: float) -> Interval:
    import numpy as np
    from statsmodels.stats.weightstats import DescrStatsW

    method = "t on absolute errors"
    errors = np.abs(y_pred - y_true)
    if len(errors) < 2:
        return Interval(estimate=mae, method=method)
    low, high = DescrStatsW(errors).tconfint_mean(alpha=0.05)
    return Interval(estimate=mae, low=finite(low), high=finite(high), method=method)


def _interval(y_true: Any, y_pred: Any) -> dict[str, Any]:
    from scipy.stats import rankdata
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    mae = float(mean_absolute_error(y_true, y_pred))
    return {
        "mae": mae,
        "mae_interval": _mae_interval(y_true, y_pred, mae),
        "rmse": float(root_mean_squared_error(y_true, y_pred)),
        "pearson": _correlation(y_pred, y_true, "pearson, fisher z"),
        "spearman": _correlation(rankdata(y_pred), rankdata(y_true), "pearson of ranks, fisher z"),
    }
