"""A Report from the batches' rows: scores per combination and overall, agreement,
comparisons; and each record's agreement, for the dashboard's job filters.

Combinations are listed batch by batch in planned order. Over several batches (of one
flow) each batch's combinations are their own (``Score.batch_id`` set); records pair up
by record id across batches (agreement, comparisons), and a comparison names each side
``BATCH:KEY``. The overall score covers every job of every combination.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from buttermilk.domain import BatchInfo
from buttermilk.domain.evaluation import (
    OVERALL,
    EvaluationSpec,
    RecordAgreement,
    Report,
    ScoredJob,
)
from buttermilk.domain.statuses import ENDED_BATCH
from buttermilk.errors import EvaluationError
from buttermilk.evaluation.agreement import agreement
from buttermilk.evaluation.charts import shown
from buttermilk.evaluation.coded import COMPLETED, FAILED, Coded, code_jobs, majorities
from buttermilk.evaluation.paired import comparisons
from buttermilk.evaluation.scores import histogram_edges, score

SHOWN_CLASSES = 20
"""Most classes an error about the positive class names."""


def check_positive(coded: Coded) -> None:
    """Raise EvaluationError (naming the classes seen) when ``spec.positive`` is neither
    a truth nor an answer of the jobs while some job has one (before any: accepted)."""
    import numpy as np

    spec = coded.spec
    if spec.positive is None or coded.numbers is not None:
        return
    seen = np.union1d(coded.answer[coded.answer >= 0], coded.truth[coded.truth >= 0])
    if not len(seen):
        return
    from buttermilk.evaluation.labels import label_key

    wanted = label_key(spec.positive)
    code = next(i for i, v in enumerate(coded.values) if label_key(v) == wanted)
    if code in seen:
        return
    names = [shown(coded.values[int(c)]) for c in seen[:SHOWN_CLASSES]]
    more = f" and {len(seen) - SHOWN_CLASSES} more" if len(seen) > SHOWN_CLASSES else ""
    raise EvaluationError(
        f"evaluate.positive={spec.positive!r} is no truth nor answer of these jobs; the "
        f"classes seen: {', '.join(names)}{more} (a number or true/false is not text: "
        '"1" and 1 differ)'
    )


def no_label_note(spec: EvaluationSpec, paths: Sequence[str]) -> str:
    """The report's note when no finished job has an output at the label's path: the
    paths their outputs do have (``paths``, from the store)."""
    have = f"outputs have: {', '.join(paths)}" if paths else "their outputs are empty"
    return f"no finished job has an output at {spec.label}; {have}"


def build_report(
    batches: Sequence[BatchInfo], spec: EvaluationSpec, jobs: Sequence[ScoredJob]
) -> Report:
    """The report of ``batches`` (one flow) over ``jobs``, their rows as the store holds
    them now. Raises EvaluationError for labels the kind cannot score.

    scikit-learn's own argument checks are skipped (``skip_parameter_validation``) and
    its inputs taken as finite (``assume_finite``): the arrays are built here, of finite
    codes and numbers only (a non-finite interval label counts as no label), and those
    checks cost more than the metrics on large batches."""
    import sklearn

    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        return _build_report(batches, spec, jobs)


def _build_report(
    batches: Sequence[BatchInfo], spec: EvaluationSpec, jobs: Sequence[ScoredJob]
) -> Report:
    import numpy as np

    coded = code_jobs(jobs, spec)
    check_positive(coded)
    edges = histogram_edges(coded)
    several = len(batches) > 1
    combination = np.empty(len(jobs), dtype=np.int64)
    keys: dict[tuple[str, str], int] = {}
    for i, job in enumerate(jobs):
        combination[i] = keys.setdefault((job.batch_id, job.variant), len(keys))
    order = np.argsort(combination, kind="stable")
    bounds = np.searchsorted(combination[order], np.arange(len(keys) + 1))
    rows_of = {key: order[bounds[i] : bounds[i + 1]] for key, i in keys.items()}
    named = []
    for batch in batches:
        planned = {c.key: c.values for c in batch.combinations()}
        found = {variant for bid, variant in keys if bid == batch.id}
        listed = [key for key in planned if key in found] + sorted(found - set(planned))
        for key in listed:
            rows = rows_of[batch.id, key]
            result = score(
                coded,
                rows,
                batch_id=batch.id,
                variant=key,
                axes=planned.get(key, {}),
                with_stability=batch.repeats > 1,
                edges=edges,
            )
            named.append((f"{batch.id}:{key}" if several else key, result, rows))
    single = None if several else batches[0].id
    status = coded.status
    return Report(
        batch_ids=[batch.id for batch in batches],
        flow=batches[0].flow,
        evaluate=spec,
        live=any(batch.status not in ENDED_BATCH for batch in batches),
        jobs=len(jobs),
        finished=int(np.sum((status == COMPLETED) | (status == FAILED))),
        combinations=[result for _, result, _ in named],
        overall=score(coded, np.arange(len(jobs)), batch_id=single, variant=OVERALL, edges=edges),
        agreement=agreement(coded, single),
        comparisons=comparisons(coded, named),
        generated_at=time.time(),
    )


def record_agreements(spec: EvaluationSpec, jobs: Sequence[ScoredJob]) -> list[RecordAgreement]:
    """Each record's answers across combinations and repeats, in the order of ``jobs``:
    its majority answer (as stored; ties go to the first in the codebook's order), the
    share of answers giving it (None with fewer than two, and for kind interval), and
    whether some answer differs from its truth (False when the truth is unknown)."""
    import numpy as np

    coded = code_jobs(jobs, spec)
    numeric = spec.kind == "interval"
    units = len(coded.units)
    given = np.flatnonzero(coded.answer >= 0)
    winner, top, total = majorities(coded.unit[given], coded.answer[given], units, coded.size)
    truth = np.full(units, -1, dtype=np.int64)
    known = np.flatnonzero(coded.truth >= 0)
    truth[coded.unit[known]] = coded.truth[known]
    wrong = given[(coded.truth[given] >= 0) & (coded.answer[given] != coded.truth[given])]
    differs = np.bincount(coded.unit[wrong], minlength=units) > 0
    raw_truth: dict[int, Any] = {}
    raw_label: dict[tuple[int, int], Any] = {}
    for i in range(len(jobs)):
        u = int(coded.unit[i])
        if coded.truth[i] >= 0 and u not in raw_truth:
            raw_truth[u] = jobs[i].truth
        if coded.answer[i] >= 0:
            raw_label.setdefault((u, int(coded.answer[i])), jobs[i].label)
    return [
        RecordAgreement(
            batch_id=batch_id,
            record_id=record_id,
            truth=raw_truth.get(u),
            majority=raw_label.get((u, int(winner[u]))),
            stability=float(top[u] / total[u]) if total[u] > 1 and not numeric else None,
            answers=int(total[u]),
            disagrees_with_truth=bool(differs[u]),
        )
        for u, (batch_id, record_id) in enumerate(coded.units)
    ]
