"""Agreement among every answer of a record: each combination x repeat (x batch) a rater.

- Krippendorff's alpha: the ``krippendorff`` package's ``alpha`` on the raters x records
  matrix (missing answers as NaN), at the spec's kind's level (nominal / ordinal on the
  codebook's codes in the scale's order, interval on the numbers).
- Fleiss' kappa: statsmodels ``fleiss_kappa`` on ``aggregate_raters`` of the records every
  rater answered (nominal and ordinal only; None when no record has every answer).
- Per-record stability: the share of a record's answers that give its majority answer
  (records of two answers or more), its mean and a histogram of ten bins over [0, 1]
  (numpy ``histogram``).
- The majority vote: each record's most common answer (ties: the first in the codebook's
  order, or the smallest number) scored against the truth like a combination (variant
  ``majority``); for interval, the median of the record's answers.
"""

from __future__ import annotations

import statistics
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from buttermilk.domain.evaluation import MAJORITY, Agreement, EvaluationSpec, ScoredJob
from buttermilk.domain.statuses import JobStatus
from buttermilk.evaluation.labels import Codebook, answer, majority
from buttermilk.evaluation.scores import finite, score

Rater = tuple[str, str, int]  # batch, combination, repeat
HISTOGRAM_BINS = 10


def agreement(
    jobs: Sequence[ScoredJob], spec: EvaluationSpec, book: Codebook | None, batch_id: str | None
) -> Agreement | None:
    """Agreement among the raters of ``jobs`` (None with fewer than two raters)."""
    import numpy as np

    raters = sorted({(job.batch_id, job.variant, job.repeat) for job in jobs})
    if len(raters) < 2:
        return None
    rater_index = {rater: i for i, rater in enumerate(raters)}
    records = list(dict.fromkeys(job.record_id for job in jobs))
    record_index = {rid: i for i, rid in enumerate(records)}
    matrix = np.full((len(raters), len(records)), np.nan)
    per_record: dict[str, list[Any]] = defaultdict(list)
    for job in jobs:
        given = answer(job, spec, book)
        if given is None:
            continue
        matrix[rater_index[job.batch_id, job.variant, job.repeat], record_index[job.record_id]] = (
            given
        )
        per_record[job.record_id].append(given)
    shares = [majority(found)[1] for found in per_record.values() if len(found) > 1]
    counts, edges = np.histogram(shares, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    histogram = [
        (round(float(edges[i]), 9), round(float(edges[i + 1]), 9), int(counts[i]))
        for i in range(HISTOGRAM_BINS)
    ]
    return Agreement(
        raters=len(raters),
        records=len(records),
        krippendorff_alpha=_alpha(matrix, spec, book),
        fleiss_kappa=_fleiss(matrix) if spec.kind != "interval" else None,
        stability=sum(shares) / len(shares) if shares else None,
        stability_histogram=histogram,
        majority=score(
            majority_jobs(jobs, spec, book, per_record),
            spec,
            book,
            batch_id=batch_id,
            variant=MAJORITY,
        ),
    )


def _alpha(matrix: Any, spec: EvaluationSpec, book: Codebook | None) -> float | None:
    import krippendorff
    import numpy as np

    answered = np.sum(~np.isnan(matrix), axis=0)
    pairable = matrix[:, answered >= 2]
    if pairable.shape[1] == 0 or len(np.unique(pairable[~np.isnan(pairable)])) < 2:
        return None  # no record of two answers, or a single value: alpha is undefined
    domain = None if book is None else list(range(len(book)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = krippendorff.alpha(
            reliability_data=matrix, level_of_measurement=spec.kind, value_domain=domain
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


def majority_jobs(
    jobs: Sequence[ScoredJob],
    spec: EvaluationSpec,
    book: Codebook | None,
    per_record: dict[str, list[Any]] | None = None,
) -> list[ScoredJob]:
    """One pseudo-job per record holding its majority answer (its value, as stored) and
    its truth, to be scored like a combination. A record with no answer is not finished
    while any of its jobs is, failed when all of them failed, else without a label."""
    if per_record is None:
        per_record = defaultdict(list)
        for job in jobs:
            given = answer(job, spec, book)
            if given is not None:
                per_record[job.record_id].append(given)
    statuses: dict[str, set[JobStatus]] = defaultdict(set)
    truths: dict[str, Any] = {}
    for job in jobs:
        statuses[job.record_id].add(job.status)
        if truths.get(job.record_id) is None:
            truths[job.record_id] = job.truth
    voted = []
    for record_id, seen in statuses.items():
        found = per_record.get(record_id)
        status = JobStatus.COMPLETED
        label: Any = None
        if found:
            label = _vote(found, spec, book)
        elif seen - {JobStatus.COMPLETED, JobStatus.FAILED}:
            status = JobStatus.PENDING
        elif seen == {JobStatus.FAILED}:
            status = JobStatus.FAILED
        voted.append(
            ScoredJob(
                batch_id="",
                record_id=record_id,
                variant=MAJORITY,
                repeat=0,
                status=status,
                label=label,
                truth=truths[record_id],
            )
        )
    return voted


def _vote(found: list[Any], spec: EvaluationSpec, book: Codebook | None) -> Any:
    if spec.kind == "interval":
        return statistics.median(found)
    assert book is not None
    return book.values[majority(found)[0]]
