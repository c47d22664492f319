"""Per-batch job counts kept by PostgreSQL itself, so ``status`` never scans a batch's jobs.

Statement-level triggers with transition tables add up how each statement moved jobs
between statuses and apply the net change to ``job_counts`` (one row per batch and
status): a bulk insert of 100,000 jobs costs one aggregate, a worker's claim or outcome
one small upsert. The triggers lock the batches whose counts change (in id order) before touching
their counters, as the store's own writers do, so concurrent writers cannot deadlock.

SQLite counts with an index range scan instead: it is in-process and fast enough.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, text

TABLE = """
CREATE TABLE IF NOT EXISTS job_counts (
    batch_id VARCHAR(32) NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    status VARCHAR(16) NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (batch_id, status)
)
"""

_LOCK = """
        PERFORM 1 FROM batches WHERE id IN (
            SELECT batch_id FROM ({moves}) AS moves
            GROUP BY batch_id, status HAVING sum(d) <> 0
        ) ORDER BY id FOR UPDATE;"""
_ADD = """
        INSERT INTO job_counts AS c (batch_id, status, n)
            SELECT batch_id, status, sum(d) FROM ({moves}) AS moves
            GROUP BY batch_id, status HAVING sum(d) <> 0 ORDER BY batch_id, status
            ON CONFLICT (batch_id, status) DO UPDATE SET n = c.n + EXCLUDED.n;"""
_IN = "SELECT batch_id, status, 1 AS d FROM new_rows"
_OUT = "SELECT batch_id, status, -1 AS d FROM old_rows"

FUNCTION = f"""
CREATE OR REPLACE FUNCTION buttermilk_count_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_LOCK.format(moves=_IN)}
        {_ADD.format(moves=_IN)}
    ELSIF TG_OP = 'DELETE' THEN
        {_LOCK.format(moves=_OUT)}
        {_ADD.format(moves=_OUT)}
    ELSE
        {_LOCK.format(moves=_OUT + " UNION ALL " + _IN)}
        {_ADD.format(moves=_OUT + " UNION ALL " + _IN)}
    END IF;
    RETURN NULL;
END
$$
"""

TRIGGERS = (
    "CREATE TRIGGER buttermilk_jobs_inserted AFTER INSERT ON jobs "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION buttermilk_count_jobs()",
    # Every update fires it (transition tables allow no column list); lease extensions
    # move no job between statuses and change nothing.
    "CREATE TRIGGER buttermilk_jobs_updated AFTER UPDATE ON jobs "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION buttermilk_count_jobs()",
    "CREATE TRIGGER buttermilk_jobs_deleted AFTER DELETE ON jobs "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION buttermilk_count_jobs()",
)

BACKFILL = """
INSERT INTO job_counts (batch_id, status, n)
SELECT batch_id, status, count(*) FROM jobs GROUP BY batch_id, status
"""


def install(conn: Connection) -> None:
    """Create the counts table and its triggers if missing (counting existing jobs once).

    Call inside the schema-setup transaction, under its advisory lock.
    """
    exists = conn.execute(text("SELECT to_regclass('job_counts') IS NOT NULL")).scalar()
    if exists:
        return
    conn.execute(text(TABLE))
    conn.execute(text(FUNCTION))
    for trigger in TRIGGERS:
        conn.execute(text(trigger))
    conn.execute(text(BACKFILL))


def read(conn: Connection, batch_ids: Sequence[str]) -> list[tuple[str, str, int]]:
    """(batch_id, status, count) for each status with jobs, of the given batches."""
    rows = conn.execute(
        text("SELECT batch_id, status, n FROM job_counts WHERE batch_id = ANY(:ids) AND n <> 0"),
        {"ids": list(batch_ids)},
    )
    return [(str(b), str(s), int(n)) for b, s, n in rows]
