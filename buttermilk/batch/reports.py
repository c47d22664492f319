"""A batch's (or several batches') scores against their truth, and each record's agreement.

The statistics (``buttermilk.evaluation.report``) are imported only when a report is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from buttermilk.domain import BatchInfo, JobStatus
from buttermilk.domain.evaluation import EvaluationSpec, RecordAgreement, Report
from buttermilk.errors import EvaluationError
from buttermilk.evaluation.spec import spec_for
from buttermilk.store.store import Store


def batches_and_spec(
    store: Store, batch_ids: Sequence[str], evaluate: EvaluationSpec | None
) -> tuple[Sequence[BatchInfo], EvaluationSpec]:
    """The batches ``batch_ids`` name (unique prefixes; repeats once) and the spec to score
    them by; raises as ``BatchService.report`` does."""
    if not batch_ids:
        raise EvaluationError("a report needs at least one batch id")
    full_ids = list(dict.fromkeys(store.resolve_id(bid) for bid in batch_ids))
    batches = [store.get_batch(full_id) for full_id in full_ids]
    flows = sorted({batch.flow for batch in batches})
    if len(flows) > 1:
        raise EvaluationError(
            f"batches of different flows ({', '.join(flows)}) cannot be reported together: "
            "give batches of one flow"
        )
    return batches, spec_for(batches, evaluate)


def batch_report(store: Store, batch_ids: Sequence[str], evaluate: EvaluationSpec | None) -> Report:
    """``BatchService.report`` (see there), in the calling thread."""
    from buttermilk.evaluation.report import build_report, no_label_note

    batches, spec = batches_and_spec(store, batch_ids, evaluate)
    rows = [job for batch in batches for job in store.scored_jobs(batch.id, spec)]
    found = build_report(batches, spec, rows)
    completed = [job for job in rows if job.status is JobStatus.COMPLETED]
    if completed and all(job.label is None for job in completed):
        paths: dict[str, None] = {}
        for batch in batches:
            paths.update(dict.fromkeys(store.output_paths(batch.id)))
        note = no_label_note(spec, list(paths))
        found = found.model_copy(update={"notes": [*found.notes, note]})
    return found


def batch_record_agreements(
    store: Store, batch_id: str, evaluate: EvaluationSpec | None
) -> list[RecordAgreement]:
    """``BatchService.record_agreements`` (see there), in the calling thread."""
    from buttermilk.evaluation.report import record_agreements

    batches, spec = batches_and_spec(store, [batch_id], evaluate)
    return record_agreements(spec, list(store.scored_jobs(batches[0].id, spec)))
