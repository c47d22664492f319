"""Agreement among every answer of a record: each combination x repeat (x batch) a rater.

- Krippendorff's alpha: the ``krippendorff`` package's ``alpha`` on the raters x records
  matrix (missing answers as NaN), at the spec's kind's level (nominal / ordinal on the
  codebook's codes in the scale's order, interval on the numbers).
- Fleiss' kappa: statsmodels ``fleiss_kappa`` on ``aggregate_raters`` of the records every
  rater answered (nominal and ordinal only; None when no record has every answer).
- Per-record stability: the share of a record's answers that give its majority answer
  (records of two answers or more), its mean and a histogram of ten bins over [0, 1]
  (numpy ``histogram``). Nominal and ordinal only: numbers rarely repeat exactly, so for
  interval it is None (with a note) and Krippendorff's alpha (interval) measures agreement.
- The majority vote: each record's most common answer (ties: the first in the codebook's
  order, or the smallest number) scored against the truth like a combination (variant
  ``majority``); for interval, the median of the record's answers.
"""

from __future__ import annotations

import warnings
from typing import Any

from buttermilk.domain.evaluation import MAJORITY, Agreement
from buttermilk.evaluation.coded import COMPLETED, FAILED, NOT_FINISHED, Coded, majorities
from buttermilk.evaluation.scores import finite, score

HISTOGRAM_BINS = 10
ALPHA_CELLS = 10_000_000
"""Most records x values x values the ``krippendorff`` package is given: it builds an
array of that many floats (10,000 records of 30 distinct values take ~0.2 s and ~400 MiB;
500 distinct numbers on 4,000 records took 71 s and 22 GiB). Beyond it, alpha is None and
the agreement's notes say why."""


def agreement(coded: Coded, batch_id: str | None) -> Agreement | None:
    """Agreement among the raters of ``coded``'s jobs (None with fewer than two)."""
    import numpy as np

    if len(coded.raters) < 2:
        return None
    records = len(coded.record_ids)
    given = np.flatnonzero(coded.answer >= 0)
    matrix = np.full((len(coded.raters), records), np.nan)
    values = coded.answer[given] if coded.numbers is None else coded.numbers[coded.answer[given]]
    matrix[coded.rater[given], coded.record[given]] = values
    _, top, total = majorities(coded.record[given], coded.answer[given], records, coded.size)
    several = total > 1
    shares = top[several] / total[several]
    counts, edges = np.histogram(shares, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    histogram = [
        (round(float(edges[i]), 9), round(float(edges[i + 1]), 9), int(counts[i]))
        for i in range(HISTOGRAM_BINS)
    ]
    notes: list[str] = []
    numeric = coded.spec.kind == "interval"
    alpha = _alpha(matrix, coded, notes)
    if numeric:
        notes.append(
            "stability not computed: interval answers are numbers, which rarely agree "
            "exactly; Krippendorff's alpha (interval) measures how close they are"
        )
    return Agreement(
        raters=len(coded.raters),
        records=records,
        krippendorff_alpha=alpha,
        fleiss_kappa=_fleiss(matrix) if not numeric else None,
        stability=float(np.mean(shares)) if len(shares) and not numeric else None,
        stability_histogram=[] if numeric else histogram,
        notes=notes,
        majority=score(
            majority_vote(coded), np.arange(records), batch_id=batch_id, variant=MAJORITY
        ),
    )


def _alpha(matrix: Any, coded: Coded, notes: list[str]) -> float | None:
    import krippendorff
    import numpy as np

    answered = np.sum(~np.isnan(matrix), axis=0)
    pairable = matrix[:, answered >= 2]  # a record of one answer adds nothing to alpha
    distinct = len(np.unique(pairable[~np.isnan(pairable)]))
    if pairable.shape[1] == 0 or distinct < 2:
        return None  # no record of two answers, or a single value: alpha is undefined
    domain = list(range(coded.size)) if coded.numbers is None else None
    size = len(domain) if domain is not None else distinct
    cells = pairable.shape[1] * size * size
    if cells > ALPHA_CELLS:
        notes.append(
            f"krippendorff_alpha not computed: {pairable.shape[1]:,} records x {size:,} "
            f"distinct values squared is {cells:,} cells, more than the {ALPHA_CELLS:,} the "
            "krippendorff package is given (its memory grows with records x values^2)"
        )
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = krippendorff.alpha(
            reliability_data=pairable, level_of_measurement=coded.spec.kind, value_domain=domain
        )
    return finite(found)


def _fleiss(matrix: Any) -> float | None:
    import numpy as np
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    complete = matrix[:, ~np.isnan(matrix).any(axis=0)]
    if complete.shape[1] == 0:
        return None
    table, _ = aggregate_raters(complete.T.astype(int))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return finite(fleiss_kappa(table, method="fleiss"))


def majority_vote(coded: Coded) -> Coded:
    """One pseudo-job per record: its majority answer (interval: the median of its
    answers, numpy ``median``) and its truth. A record with no answer is not finished
    while any of its jobs is, failed when all of them failed, else without a label."""
    import numpy as np

    records = len(coded.record_ids)
    given = np.flatnonzero(coded.answer >= 0)
    if coded.numbers is None:
        answer, _, _ = majorities(coded.record[given], coded.answer[given], records, coded.size)
        values, numbers = coded.values, None
    else:
        medians = np.full(records, np.nan)
        order = given[np.argsort(coded.record[given], kind="stable")]
        groups = np.split(order, np.flatnonzero(np.diff(coded.record[order])) + 1)
        for group in groups:
            if len(group):
                medians[coded.record[group[0]]] = np.median(coded.numbers[coded.answer[group]])
        numbers = np.unique(np.concatenate([coded.numbers, medians[~np.isnan(medians)]]))
        values = [float(n) for n in numbers]
        answer = np.full(records, -1, dtype=np.int64)
        found = ~np.isnan(medians)
        answer[found] = np.searchsorted(numbers, medians[found])
    truth = np.full(records, -1, dtype=np.int64)
    known = np.flatnonzero(coded.truth >= 0)
    first = known[np.unique(coded.record[known], return_index=True)[1]]
    truth[coded.record[first]] = coded.truth[first]
    if numbers is not None and coded.numbers is not None:
        truth[truth >= 0] = np.searchsorted(numbers, coded.numbers[truth[truth >= 0]])
    open_jobs = np.bincount(coded.record[coded.status == NOT_FINISHED], minlength=records)
    done = np.bincount(coded.record[coded.status != FAILED], minlength=records)
    status = np.full(records, COMPLETED, dtype=np.int8)
    unanswered = answer < 0
    status[unanswered & (done == 0)] = FAILED
    status[unanswered & (open_jobs > 0)] = NOT_FINISHED
    index = np.arange(records)
    return Coded(
        spec=coded.spec,
        values=values,
        numbers=numbers,
        status=status,
        answer=answer,
        truth=truth,
        record=index,
        unit=index,
        rater=np.zeros(records, dtype=np.int64),
        record_ids=coded.record_ids,
        units=[("", rid) for rid in coded.record_ids],
        raters=[("", MAJORITY, 0)],
    )
