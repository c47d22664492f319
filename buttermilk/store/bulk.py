"""One statement for many claims, one for many outcomes (PostgreSQL).

A worker's exchange carries tens of claims and outcomes. Over a network, and with the
job-count triggers firing once per statement, one UPDATE per job would cost a round trip
and a trigger run each; these statements do a whole exchange's worth at once, under the
same conditions as the single-job statements in ``statements.py`` (a claim only takes a
pending job, or one whose lease ran out on a try that was not its last, of a live batch;
an outcome only applies while its claim token is still the job's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from buttermilk.domain import JobKey, JobStatus

if TYPE_CHECKING:
    from buttermilk.store.ops import Outcome
    from buttermilk.store.spending import Spent

# Plain SQL, prepared once per connection by the driver: nothing to build or compile per
# round, and arrays instead of a parameter per value.
CLAIM = text(
    """
    UPDATE jobs SET status = 'running', attempts = attempts + 1, claim_token = :token,
        lease_until = :lease_until, worker = :worker, started_at = :now, finished_at = NULL,
        last_try = (attempts + 1 >= :max_attempts
            OR (record_id, variant, repeat) IN (SELECT * FROM unnest(
                CAST(:last_records AS text[]), CAST(:last_variants AS text[]),
                CAST(:last_repeats AS integer[])))),
        lost = lost + CASE WHEN status = 'running' THEN 1 ELSE 0 END
    WHERE batch_id = :batch_id
        AND (record_id, variant, repeat) IN (SELECT * FROM unnest(
            CAST(:record_ids AS text[]), CAST(:variants AS text[]),
            CAST(:repeats AS integer[])))
        AND (status = 'pending'
            OR (status = 'running' AND lease_until < :now AND NOT last_try))
        AND EXISTS (
            SELECT 1 FROM batches WHERE id = :batch_id AND status IN ('pending', 'running')
        )
    RETURNING record_id, variant, repeat, attempts, record
    """
)
FINISH = text(
    """
    UPDATE jobs AS j SET status = o.status, duration = o.duration, result = o.result,
        error_type = o.error_type, error_message = o.error_message, traceback = o.traceback,
        lease_until = NULL, finished_at = o.finished_at, cost = o.cost,
        input_tokens = o.input_tokens, output_tokens = o.output_tokens
    FROM unnest(
        CAST(:batch_id AS text[]), CAST(:record_id AS text[]), CAST(:variant AS text[]),
        CAST(:repeat AS integer[]), CAST(:token AS text[]),
        CAST(:status AS text[]), CAST(:duration AS float8[]), CAST(:result AS jsonb[]),
        CAST(:error_type AS text[]), CAST(:error_message AS text[]),
        CAST(:traceback AS text[]), CAST(:finished_at AS float8[]), CAST(:cost AS float8[]),
        CAST(:input_tokens AS bigint[]), CAST(:output_tokens AS bigint[])
    ) AS o (batch_id, record_id, variant, repeat, token, status, duration, result, error_type,
        error_message, traceback, finished_at, cost, input_tokens, output_tokens)
    WHERE j.batch_id = o.batch_id AND j.record_id = o.record_id AND j.variant = o.variant
        AND j.repeat = o.repeat AND j.claim_token = o.token AND j.status = 'running'
    RETURNING j.batch_id, j.record_id, j.variant, j.repeat
    """
)
# Done when no job is open: read from the counters, not from the batch's jobs.
COMPLETE = text(
    """
    UPDATE batches SET status = 'completed', finished_at = :p_now
    WHERE id = :p_batch AND status = 'running' AND published
        AND NOT EXISTS (
            SELECT 1 FROM job_counts
            WHERE batch_id = :p_batch AND status IN ('pending', 'running') AND n <> 0
        )
    """
)
COPY_JOBS = (
    "COPY jobs (batch_id, record_id, variant, repeat, seq, status, record, attempts) FROM STDIN"
)


def copy_jobs(conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    """Insert job rows (batch_id, record_id, variant, repeat, seq, status, record JSON)
    with COPY, in the connection's current transaction."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(COPY_JOBS) as copy:
        for row in rows:
            copy.write_row((*row, 0))


OUTCOME_FIELDS = (
    "batch_id",
    "record_id",
    "variant",
    "repeat",
    "token",
    "status",
    "duration",
    "result",
    "error_type",
    "error_message",
    "traceback",
    "finished_at",
    "cost",
    "input_tokens",
    "output_tokens",
)


def claim_many(
    conn: Connection,
    batch_id: str,
    keys: Sequence[JobKey],
    *,
    token: str,
    worker: str,
    now: float,
    lease: float,
    max_attempts: int,
    last_delivery: Sequence[JobKey] = (),
) -> dict[JobKey, tuple[int, Any]]:
    """Claim the jobs of one batch that can be claimed; job key -> (attempts, record).

    A claim is its job's last try when it reaches ``max_attempts`` or its job is in
    ``last_delivery`` (messages their transport gives up after this delivery).
    """
    found = conn.execute(
        CLAIM,
        {
            "max_attempts": max_attempts,
            "last_records": [k.record_id for k in last_delivery],
            "last_variants": [k.variant for k in last_delivery],
            "last_repeats": [k.repeat for k in last_delivery],
            "token": token,
            "lease_until": now + lease,
            "worker": worker,
            "now": now,
            "batch_id": batch_id,
            "record_ids": [k.record_id for k in keys],
            "variants": [k.variant for k in keys],
            "repeats": [k.repeat for k in keys],
        },
    )
    return {JobKey(r, v, int(n)): (int(a), record) for r, v, n, a, record in found}


def outcome_row(
    o: Outcome, spent: Spent | None, now: float, dumps: Callable[[Any], str]
) -> tuple[Any, ...]:
    """An outcome as a row of OUTCOME_FIELDS."""
    return (
        o.batch_id,
        o.record_id,
        o.variant,
        o.repeat,
        o.token,
        o.status.value,
        o.duration,
        None if o.result is None else dumps(o.result),
        o.error_type,
        o.error_message,
        o.traceback,
        None if o.status == JobStatus.PENDING else now,
        spent.cost if spent else None,
        spent.input_tokens if spent else None,
        spent.output_tokens if spent else None,
    )


def finish_many(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> set[tuple[str, JobKey]]:
    """Apply outcomes (rows of OUTCOME_FIELDS, from :func:`outcome_row`) whose claim still
    holds; returns the (batch_id, job key) of those applied."""
    columns = {name: [row[i] for row in rows] for i, name in enumerate(OUTCOME_FIELDS)}
    return {(b, JobKey(r, v, int(n))) for b, r, v, n in conn.execute(FINISH, columns)}
