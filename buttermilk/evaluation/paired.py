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
from collections.abc import Sequence
from typing import Any

from buttermilk.domain.evaluation import Comparison, Interval, Score
from buttermilk.evaluation.coded import Coded, majorities
from buttermilk.evaluation.scores import finite

ALL_PAIRS_UP_TO = 10


def correctness(coded: Coded, rows: Any) -> Any:
    """Per record (``coded.record_ids``) of the jobs at ``rows``: 1 when its majority
    answer equals its truth, 0 when not, -1 when it has no answer or no truth."""
    import numpy as np

    records = len(coded.record_ids)
    both = rows[(coded.answer[rows] >= 0) & (coded.truth[rows] >= 0)]
    winner, _, _ = majorities(coded.record[both], coded.answer[both], records, coded.size)
    truth = np.full(records, -1, dtype=np.int64)
    truth[coded.record[both]] = coded.truth[both]
    result = np.where(winner == truth, 1, 0)
    result[winner < 0] = -1
    return result


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


def compare(name_a: str, a: Any, name_b: str, b: Any) -> Comparison:
    """Combination ``a`` against ``b`` (their :func:`correctness`) on the records both
    answered."""
    import numpy as np

    shared = (a >= 0) & (b >= 0)
    ca, cb = a[shared] == 1, b[shared] == 1
    table = [
        [int(np.sum(ca & cb)), int(np.sum(ca & ~cb))],
        [int(np.sum(~ca & cb)), int(np.sum(~ca & ~cb))],
    ]
    return Comparison(
        a=name_a,
        b=name_b,
        records=int(shared.sum()),
        both_correct=table[0][0],
        only_a_correct=table[0][1],
        only_b_correct=table[1][0],
        neither_correct=table[1][1],
        difference=_difference(ca.astype(int) - cb.astype(int)),
        p_value=_mcnemar(table) if shared.any() else None,
    )


def _mcnemar(table: list[list[int]]) -> float | None:
    from statsmodels.stats.contingency_tables import mcnemar

    return finite(mcnemar(table, exact=True).pvalue)


def _difference(d: Any) -> Interval:
    method = "paired t (DescrStatsW.tconfint_mean)"
    if not len(d):
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


def comparisons(coded: Coded, named: Sequence[tuple[str, Score, Any]]) -> list[Comparison]:
    """The comparisons of ``named`` combinations (name, score, rows); none for interval."""
    if coded.spec.kind == "interval" or len(named) < 2:
        return []
    found: dict[int, Any] = {}

    def of(index: int) -> Any:
        if index not in found:
            found[index] = correctness(coded, named[index][2])
        return found[index]

    return [
        compare(named[i][0], of(i), named[j][0], of(j)) for i, j in pairs([s for _, s, _ in named])
    ]
