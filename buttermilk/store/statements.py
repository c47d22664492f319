"""The store's single-job statements, built once (building one costs more than running it).

A job is named by (batch, record, variant, repeat): see :func:`job_key`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Integer, and_, bindparam, case, exists, literal, or_, select, update

from buttermilk.domain import BatchStatus, JobKey, JobStatus
from buttermilk.store.ops import LIVE_BATCH, OPEN_JOB
from buttermilk.store.schema import JSONType, batches, jobs


def job_key() -> Any:
    """The condition naming one job: parameters p_batch, p_record, p_variant, p_repeat."""
    return and_(
        jobs.c.batch_id == bindparam("p_batch"),
        jobs.c.record_id == bindparam("p_record"),
        jobs.c.variant == bindparam("p_variant"),
        jobs.c.repeat == bindparam("p_repeat"),
    )


def key_params(batch_id: str, key: JobKey) -> dict[str, Any]:
    """The parameters of :func:`job_key` for one job."""
    return {
        "p_batch": batch_id,
        "p_record": key.record_id,
        "p_variant": key.variant,
        "p_repeat": key.repeat,
    }


def is_one_of(column: Any, *values: str) -> Any:
    return or_(*(column == literal(v) for v in values))


# Hot statements are built once: building a statement costs far more than running it.
CLAIM = (
    update(jobs)
    .where(
        job_key(),
        or_(
            jobs.c.status == literal(JobStatus.PENDING.value),
            and_(
                jobs.c.status == literal(JobStatus.RUNNING.value),
                jobs.c.lease_until < bindparam("p_now"),
                jobs.c.last_try.is_(False),  # lost on its last try: it fails instead
            ),
        ),
        exists().where(
            batches.c.id == bindparam("p_batch"), is_one_of(batches.c.status, *LIVE_BATCH)
        ),
    )
    .values(
        status=JobStatus.RUNNING.value,
        attempts=jobs.c.attempts + 1,
        last_try=or_(
            jobs.c.attempts + 1 >= bindparam("p_max", type_=Integer),
            bindparam("p_last", type_=Boolean),
        ),
        lost=jobs.c.lost + case((jobs.c.status == literal(JobStatus.RUNNING.value), 1), else_=0),
        claim_token=bindparam("p_token"),
        lease_until=bindparam("p_lease"),
        worker=bindparam("p_worker"),
        started_at=bindparam("p_now"),
        finished_at=None,
    )
    .returning(jobs.c.attempts, jobs.c.record)
)
START_BATCH = (
    update(batches)
    .where(
        batches.c.id == bindparam("p_batch"), batches.c.status == literal(BatchStatus.PENDING.value)
    )
    .values(status=BatchStatus.RUNNING.value, started_at=bindparam("p_now"))
)
JOB_AND_BATCH_STATUS = (
    select(jobs.c.status, batches.c.status, jobs.c.last_try, jobs.c.lease_until)
    .join(batches, batches.c.id == jobs.c.batch_id)
    .where(job_key())
)
OWNED = and_(
    job_key(),
    jobs.c.claim_token == bindparam("p_token"),
    jobs.c.status == literal(JobStatus.RUNNING.value),
)
OUTCOME_VALUES: dict[str, Any] = {
    "status": bindparam("p_status"),
    "duration": bindparam("p_duration"),
    "result": bindparam("p_result", type_=JSONType),
    "error_type": bindparam("p_error_type"),
    "error_message": bindparam("p_error_message"),
    "traceback": bindparam("p_traceback"),
    "cost": bindparam("p_cost"),
    "input_tokens": bindparam("p_input_tokens"),
    "output_tokens": bindparam("p_output_tokens"),
    "lease_until": None,
    "finished_at": bindparam("p_finished"),
}
FINISH = update(jobs).where(OWNED).values(**OUTCOME_VALUES)
RELEASE = (
    update(jobs)
    .where(OWNED)
    .values(**OUTCOME_VALUES, attempts=jobs.c.attempts - 1, started_at=None)
)
EXTEND = (
    update(jobs)
    .where(job_key(), jobs.c.claim_token == bindparam("p_token"))
    .values(lease_until=bindparam("p_lease"))
)
SQLITE_INSERT_JOBS = (
    "INSERT INTO jobs (batch_id, record_id, variant, repeat, seq, status, attempts, record) "
    "VALUES (?, ?, ?, ?, ?, ?, 0, ?)"
)
LOCK_BATCHES = (
    select(batches.c.id)
    .where(batches.c.id.in_(bindparam("p_batches", expanding=True)))
    .order_by(batches.c.id)
    .with_for_update()
)
COMPLETE = (
    update(batches)
    .where(
        batches.c.id == bindparam("p_batch"),
        batches.c.status == literal(BatchStatus.RUNNING.value),
        batches.c.published.is_(True),
        ~exists().where(
            jobs.c.batch_id == bindparam("p_batch"), is_one_of(jobs.c.status, *OPEN_JOB)
        ),
    )
    .values(status=BatchStatus.COMPLETED.value, finished_at=bindparam("p_now"))
)
