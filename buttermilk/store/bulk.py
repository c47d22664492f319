"""One statement for many claims, one for many outcomes (PostgreSQL).

A worker's exchange carries tens of claims and outcomes. Over a network, and with the
job-count triggers firing once per statement, one UPDATE per job would cost a round trip
and a trigger run each; these statements do a whole exchange's worth at once, under the
same conditions as the single-job statements in ``store.py`` (a claim only takes a
pending job or one whose lease ran out, of a live batch; an outcome only applies while
its claim token is still the job's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Float,
    Integer,
    String,
    Text,
    and_,
    cast,
    column,
    exists,
    literal,
    or_,
    tuple_,
    update,
    values,
)

from buttermilk.batch.models import BatchStatus, JobStatus
from buttermilk.store.schema import JSONType, batches, jobs

if TYPE_CHECKING:
    from buttermilk.store.spending import Spent
    from buttermilk.store.store import Outcome

LIVE_BATCH = (BatchStatus.PENDING.value, BatchStatus.RUNNING.value)


def claim_many(
    conn: Connection,
    keys: Sequence[tuple[str, str]],
    *,
    token: str,
    worker: str,
    now: float,
    lease: float,
) -> dict[tuple[str, str], tuple[int, Any]]:
    """Claim the jobs that can be claimed; (batch_id, record_id) -> (attempts, record)."""
    running = JobStatus.RUNNING.value
    statement = (
        update(jobs)
        .where(
            tuple_(jobs.c.batch_id, jobs.c.record_id).in_(keys),
            or_(
                jobs.c.status == literal(JobStatus.PENDING.value),
                and_(jobs.c.status == literal(running), jobs.c.lease_until < now),
            ),
            exists().where(batches.c.id == jobs.c.batch_id, batches.c.status.in_(LIVE_BATCH)),
        )
        .values(
            status=running,
            attempts=jobs.c.attempts + 1,
            claim_token=token,
            lease_until=now + lease,
            worker=worker,
            started_at=now,
            finished_at=None,
        )
        .returning(jobs.c.batch_id, jobs.c.record_id, jobs.c.attempts, jobs.c.record)
    )
    return {(b, r): (int(a), record) for b, r, a, record in conn.execute(statement)}


OUTCOME_COLUMNS = (
    column("batch_id", String),
    column("record_id", String),
    column("token", String),
    column("status", String),
    column("duration", Float),
    column("result", JSONType),
    column("error_type", String),
    column("error_message", Text),
    column("traceback", Text),
    column("finished_at", Float),
    column("cost", Float),
    column("input_tokens", Integer),
    column("output_tokens", Integer),
)


SET_COLUMNS = [c.name for c in OUTCOME_COLUMNS[3:]]


def outcome_row(o: Outcome, spent: Spent | None, now: float) -> tuple[Any, ...]:
    """An outcome as a row of OUTCOME_COLUMNS."""
    return (
        o.batch_id,
        o.record_id,
        o.token,
        o.status.value,
        o.duration,
        o.result,
        o.error_type,
        o.error_message,
        o.traceback,
        None if o.status == JobStatus.PENDING else now,
        spent.cost if spent else None,
        spent.input_tokens if spent else None,
        spent.output_tokens if spent else None,
    )


def finish_many(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, str]]:
    """Apply outcomes (rows in the order of OUTCOME_COLUMNS) whose claim still holds;
    returns the (batch_id, record_id) of those applied."""
    given = values(*OUTCOME_COLUMNS, name="outcome").data(list(rows))
    statement = (
        update(jobs)
        .where(
            jobs.c.batch_id == given.c.batch_id,
            jobs.c.record_id == given.c.record_id,
            jobs.c.claim_token == given.c.token,
            jobs.c.status == literal(JobStatus.RUNNING.value),
        )
        .values(
            # NULLs in VALUES have no type of their own: cast each to its column's.
            **{name: cast(given.c[name], jobs.c[name].type) for name in SET_COLUMNS},
            lease_until=None,
        )
        .returning(jobs.c.batch_id, jobs.c.record_id)
    )
    return {(b, r) for b, r in conn.execute(statement)}
