"""Tables of the batch store (SQLAlchemy Core, portable across SQLite and PostgreSQL).

Times are UNIX seconds (floats) so that every backend stores and compares them alike.
Money is USD (floats). A store made by an older version gets the columns added since by
:func:`migrate`; tables added since are made by ``create_all``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    inspect,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateColumn
from sqlalchemy.types import TypeEngine

# 1: batches and jobs. 2: cost and tokens per job and per batch, max_cost; llm_budget,
# llm_cache. 3: jobs.last_try and jobs.lost (a job whose worker died on its last try fails).
# 4: jobs.variant and jobs.repeat, in the primary key (a job is a record x combination x repeat).
# 5: batches.cached_input_tokens, reasoning_tokens and max_job_cost (the real bill).
# 6: batches.schema_retry_calls (calls that asked again for an answer fitting a schema).
# 7: batches.schema_retry_input_tokens, schema_retry_output_tokens and schema_retry_cost.
SCHEMA_VERSION = 7


class JSONDocument(TypeDecorator[Any]):
    """JSON, kept as JSONB on PostgreSQL: ``JSON().with_variant(JSONB(), "postgresql")``,
    with PostgreSQL's dialect imported only by a store that uses it (importing it costs
    the CLI's ``list`` on SQLite a few percent of its start-up)."""

    impl = JSON
    cache_ok = True
    should_evaluate_none = True  # as JSON's: a Python None is stored as JSON null

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return JSONB()
        return self.impl_instance


metadata = MetaData()
JSONType = JSONDocument()

meta = Table(
    "buttermilk_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("flow", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("request", JSONType, nullable=False),
    Column("flow_snapshot", JSONType, nullable=False),
    Column("total", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("published", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("error", Text),
    # Spending of the batch's jobs, added up as their outcomes are stored (never summed
    # over the jobs on read). cost stays NULL until a call with a known price is made.
    Column("max_cost", Float),
    Column("cost", Float),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    # Parts of those: prompt tokens read from the provider's cache, reasoning tokens.
    Column("cached_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("reasoning_tokens", BigInteger, nullable=False, server_default="0"),
    # Calls that asked again because an answer did not fit its schema, and what they cost
    # (parts of the tokens and cost above; the cost NULL until such a call had a price).
    Column("schema_retry_calls", BigInteger, nullable=False, server_default="0"),
    Column("schema_retry_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("schema_retry_output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("schema_retry_cost", Float),
    # The most one job attempt has cost (USD): what each running job may still add.
    Column("max_job_cost", Float),
    Index("ix_batches_created_at", "created_at"),
    Index("ix_batches_status", "status"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("batch_id", String(32), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("record_id", String(512), primary_key=True),
    # The job's combination of the batch's axes (its key: buttermilk.domain.variants) and
    # its repeat (0-based); a batch without axes has one combination, "default".
    Column("variant", String(64), primary_key=True, server_default="default"),
    Column("repeat", Integer, primary_key=True, server_default="0"),
    Column("seq", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("claim_token", String(32)),
    Column("lease_until", Float),
    Column("worker", String(200)),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("duration", Float),
    Column("record", JSONType, nullable=False),
    Column("result", JSONType),
    Column("error_type", String(200)),
    Column("error_message", Text),
    Column("traceback", Text),
    # The run's ``usage`` summary (buttermilk.flows.runner), of the last attempt.
    Column("cost", Float),
    Column("input_tokens", BigInteger),
    Column("output_tokens", BigInteger),
    # Whether the current claim is the job's last try (its last attempt, or its message's
    # last delivery), and how many of its claims lost their worker (the lease ran out):
    # a running job whose last try lost its worker fails instead of running again.
    Column("last_try", Boolean, nullable=False, server_default=false()),
    Column("lost", Integer, nullable=False, server_default="0"),
    Index("ix_jobs_batch_status", "batch_id", "status"),
    Index("ix_jobs_batch_seq", "batch_id", "seq"),
    Index("ix_jobs_batch_started", "batch_id", "started_at"),
)

# A token bucket per key (``requests ...`` or ``tokens ...`` of a model), shared by every
# worker of the store: see buttermilk.store.llm_state.
llm_budget = Table(
    "llm_budget",
    metadata,
    Column("key", String(512), primary_key=True),
    Column("level", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

# Answers of LLM requests by cache key (a SHA-256 of the request), across batches.
llm_cache = Table(
    "llm_cache",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSONType, nullable=False),
    Column("created_at", Float, nullable=False),
)

# LLM endpoints a worker found down, per batch whose jobs wait for them (one row per
# batch, endpoint and worker; deleted when the endpoint is back). A row not refreshed
# for a while is of a worker that went away, and no longer counts.
llm_endpoints = Table(
    "llm_endpoints",
    metadata,
    Column("batch_id", String(32), primary_key=True),
    Column("endpoint", String(512), primary_key=True),
    Column("worker", String(128), primary_key=True),
    Column("since", Float, nullable=False),
    Column("error", Text, nullable=False),
    Column("updated", Float, nullable=False),
)

# Adaptive concurrency per model at an endpoint (``<model> @ <base URL>``), shared by every
# worker of the store, and the workers sharing it (per batch, for status): see
# buttermilk.store.concurrency.
llm_concurrency = Table(
    "llm_concurrency",
    metadata,
    Column("scope", String(512), primary_key=True),
    Column("endpoint", String(512), nullable=False),
    Column("model", String(256), nullable=False),
    Column("level", Float, nullable=False),
    Column("ceiling", Integer, nullable=False),
    Column("cut_at", Float, nullable=False),
    Column("paused_until", Float, nullable=False),
    Column("updated", Float, nullable=False),
)
llm_concurrency_workers = Table(
    "llm_concurrency_workers",
    metadata,
    Column("scope", String(512), primary_key=True),
    Column("worker", String(128), primary_key=True),
    Column("batch_id", String(32), primary_key=True),
    Column("concurrency", Integer, nullable=False),
    Column("seen", Float, nullable=False),
)

ADDED_COLUMNS = {
    "batches": (
        "max_cost",
        "cost",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "reasoning_tokens",
        "max_job_cost",
        "schema_retry_calls",
        "schema_retry_input_tokens",
        "schema_retry_output_tokens",
        "schema_retry_cost",
    ),
    "jobs": ("cost", "input_tokens", "output_tokens", "last_try", "lost"),
}


def migrate(conn: Connection, version: int) -> list[str]:
    """Bring a store made by an older version (schema ``version``) up to this one: add the
    columns of :data:`ADDED_COLUMNS` it lacks, then (before version 4) re-key its jobs by
    (batch, record, variant, repeat), each old job being its record's one combination
    (``default``) and repeat (0). Returns what changed (``table.column`` for each column).

    Call inside the schema-setup transaction (after ``create_all``), under its lock.
    """
    added: list[str] = []
    inspector = inspect(conn)
    for table in (batches, jobs):
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for name in ADDED_COLUMNS[table.name]:
            if name in present:
                continue
            ddl = CreateColumn(table.c[name]).compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {ddl}"))
            added.append(f"{table.name}.{name}")
    if version < 4:
        _rekey_jobs(conn)
        added += ["jobs.variant", "jobs.repeat"]
    return added


def _rekey_jobs(conn: Connection) -> None:
    """Jobs keyed by (batch_id, record_id) become keyed by (batch_id, record_id, variant,
    repeat). PostgreSQL alters the table in place; SQLite, which cannot change a primary
    key, copies it into a new one."""
    if conn.dialect.name == "postgresql":
        pk = inspect(conn).get_pk_constraint("jobs").get("name") or "jobs_pkey"
        conn.execute(
            text(
                "ALTER TABLE jobs ADD COLUMN variant VARCHAR(64) NOT NULL DEFAULT 'default', "
                "ADD COLUMN repeat INTEGER NOT NULL DEFAULT 0"
            )
        )
        conn.execute(text(f'ALTER TABLE jobs DROP CONSTRAINT "{pk}"'))
        conn.execute(
            text("ALTER TABLE jobs ADD PRIMARY KEY (batch_id, record_id, variant, repeat)")
        )
        return
    old = [c["name"] for c in inspect(conn).get_columns("jobs")]
    for index in jobs.indexes:
        conn.execute(text(f"DROP INDEX IF EXISTS {index.name}"))
    conn.execute(text("ALTER TABLE jobs RENAME TO jobs_before_v4"))
    jobs.create(conn)
    columns = ", ".join(old)
    conn.execute(
        text(
            f"INSERT INTO jobs ({columns}, variant, repeat) "
            f"SELECT {columns}, 'default', 0 FROM jobs_before_v4"
        )
    )
    conn.execute(text("DROP TABLE jobs_before_v4"))
