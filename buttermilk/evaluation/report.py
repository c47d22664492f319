"""A Report from the batches' rows: scores per combination and overall, agreement,
comparisons; and each record's agreement, for the dashboard's job filters.

Combinations are listed batch by batch in planned order. Over several batches (of one
flow) each batch's combinations are their own (``Score.batch_id`` set); records pair up
by record id across batches (agreement, comparisons), and a comparison names each side
``BATCH:KEY``. The overall score covers every job of every combination.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

from buttermilk.domain import BatchInfo, JobStatus
from buttermilk.domain.evaluation import (
    OVERALL,
    EvaluationSpec,
    RecordAgreement,
    Report,
    ScoredJob,
)
from buttermilk.domain.statuses import ENDED_BATCH
from buttermilk.evaluation.agreement import agreement
from buttermilk.evaluation.labels import Codebook, answer, label_key, majority
from buttermilk.evaluation.paired import comparisons
from buttermilk.evaluation.scores import score

FINISHED = (JobStatus.COMPLETED, JobStatus.FAILED)


def codebook(spec: EvaluationSpec, jobs: Iterable[ScoredJob]) -> Codebook | None:
    """Codes for every label and truth in ``jobs`` (None for interval: numbers are used)."""
    if spec.kind == "interval":
        return None
    seen = []
    for job in jobs:
        if job.status == JobStatus.COMPLETED and job.label is not None:
            seen.append(job.label)
        if job.truth is not None:
            seen.append(job.truth)
    return Codebook(spec, seen)


def build_report(
    batches: Sequence[BatchInfo], spec: EvaluationSpec, jobs: Sequence[ScoredJob]
) -> Report:
    """The report of ``batches`` (one flow) over ``jobs``, their rows as the store holds
    them now. Raises EvaluationError for labels the kind cannot score."""
    book = codebook(spec, jobs)
    several = len(batches) > 1
    by_combination: dict[tuple[str, str], list[ScoredJob]] = defaultdict(list)
    for job in jobs:
        by_combination[job.batch_id, job.variant].append(job)
    named = []
    for batch in batches:
        planned = {c.key: c.values for c in batch.combinations()}
        found = {variant for bid, variant in by_combination if bid == batch.id}
        keys = [key for key in planned if key in found] + sorted(found - set(planned))
        for key in keys:
            rows = by_combination[batch.id, key]
            result = score(
                rows,
                spec,
                book,
                batch_id=batch.id,
                variant=key,
                axes=planned.get(key, {}),
                with_stability=batch.repeats > 1,
            )
            named.append((f"{batch.id}:{key}" if several else key, result, rows))
    single = None if several else batches[0].id
    return Report(
        batch_ids=[batch.id for batch in batches],
        flow=batches[0].flow,
        evaluate=spec,
        live=any(batch.status not in ENDED_BATCH for batch in batches),
        jobs=len(jobs),
        finished=sum(job.status in FINISHED for job in jobs),
        combinations=[result for _, result, _ in named],
        overall=score(jobs, spec, book, batch_id=single, variant=OVERALL),
        agreement=agreement(jobs, spec, book, single),
        comparisons=comparisons(named, spec, book),
        generated_at=time.time(),
    )


def record_agreements(spec: EvaluationSpec, jobs: Sequence[ScoredJob]) -> list[RecordAgreement]:
    """Each record's answers across combinations and repeats, in the order of ``jobs``:
    its majority answer (as stored; ties go to the first in the codebook's order), the
    share of answers giving it (None with fewer than two), and whether some answer differs
    from its truth (False when the truth is unknown)."""
    book = codebook(spec, jobs)
    answers: dict[tuple[str, str], list[ScoredJob]] = defaultdict(list)
    for job in jobs:
        answers[job.batch_id, job.record_id].append(job)
    result = []
    for (batch_id, record_id), rows in answers.items():
        given = [(job, answer(job, spec, book)) for job in rows]
        given = [(job, value) for job, value in given if value is not None]
        known = next((job.truth for job in rows if job.truth is not None), None)
        voted = None
        share = None
        if given:
            winner, share = majority([value for _, value in given])
            voted = next(job.label for job, value in given if value == winner)
        differs = known is not None and any(
            label_key(job.label) != label_key(known) for job, _ in given
        )
        result.append(
            RecordAgreement(
                batch_id=batch_id,
                record_id=record_id,
                truth=known,
                majority=voted,
                stability=share if len(given) > 1 else None,
                answers=len(given),
                disagrees_with_truth=differs,
            )
        )
    return result
