"""Paired comparisons of combinations on the records both answered (nominal, ordinal).

A combination's answer to a record is its majority answer over its repeats (ties: the
first in the codebook's order); it is correct when it equals the record's truth. For each
pair (a, b), on the records where both answered and the truth is known:

- McNemar's exact test (statsmodels ``contingency_tables.mcnemar(exact=True)``) on the
  2x2 table of (a correct, b correct);
- the accuracy difference a - b with a 95% t interval on the per-record paired
  differences (statsmodels ``DescrStatsW(d).tconfint_mean()``; with fewer than two records,
  or no spread, the interval is the estimate itself or None).

Which pairs: every pair when there are at most :data:`ALL_PAIRS_UP_TO` combinations;
beyond that, the most accurate combination (the first on a tie) against each other one.
"""

from __future__ import annotations

import itertools
import warnings
from collections import defaultdict
from collections.abc import Sequence

from buttermilk.domain.evaluation import Comparison, EvaluationSpec, Interval, Score, ScoredJob
from buttermilk.evaluation.labels import Codebook, answer, majority, truth
from buttermilk.evaluation.scores import finite

ALL_PAIRS_UP_TO = 10

Correctness = dict[str, bool]  # record id -> its majority answer equals its truth


def correctness(jobs: Sequence[ScoredJob], spec: EvaluationSpec, book: Codebook) -> Correctness:
    """Per record of one combination: whether its majority answer equals the truth."""
    answers: dict[str, list[int]] = defaultdict(list)
    truths: dict[str, int] = {}
    for job in jobs:
        given = answer(job, spec, book)
        known = truth(job, spec, book)
        if given is not None and known is not None:
            answers[job.record_id].append(given)
            truths[job.record_id] = known
    return {rid: majority(found)[0] == truths[rid] for rid, found in answers.items()}


def pairs(scores: Sequence[Score]) -> list[tuple[int, int]]:
    """Indexes of the combinations to compare (see the module's docstring)."""
    if len(scores) <= ALL_PAIRS_UP_TO:
        return list(itertools.combinations(range(len(scores)), 2))
    accuracy = [
        s.accuracy.estimate if s.accuracy and s.accuracy.estimate is not None else -1.0
        for s in scores
    ]
    best = accuracy.index(max(accuracy))
    return [(best, other) for other in range(len(scores)) if other != best]


def compare(name_a: str, a: Correctness, name_b: str, b: Correctness) -> Comparison:
    """Combination ``a`` against ``b`` on the records both answered."""
    shared = [rid for rid in a if rid in b]
    table = [[0, 0], [0, 0]]  # rows: a correct / wrong; columns: b correct / wrong
    for rid in shared:
        table[0 if a[rid] else 1][0 if b[rid] else 1] += 1
    return Comparison(
        a=name_a,
        b=name_b,
        records=len(shared),
        both_correct=table[0][0],
        only_a_correct=table[0][1],
        only_b_correct=table[1][0],
        neither_correct=table[1][1],
        difference=_difference([int(a[rid]) - int(b[rid]) for rid in shared]),
        p_value=_mcnemar(table) if shared else None,
    )


def _mcnemar(table: list[list[int]]) -> float | None:
    from statsmodels.stats.contingency_tables import mcnemar

    return finite(mcnemar(table, exact=True).pvalue)


def _difference(d: list[int]) -> Interval:
    method = "paired t (DescrStatsW.tconfint_mean)"
    if not d:
        return Interval(estimate=None, method=method)
    from statsmodels.stats.weightstats import DescrStatsW

    stats = DescrStatsW(d)
    estimate = float(stats.mean)
    if len(d) < 2:
        return Interval(estimate=estimate, method=method)
    if stats.std == 0:
        return Interval(estimate=estimate, low=estimate, high=estimate, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = stats.tconfint_mean(alpha=0.05)
    return Interval(estimate=estimate, low=finite(low), high=finite(high), method=method)


def comparisons(
    named: Sequence[tuple[str, Score, Sequence[ScoredJob]]],
    spec: EvaluationSpec,
    book: Codebook | None,
) -> list[Comparison]:
    """The comparisons of ``named`` combinations (name, score, jobs); none for interval."""
    if spec.kind == "interval" or book is None or len(named) < 2:
        return []
    found: dict[int, Correctness] = {}

    def of(index: int) -> Correctness:
        if index not in found:
            found[index] = correctness(named[index][2], spec, book)
        return found[index]

    result: list[Comparison] = []
    for i, j in pairs([s for _, s, _ in named]):
        result.append(compare(named[i][0], of(i), named[j][0], of(j)))
    return result


__all__ = ["compare", "comparisons", "correctness", "pairs"]
