"""Tables of the batch store (SQLAlchemy Core, portable across SQLite and PostgreSQL).

Times are UNIX seconds (floats) so that every backend stores and compares them alike.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA_VERSION = 1

metadata = MetaData()
JSONType = JSON().with_variant(JSONB(), "postgresql")

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
    Index("ix_batches_created_at", "created_at"),
    Index("ix_batches_status", "status"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("batch_id", String(32), ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True),
    Column("record_id", String(512), primary_key=True),
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
    Index("ix_jobs_batch_status", "batch_id", "status"),
    Index("ix_jobs_batch_seq", "batch_id", "seq"),
    Index("ix_jobs_batch_started", "batch_id", "started_at"),
)
