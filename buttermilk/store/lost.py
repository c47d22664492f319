"""Jobs whose worker was lost on their last try: they fail instead of running forever.

Each claim records whether it is the job's last try (``jobs.last_try``: the attempt that
reaches ``max_attempts``, or the message's last delivery on a transport that gives
messages up) and counts the claims that took the job over from a worker whose lease ran
out (``jobs.lost``). A running job whose lease ran out on its last try will never be
claimed again (a worker that dies on every try, e.g. killed for memory, would otherwise
be handed it forever), so it fails here with error type :data:`ERROR_TYPE`. The store
calls this where such a job shows up: a claim of it, the batch summary, workers'
heartbeats.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, and_, exists, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from buttermilk.domain import BatchStatus, JobKey, JobStatus
from buttermilk.store.schema import batches, jobs

ERROR_TYPE = "WorkerLost"
NO_LIMIT = 2**31 - 1  # max_attempts of a claim that gives none (fits PostgreSQL's integer)
_LIVE = (BatchStatus.PENDING.value, BatchStatus.RUNNING.value)
_RUNNING = JobStatus.RUNNING.value


def message(lost: int, attempts: int) -> str:
    """The error of a job whose worker was lost ``lost`` times, the last on its last try."""
    times = "once" if lost == 1 else f"{lost} times"
    return (
        f"worker lost while running it {times} (killed, out of memory, or stalled past its "
        f"lease); attempt {attempts} was its last try"
    )


def _abandoned(now: float) -> ColumnElement[bool]:
    """Running on its last try under a lease that ran out."""
    return and_(
        jobs.c.status == _RUNNING,
        jobs.c.last_try.is_(True),
        jobs.c.lease_until < now,
    )


def batches_with_lost_jobs(conn: Connection, batch_ids: Collection[str], now: float) -> list[str]:
    """Which of these batches have a job to fail (a read: callers then write only if so)."""
    if not batch_ids:
        return []
    query = (
        select(jobs.c.batch_id)
        .where(jobs.c.batch_id.in_(list(batch_ids)), _abandoned(now))
        .distinct()
    )
    return sorted(str(b) for b in conn.execute(query).scalars())


def _is_job(key: JobKey) -> ColumnElement[bool]:
    return and_(
        jobs.c.record_id == key.record_id,
        jobs.c.variant == key.variant,
        jobs.c.repeat == key.repeat,
    )


def fail_lost(
    conn: Connection, batch_id: str, now: float, keys: Collection[JobKey] | None = None
) -> list[tuple[JobKey, str]]:
    """Fail the batch's (or these) jobs whose worker was lost on their last try, while the
    batch is live; returns (job key, error message) of each one failed.

    Call inside a write transaction that has locked the batch row (PostgreSQL).
    """
    live = exists().where(batches.c.id == batch_id, batches.c.status.in_(_LIVE))
    query = select(
        jobs.c.record_id,
        jobs.c.variant,
        jobs.c.repeat,
        jobs.c.claim_token,
        jobs.c.attempts,
        jobs.c.lost,
    ).where(
        jobs.c.batch_id == batch_id,
        _abandoned(now),
        live,
    )
    if keys is not None:
        query = query.where(or_(*(_is_job(k) for k in keys)))
    failed: list[tuple[JobKey, str]] = []
    for record_id, variant, repeat, token, attempts, lost in conn.execute(query).all():
        error = message(int(lost) + 1, int(attempts))
        key = JobKey(str(record_id), str(variant), int(repeat))
        done = conn.execute(
            update(jobs)
            .where(
                jobs.c.batch_id == batch_id,
                _is_job(key),
                jobs.c.claim_token == token,
                jobs.c.status == _RUNNING,
            )
            .values(
                status=JobStatus.FAILED.value,
                error_type=ERROR_TYPE,
                error_message=error,
                traceback=None,
                lease_until=None,
                finished_at=now,
                lost=jobs.c.lost + 1,
            )
        ).rowcount
        if done:
            failed.append((key, error))
    return failed


def mark_last_try(conn: Connection, batch_id: str, key: JobKey) -> None:
    """The running job's message is being given up by its transport (its last delivery
    found the job busy): the current claim becomes its last try."""
    conn.execute(
        update(jobs)
        .where(
            jobs.c.batch_id == batch_id,
            _is_job(key),
            jobs.c.status == _RUNNING,
            jobs.c.last_try.is_(False),
        )
        .values(last_try=True)
    )
