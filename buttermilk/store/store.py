"""The batch store: the one source of truth about batches, jobs, results and errors.

Methods are synchronous and short; async callers run them in a worker thread. Every
state change is a conditional UPDATE, so that concurrent workers (threads, processes or
machines) can never both claim a job or both record its outcome.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Integer,
    RowMapping,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, InterfaceError, SQLAlchemyError, StatementError
from sqlalchemy.sql.elements import ColumnElement

from buttermilk import values
from buttermilk.batch.models import (
    BatchInfo,
    BatchRequest,
    BatchStatus,
    ErrorCount,
    JobInfo,
    JobStatus,
)
from buttermilk.errors import (
    AmbiguousBatchIdError,
    BatchStateError,
    StoreError,
    StoreValueError,
    UnknownBatchError,
)
from buttermilk.records import Record
from buttermilk.store import bulk, counters, lost
from buttermilk.store.schema import (
    SCHEMA_VERSION,
    JSONType,
    batches,
    jobs,
    meta,
    metadata,
    migrate,
)
from buttermilk.store.spending import Spent, charge, spent_in
from buttermilk.store.url import check_url

INSERT_CHUNK = 5_000
ANALYZE_AFTER = 1_000  # jobs in a new batch that make PostgreSQL refresh its statistics
SCHEMA_LOCK_KEY = 0x6275_7474_6572  # any constant: PostgreSQL advisory lock for schema setup
LIVE_BATCH = (BatchStatus.PENDING.value, BatchStatus.RUNNING.value)
OPEN_JOB = (JobStatus.PENDING.value, JobStatus.RUNNING.value)


class SkipReason(StrEnum):
    """Why a claim did not give the job to the caller."""

    DONE = "done"  # the job has ended already: the message is a duplicate
    BUSY = "busy"  # another worker holds a live lease on it
    BATCH_ENDED = "batch_ended"  # its batch was cancelled, failed or completed
    UNKNOWN = "unknown"  # no such job (a deleted batch, or a foreign message)
    LOST = "lost"  # its worker was lost on its last try: this claim failed it (WorkerLost)


@dataclass(frozen=True)
class Claim:
    batch_id: str
    record_id: str
    max_attempts: int | None = None
    """The batch's max_attempts: the claim that reaches it is the job's last try."""
    last_delivery: bool = False
    """The transport gives the message up after this delivery: a claim now is the last try."""


@dataclass(frozen=True)
class Claimed:
    """The caller now runs this job, and must report its outcome with ``token``."""

    batch_id: str
    record_id: str
    token: str
    attempts: int
    record: Record

    def outcome(self, status: JobStatus, **fields: Any) -> Outcome:
        """How this claimed job ended (see :class:`Outcome` for the fields)."""
        return Outcome(self.batch_id, self.record_id, self.token, status, **fields)


@dataclass(frozen=True)
class Skipped:
    batch_id: str
    record_id: str
    reason: SkipReason


@dataclass(frozen=True)
class Outcome:
    """How one claimed job ended (or why it goes back to pending)."""

    batch_id: str
    record_id: str
    token: str
    status: JobStatus
    duration: float | None = None
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    release: bool = False  # back to pending without spending an attempt (worker shutdown)
    stop_batch: bool = False  # a final failure under error_policy=stop


@dataclass
class Requeued:
    batch: BatchInfo
    record_ids: list[str] = field(default_factory=list)


def _dumps(value: Any) -> str:
    """JSON for the store's columns: exact for every value (see :mod:`buttermilk.values`)."""
    return values.dumps_text(value)


def _store_failure(
    exc: BaseException, doing: str, value_errors: tuple[type[BaseException], ...]
) -> StoreError:
    """``doing`` and the first line of the driver's message (later lines, e.g. psycopg's
    DETAIL and CONTEXT, and SQLAlchemy's wrapper text quote the values of the statement)."""
    reason = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    said = str(reason).split(" (Background on this error at:", 1)[0].strip()
    said = said.splitlines()[0].strip() if said else ""
    said = said[:300] or type(reason).__name__
    kind = StoreValueError if isinstance(reason, value_errors) else StoreError
    return kind(f"{doing}: {said}")


def _lost_connection(exc: BaseException) -> bool:
    """Whether a PostgreSQL error says the server could not be reached or dropped the
    connection, rather than refusing a statement: the driver's OperationalError with no
    SQLSTATE (the connection itself failed), class 08 (connection exception) or 57P (the
    server is shutting down)."""
    if isinstance(exc, InterfaceError):
        return True
    reason = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    if not any(kind.__name__ == "OperationalError" for kind in type(reason).__mro__):
        return False
    state = getattr(reason, "sqlstate", None)
    return state is None or str(state).startswith(("08", "57P"))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" hook issue BEGIN itself
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # Writers take the lock up front: a deferred transaction that upgrades to a write
    # fails at once with SQLITE_BUSY instead of waiting for the busy timeout.
    mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            json_serializer=_dumps,
            json_deserializer=values.loads,
            connect_args={"timeout": 30},
            # In-process SQLite has no round trips to save: plain executemany is faster
            # than SQLAlchemy's multi-row VALUES batches.
            use_insertmanyvalues=False,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        json_serializer=_dumps,
        json_deserializer=values.loads,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
    )


def _batch(row: RowMapping) -> BatchInfo:
    """Every read of a batch row goes through here. It never fails on a stored request
    this version refuses: that one batch shows its problem, and the others still read."""
    request, problem = BatchRequest.from_stored(row["request"], row["flow"])
    error = row["error"]
    if problem:
        error = f"{error}; {problem}" if error else problem
    return BatchInfo(
        id=row["id"],
        flow=row["flow"],
        status=BatchStatus(row["status"]),
        request=request,
        request_error=problem,
        stored_request=row["request"] if problem and isinstance(row["request"], dict) else None,
        flow_snapshot=row["flow_snapshot"],
        total=row["total"],
        seed=row["seed"],
        published=row["published"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=error,
        cost=row.get("cost"),
        input_tokens=row.get("input_tokens") or 0,
        output_tokens=row.get("output_tokens") or 0,
    )


def _job(row: RowMapping, *, with_record: bool = True) -> JobInfo:
    return JobInfo(
        batch_id=row["batch_id"],
        record_id=row["record_id"],
        seq=row["seq"],
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        worker=row["worker"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration=row["duration"],
        result=row["result"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        traceback=row["traceback"],
        record=Record.model_validate(row["record"]) if with_record else None,
        cost=row["cost"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
    )


def _job_key() -> Any:
    return and_(jobs.c.batch_id == bindparam("p_batch"), jobs.c.record_id == bindparam("p_record"))


def _is(column: Any, *values: str) -> Any:
    return or_(*(column == literal(v) for v in values))


# Hot statements are built once: building a statement costs far more than running it.
_CLAIM = (
    update(jobs)
    .where(
        _job_key(),
        or_(
            jobs.c.status == literal(JobStatus.PENDING.value),
            and_(
                jobs.c.status == literal(JobStatus.RUNNING.value),
                jobs.c.lease_until < bindparam("p_now"),
                jobs.c.last_try.is_(False),  # lost on its last try: it fails instead
            ),
        ),
        exists().where(batches.c.id == bindparam("p_batch"), _is(batches.c.status, *LIVE_BATCH)),
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
_START_BATCH = (
    update(batches)
    .where(
        batches.c.id == bindparam("p_batch"), batches.c.status == literal(BatchStatus.PENDING.value)
    )
    .values(status=BatchStatus.RUNNING.value, started_at=bindparam("p_now"))
)
_JOB_AND_BATCH_STATUS = (
    select(jobs.c.status, batches.c.status, jobs.c.last_try, jobs.c.lease_until)
    .join(batches, batches.c.id == jobs.c.batch_id)
    .where(_job_key())
)
_OWNED = and_(
    _job_key(),
    jobs.c.claim_token == bindparam("p_token"),
    jobs.c.status == literal(JobStatus.RUNNING.value),
)
_OUTCOME_VALUES: dict[str, Any] = {
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
_FINISH = update(jobs).where(_OWNED).values(**_OUTCOME_VALUES)
_RELEASE = (
    update(jobs)
    .where(_OWNED)
    .values(**_OUTCOME_VALUES, attempts=jobs.c.attempts - 1, started_at=None)
)
_EXTEND = (
    update(jobs)
    .where(_job_key(), jobs.c.claim_token == bindparam("p_token"))
    .values(lease_until=bindparam("p_lease"))
)
_SQLITE_INSERT_JOBS = (
    "INSERT INTO jobs (batch_id, record_id, seq, status, attempts, record) "
    "VALUES (?, ?, ?, ?, 0, ?)"
)
_LOCK_BATCHES = (
    select(batches.c.id)
    .where(batches.c.id.in_(bindparam("p_batches", expanding=True)))
    .order_by(batches.c.id)
    .with_for_update()
)
_COMPLETE = (
    update(batches)
    .where(
        batches.c.id == bindparam("p_batch"),
        batches.c.status == literal(BatchStatus.RUNNING.value),
        batches.c.published.is_(True),
        ~exists().where(jobs.c.batch_id == bindparam("p_batch"), _is(jobs.c.status, *OPEN_JOB)),
    )
    .values(status=BatchStatus.COMPLETED.value, finished_at=bindparam("p_now"))
)


class Store:
    """Batches and jobs in a SQL database (``sqlite:///...`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str) -> None:
        """Open (and if need be set up) the store at ``url``.

        Raises InvalidOptionError for a URL it cannot use and StoreError (one line) when
        the database cannot be opened or read.
        """
        self.url = url
        is_sqlite = check_url(url).get_backend_name() == "sqlite"
        self._is_sqlite = is_sqlite
        self._running: set[str] = set()  # batches seen past pending: no start update needed
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if is_sqlite else nullcontext()
        )
        self._database_errors: tuple[type[BaseException], ...] = (SQLAlchemyError,)
        self._value_errors: tuple[type[BaseException], ...] = (DataError,)
        opening = f"cannot open the batch store at {self.safe_url}"
        try:
            self.engine = make_engine(url)
            dbapi = self.engine.dialect.loaded_dbapi
            self._database_errors = (SQLAlchemyError, dbapi.Error)  # raw-driver paths too
            self._value_errors = (DataError, dbapi.DataError)
            self._init_schema(opening)
        except OSError as exc:
            raise StoreError(f"{opening}: {exc}") from None

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- plumbing ------------------------------------------------------------------

    @contextmanager
    def _failing_as(self, doing: str | None = None) -> Iterator[None]:
        """Database errors inside become one-line StoreErrors: ``"{doing}: {driver's message}"``.

        SQLAlchemy's own text of a failed statement carries its SQL and every value bound
        to it (whole records), so it is never shown, logged or chained. A value the
        database cannot hold (DataError) becomes StoreValueError, a UsageError.
        """
        try:
            yield
        except StoreError:
            raise
        except self._database_errors as exc:
            if not self._is_sqlite and _lost_connection(exc):  # whatever it was doing
                doing = f"cannot reach the batch store at {self.safe_url}"
            doing = doing or f"the batch store at {self.safe_url} failed"
            raise _store_failure(exc, doing, self._value_errors) from None

    @contextmanager
    def _write(self, doing: str | None = None) -> Iterator[Connection]:
        # SQLite allows one writer at a time; threads of this process queue on a lock
        # here rather than in SQLite's busy handler, which sleeps for milliseconds.
        with (
            self._failing_as(doing),
            self._write_lock,
            self.engine.connect().execution_options(write=True) as conn,
            conn.begin(),
        ):
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._failing_as(), self.engine.connect() as conn, conn.begin():
            yield conn

    def transaction(self, *, write: bool) -> AbstractContextManager[Connection]:
        """A short transaction for state other modules keep in this store (LLM rate budgets
        and answers: :mod:`buttermilk.store.llm_state`). Writers queue as the store's do."""
        return self._write() if write else self._read()

    def _init_schema(self, doing: str) -> None:
        with self._write(doing) as conn:
            if not self._is_sqlite:
                # Workers starting together must not race to create the same tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            metadata.create_all(conn, checkfirst=True)
            if not self._is_sqlite:
                counters.install(conn)
            version = conn.execute(
                select(meta.c.value).where(meta.c.key == "schema_version")
            ).scalar()
            if version is None:
                conn.execute(insert(meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(version) < SCHEMA_VERSION:
                migrate(conn)
                conn.execute(
                    update(meta)
                    .where(meta.c.key == "schema_version")
                    .values(value=str(SCHEMA_VERSION))
                )
            elif int(version) > SCHEMA_VERSION:
                raise StoreError(
                    f"the batch store at {self.safe_url} has schema version {version}, newer than "
                    f"this Buttermilk understands ({SCHEMA_VERSION}); upgrade Buttermilk"
                )

    # -- batches -------------------------------------------------------------------

    def create_batch(
        self,
        *,
        batch_id: str,
        request: BatchRequest,
        flow_snapshot: dict[str, Any],
        seed: int,
        records: Sequence[Record],
    ) -> BatchInfo:
        """Store a batch and one pending job per record, all in one transaction."""
        now = time.time()
        row = {
            "id": batch_id,
            "flow": request.flow,
            "status": BatchStatus.PENDING.value,
            "request": request.model_dump(mode="json"),
            "flow_snapshot": flow_snapshot,
            "total": len(records),
            "seed": seed,
            "published": False,
            "created_at": now,
            "max_cost": request.max_cost,
        }
        with self._write(f"cannot store the new batch ({len(records):,} jobs)") as conn:
            conn.execute(insert(batches), row)
            for start in range(0, len(records), INSERT_CHUNK):
                self._insert_jobs(conn, batch_id, start, records[start : start + INSERT_CHUNK])
        if not self._is_sqlite and len(records) >= ANALYZE_AFTER:
            # Fresh statistics, so that claims by primary key are planned as such.
            with self._failing_as(), self.engine.connect() as conn:
                conn.execute(text("ANALYZE jobs"))
                conn.commit()
        return _batch(row | {"started_at": None, "finished_at": None, "error": None})  # type: ignore[arg-type]

    def _insert_jobs(
        self, conn: Connection, batch_id: str, start: int, records: Sequence[Record]
    ) -> None:
        pending = JobStatus.PENDING.value
        if self._is_sqlite:
            # SQLite runs in this process: its executemany, fed tuples, is three times
            # faster than SQLAlchemy's per-row parameter handling.
            conn.exec_driver_sql(
                _SQLITE_INSERT_JOBS,
                [
                    (batch_id, rec.record_id, start + n, pending, _dumps(dict(rec.__dict__)))
                    for n, rec in enumerate(records)
                ],
            )
            return
        # COPY: one stream, one job-count trigger run (an INSERT per row would fire it
        # per row, and costs a round trip each).
        bulk.copy_jobs(
            conn,
            (
                (batch_id, rec.record_id, start + n, pending, 0, _dumps(dict(rec.__dict__)))
                for n, rec in enumerate(records)
            ),
        )

    def mark_published(self, batch_id: str) -> None:
        with self._write() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(published=True))

    def delete_batch(self, batch_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(jobs).where(jobs.c.batch_id == batch_id))
            conn.execute(delete(batches).where(batches.c.id == batch_id))

    def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of the one batch whose id is, or starts with, ``id_or_prefix``."""
        prefix = id_or_prefix.strip()
        if not prefix:
            raise UnknownBatchError("no batch id given: set batch.batch_id=ID (a prefix is enough)")
        with self._read() as conn:
            exact = conn.execute(select(batches.c.id).where(batches.c.id == prefix)).scalar()
            if exact:
                return str(exact)
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            found = (
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.id.like(f"{escaped}%", escape="\\"))
                    .limit(3)
                )
                .scalars()
                .all()
            )
        if not found:
            raise UnknownBatchError(
                f"unknown batch id {prefix!r}: no batch has this id or prefix "
                "(batch.command=list shows them)"
            )
        if len(found) > 1:
            raise AmbiguousBatchIdError(
                f"batch id prefix {prefix!r} matches several batches ({', '.join(found)}, ...): "
                "give more characters"
            )
        return str(found[0])

    def get_batch(self, batch_id: str) -> BatchInfo:
        with self._read() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).mappings().first()
        if row is None:
            raise UnknownBatchError(f"unknown batch id {batch_id!r}")
        return _batch(row)

    def list_batches(
        self,
        *,
        status: BatchStatus | None = None,
        flow: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[BatchInfo]:
        query = select(batches).order_by(batches.c.created_at.desc(), batches.c.id)
        if status is not None:
            query = query.where(batches.c.status == status.value)
        if flow is not None:
            query = query.where(batches.c.flow == flow)
        with self._read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
        return [_batch(row) for row in rows]

    def count_batches(self, *, status: BatchStatus | None = None, flow: str | None = None) -> int:
        query = select(func.count()).select_from(batches)
        if status is not None:
            query = query.where(batches.c.status == status.value)
        if flow is not None:
            query = query.where(batches.c.flow == flow)
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def job_counts(self, batch_ids: Sequence[str]) -> dict[str, dict[JobStatus, int]]:
        """Jobs per status for each batch (SQLite: an index range scan; PostgreSQL: counters)."""
        counts: dict[str, dict[JobStatus, int]] = {bid: {} for bid in batch_ids}
        if not batch_ids:
            return counts
        found: Sequence[tuple[Any, ...]]
        with self._read() as conn:
            if self._is_sqlite:
                query = (
                    select(jobs.c.batch_id, jobs.c.status, func.count())
                    .where(jobs.c.batch_id.in_(batch_ids))
                    .group_by(jobs.c.batch_id, jobs.c.status)
                )
                found = [tuple(row) for row in conn.execute(query)]
            else:  # counters kept by triggers: no scan of the jobs
                found = counters.read(conn, batch_ids)
            for batch_id, status, count in found:
                counts[batch_id][JobStatus(status)] = int(count)
        return counts

    def common_errors(self, batch_id: str, limit: int = 5) -> list[ErrorCount]:
        count = func.count().label("n")
        query = (
            select(jobs.c.error_type, jobs.c.error_message, count)
            .where(jobs.c.batch_id == batch_id, jobs.c.status == JobStatus.FAILED.value)
            .group_by(jobs.c.error_type, jobs.c.error_message)
            .order_by(count.desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [
                ErrorCount(error_type=t or "", error_message=m or "", count=int(n))
                for t, m, n in conn.execute(query)
            ]

    def batch_statuses(self, batch_ids: Iterable[str]) -> dict[str, BatchStatus]:
        ids = list(batch_ids)
        if not ids:
            return {}
        with self._read() as conn:
            rows = conn.execute(select(batches.c.id, batches.c.status).where(batches.c.id.in_(ids)))
            return {bid: BatchStatus(status) for bid, status in rows}

    def cancel(self, batch_id: str, reason: str = "cancelled by user") -> BatchInfo:
        """End a live batch as cancelled; its pending jobs (and abandoned running ones) too.

        Cancelling a cancelled batch changes nothing; a completed or failed batch cannot be
        cancelled. Jobs running on live workers are cancelled by those workers.
        """
        now = time.time()
        with self._write() as conn:
            status = conn.execute(select(batches.c.status).where(batches.c.id == batch_id)).scalar()
            if status is None:
                raise UnknownBatchError(f"unknown batch id {batch_id!r}")
            if status in (BatchStatus.COMPLETED.value, BatchStatus.FAILED.value):
                raise BatchStateError(
                    f"batch {batch_id} has already ended ({status}); nothing to cancel"
                )
            if status != BatchStatus.CANCELLED.value:
                conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id)
                    .values(status=BatchStatus.CANCELLED.value, finished_at=now, error=reason)
                )
                self._cancel_open_jobs(conn, batch_id, now)
        return self.get_batch(batch_id)

    @staticmethod
    def _cancel_open_jobs(conn: Connection, batch_id: str, now: float) -> None:
        conn.execute(
            update(jobs)
            .where(
                jobs.c.batch_id == batch_id,
                or_(
                    jobs.c.status == JobStatus.PENDING.value,
                    and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now),
                ),
            )
            .values(status=JobStatus.CANCELLED.value, finished_at=now)
        )

    def requeue(self, batch_id: str) -> Requeued:
        """Make every job that did not complete, and does not run under a live lease,
        runnable again with a fresh attempt budget, and list them for publishing.

        Failed and cancelled jobs go back to pending. Pending jobs are listed too, since
        their messages may be gone (a transport that lost them, a batch that ended, a
        publish that never finished); a delivery of a job that has a message already is
        dropped by the claim. So are running jobs whose lease ran out (their worker died).
        The batch becomes live again.
        """
        with self._write() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).mappings().first()
            if row is None:
                raise UnknownBatchError(f"unknown batch id {batch_id!r}")
            batch = _batch(row)
            wanted = [JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.PENDING.value]
            abandoned = and_(
                jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < time.time()
            )
            selected: ColumnElement[bool] = or_(jobs.c.status.in_(wanted), abandoned)
            ids = list(
                conn.execute(
                    select(jobs.c.record_id)
                    .where(jobs.c.batch_id == batch_id, selected)
                    .order_by(jobs.c.seq)
                ).scalars()
            )
            if not ids:
                raise BatchStateError(
                    f"batch {batch_id} has nothing to retry: every job completed or runs "
                    "under a live lease"
                )
            conn.execute(
                update(jobs)
                .where(jobs.c.batch_id == batch_id, selected)
                .values(
                    status=JobStatus.PENDING.value,
                    attempts=0,
                    last_try=False,
                    lost=0,
                    claim_token=None,
                    lease_until=None,
                    finished_at=None,
                    error_type=None,
                    error_message=None,
                    traceback=None,
                )
            )
            new_status = BatchStatus.RUNNING if batch.started_at else BatchStatus.PENDING
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(status=new_status.value, finished_at=None, error=None, published=False)
            )
        return Requeued(batch=self.get_batch(batch_id), record_ids=ids)

    # -- jobs ----------------------------------------------------------------------

    def claim(
        self, claims: Sequence[Claim], *, worker: str, lease: float
    ) -> list[Claimed | Skipped]:
        """Try to start each job; a job goes to at most one live claimer at a time.

        A job can be claimed when it is pending, or running under a lease that has
        expired (its worker died) on a try that was not its last, and only while its batch
        is live. A job whose worker died on its last try fails instead (SkipReason.LOST).
        """
        return self.exchange(claims, worker=worker, lease=lease)  # type: ignore[return-value]

    def exchange(
        self, ops: Sequence[Claim | Outcome], *, worker: str, lease: float
    ) -> list[Claimed | Skipped | bool]:
        """Record outcomes and claim jobs in one transaction; a result per op, in order.

        An outcome gives True, or False where its claim was lost meanwhile (another
        worker took the job over). A claim gives Claimed or Skipped. Batch rows are
        locked first, in id order, so concurrent exchanges cannot deadlock (PostgreSQL).
        """
        results: list[Claimed | Skipped | bool] = []
        outcome_batches = {op.batch_id for op in ops if isinstance(op, Outcome)}
        started: set[str] = set()
        with self._write() as conn:
            now = time.time()  # after waiting for the lock: leases start when granted
            self._lock_batches(conn, {op.batch_id for op in ops})
            if not self._is_sqlite:
                results = self._exchange_bulk(conn, ops, worker=worker, lease=lease, now=now)
                ops = []  # done: a few statements for the whole round
                started = {r.batch_id for r in results if isinstance(r, Claimed)}
            for op in ops:
                if isinstance(op, Outcome):
                    results.append(self._record_outcome(conn, op, now))
                    continue
                token = secrets.token_hex(8)
                row = conn.execute(
                    _CLAIM,
                    {
                        "p_batch": op.batch_id,
                        "p_record": op.record_id,
                        "p_now": now,
                        "p_token": token,
                        "p_lease": now + lease,
                        "p_worker": worker,
                        "p_max": op.max_attempts or lost.NO_LIMIT,
                        "p_last": op.last_delivery,
                    },
                ).first()
                if row is not None:
                    started.add(op.batch_id)
                    record = Record.model_validate(row[1])
                    results.append(Claimed(op.batch_id, op.record_id, token, int(row[0]), record))
                else:
                    reason = self._not_claimed(conn, op, now)
                    results.append(Skipped(op.batch_id, op.record_id, reason))
            for batch_id in started - self._running:
                conn.execute(_START_BATCH, {"p_batch": batch_id, "p_now": now})
            complete = _COMPLETE if self._is_sqlite else bulk.COMPLETE
            # A job failed as lost may have been its batch's last open one.
            lost_batches = {
                r.batch_id
                for r in results
                if isinstance(r, Skipped) and r.reason == SkipReason.LOST
            }
            for batch_id in sorted(outcome_batches | lost_batches):
                conn.execute(complete, {"p_batch": batch_id, "p_now": now})
        # Once started, a batch never goes back to pending (retry keeps started ones running).
        self._running |= started
        return results

    def _exchange_bulk(
        self,
        conn: Connection,
        ops: Sequence[Claim | Outcome],
        *,
        worker: str,
        lease: float,
        now: float,
    ) -> list[Claimed | Skipped | bool]:
        """``exchange`` over a network: outcomes first, then claims, a statement each."""
        applied: dict[int, bool] = {}
        finished = [op for op in ops if isinstance(op, Outcome) and not op.release]
        if finished:
            spent = [spent_in(o.result) for o in finished]
            rows = [
                bulk.outcome_row(o, s, now, _dumps) for o, s in zip(finished, spent, strict=True)
            ]
            done = bulk.finish_many(conn, rows)
            for o, s in zip(finished, spent, strict=True):
                applied[id(o)] = (o.batch_id, o.record_id) in done
                if applied[id(o)]:
                    self._after_outcome(conn, o, now, s)
        for op in ops:
            if isinstance(op, Outcome) and op.release:
                applied[id(op)] = self._record_outcome(conn, op, now)
        token = secrets.token_hex(8)  # one per round: a re-claim always gets a new one
        wanted: dict[str, set[str]] = {}
        last_delivery: dict[str, set[str]] = {}
        max_attempts: dict[str, int] = {}
        for op in ops:
            if isinstance(op, Claim):
                wanted.setdefault(op.batch_id, set()).add(op.record_id)
                if op.last_delivery:
                    last_delivery.setdefault(op.batch_id, set()).add(op.record_id)
                if op.max_attempts:
                    max_attempts[op.batch_id] = op.max_attempts
        got: dict[tuple[str, str], tuple[int, Any]] = {}
        for batch_id in sorted(wanted):
            claimed = bulk.claim_many(
                conn,
                batch_id,
                sorted(wanted[batch_id]),
                token=token,
                worker=worker,
                now=now,
                lease=lease,
                max_attempts=max_attempts.get(batch_id, lost.NO_LIMIT),
                last_delivery=sorted(last_delivery.get(batch_id, ())),
            )
            got.update(((batch_id, rid), found) for rid, found in claimed.items())
        results: list[Claimed | Skipped | bool] = []
        handed: set[tuple[str, str]] = set()
        for op in ops:
            if isinstance(op, Outcome):
                results.append(applied[id(op)])
                continue
            key = (op.batch_id, op.record_id)
            if key in got and key not in handed:
                handed.add(key)
                attempts, record = got[key]
                record = Record.model_validate(record)
                results.append(Claimed(op.batch_id, op.record_id, token, attempts, record))
            elif key in handed:  # the same job twice in one round: this copy is a duplicate
                results.append(Skipped(op.batch_id, op.record_id, SkipReason.BUSY))
            else:
                results.append(Skipped(op.batch_id, op.record_id, self._not_claimed(conn, op, now)))
        return results

    def _lock_batches(self, conn: Connection, batch_ids: Iterable[str]) -> None:
        """Lock batch rows in id order (PostgreSQL). SQLite's BEGIN IMMEDIATE already
        gave this transaction the whole database."""
        if not self._is_sqlite:
            conn.execute(_LOCK_BATCHES, {"p_batches": sorted(batch_ids)})

    def _not_claimed(self, conn: Connection, c: Claim, now: float) -> SkipReason:
        """Why a claim did not take its job; a job lost on its last try fails here."""
        row = conn.execute(
            _JOB_AND_BATCH_STATUS, {"p_batch": c.batch_id, "p_record": c.record_id}
        ).first()
        if row is None:
            return SkipReason.UNKNOWN
        job_status, batch_status, last_try, lease_until = row
        if job_status not in OPEN_JOB:
            return SkipReason.DONE
        if batch_status not in LIVE_BATCH:
            return SkipReason.BATCH_ENDED
        if last_try and lease_until is not None and lease_until < now:
            if self._fail_lost(conn, c.batch_id, now, [c.record_id]):
                return SkipReason.LOST
        elif c.last_delivery:
            # This message is about to be given up by its transport while another claim
            # runs the job: should that worker be dead, nothing would ever end the job.
            lost.mark_last_try(conn, c.batch_id, c.record_id)
        return SkipReason.BUSY

    def _fail_lost(
        self, conn: Connection, batch_id: str, now: float, record_ids: list[str] | None = None
    ) -> int:
        """Fail the batch's jobs lost on their last try (see :mod:`buttermilk.store.lost`),
        stopping the batch under error_policy=stop; returns how many failed."""
        failed = lost.fail_lost(conn, batch_id, now, record_ids)
        if failed:
            request = conn.execute(select(batches.c.request).where(batches.c.id == batch_id))
            if (request.scalar() or {}).get("error_policy") == "stop":
                record_id, error = failed[0]
                self._fail_batch(
                    conn,
                    batch_id,
                    now,
                    f"stopped by error_policy=stop: record {record_id!r} failed "
                    f"({lost.ERROR_TYPE}: {error})",
                )
        return len(failed)

    def fail_lost_jobs(self, batch_ids: Iterable[str]) -> int:
        """Fail the running jobs of these live batches whose worker was lost on their last
        try, then complete each batch left with no open job; returns how many failed.

        Cheap when there is none (one read); status and workers' heartbeats call it.
        """
        ids = list(batch_ids)
        with self._read() as conn:
            found = lost.batches_with_lost_jobs(conn, ids, time.time())
        if not found:
            return 0
        failed = 0
        with self._write() as conn:
            now = time.time()
            self._lock_batches(conn, found)
            complete = _COMPLETE if self._is_sqlite else bulk.COMPLETE
            for batch_id in found:
                failed += self._fail_lost(conn, batch_id, now)
                conn.execute(complete, {"p_batch": batch_id, "p_now": now})
        return failed

    def extend_leases(self, held: Sequence[tuple[str, str, str]], until: float) -> None:
        """Push back the lease of running jobs: (batch_id, record_id, token) each."""
        if not held:
            return
        params = [{"p_batch": b, "p_record": r, "p_token": t, "p_lease": until} for b, r, t in held]
        with self._write() as conn:
            conn.execute(_EXTEND, params)

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record how claimed jobs ended; False where the claim was lost meanwhile.

        In the same transaction, a batch none of whose jobs is pending or running any
        more becomes completed. The batch rows are locked first (PostgreSQL), so of two
        workers finishing a batch's last two jobs at once, the later one sees both.
        """
        return self.exchange(outcomes, worker="", lease=0)  # type: ignore[return-value]

    def _record_outcome(self, conn: Connection, o: Outcome, now: float) -> bool:
        params = {
            "p_batch": o.batch_id,
            "p_record": o.record_id,
            "p_token": o.token,
            "p_status": o.status.value,
            "p_duration": o.duration,
            "p_result": o.result,
            "p_error_type": o.error_type,
            "p_error_message": o.error_message,
            "p_traceback": o.traceback,
            "p_finished": None if o.status == JobStatus.PENDING else now,
        }
        spent = spent_in(o.result)
        params["p_cost"] = spent.cost if spent else None
        params["p_input_tokens"] = spent.input_tokens if spent else None
        params["p_output_tokens"] = spent.output_tokens if spent else None
        done = bool(conn.execute(_RELEASE if o.release else _FINISH, params).rowcount)
        if done:
            self._after_outcome(conn, o, now, spent)
        return done

    def _after_outcome(self, conn: Connection, o: Outcome, now: float, spent: Spent | None) -> None:
        """What an applied outcome sets off: spending counted, a batch stopped."""
        if spent is not None:
            over_cap = charge(conn, o.batch_id, spent)
            if over_cap:
                self._fail_batch(conn, o.batch_id, now, f"{over_cap} (record {o.record_id!r})")
        if o.stop_batch:
            self._stop_batch(conn, o, now)

    def _fail_batch(self, conn: Connection, batch_id: str, now: float, error: str) -> None:
        """End a live batch as failed, like error_policy=stop (its open jobs cancelled)."""
        stopped = conn.execute(
            update(batches)
            .where(batches.c.id == batch_id, batches.c.status.in_(LIVE_BATCH))
            .values(status=BatchStatus.FAILED.value, finished_at=now, error=error)
        ).rowcount
        if stopped:
            self._cancel_open_jobs(conn, batch_id, now)

    def _stop_batch(self, conn: Connection, o: Outcome, now: float) -> None:
        stopped = conn.execute(
            update(batches)
            .where(batches.c.id == o.batch_id, batches.c.status.in_(LIVE_BATCH))
            .values(
                status=BatchStatus.FAILED.value,
                finished_at=now,
                error=f"stopped by error_policy=stop: record {o.record_id!r} failed "
                f"({o.error_type}: {o.error_message})",
            )
        ).rowcount
        if stopped:
            self._cancel_open_jobs(conn, o.batch_id, now)

    def complete_if_done(self, batch_id: str) -> bool:
        """Mark a running batch completed if none of its jobs is pending or running."""
        with self._write() as conn:
            self._lock_batches(conn, [batch_id])
            return bool(
                conn.execute(_COMPLETE, {"p_batch": batch_id, "p_now": time.time()}).rowcount
            )

    def get_job(self, batch_id: str, record_id: str) -> JobInfo:
        with self._read() as conn:
            row = (
                conn.execute(
                    select(jobs).where(jobs.c.batch_id == batch_id, jobs.c.record_id == record_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise UnknownBatchError(f"batch {batch_id} has no job for record {record_id!r}")
        return _job(row)

    def recent_jobs(
        self, batch_id: str, *, status: JobStatus | None = None, limit: int = 50
    ) -> list[JobInfo]:
        """Jobs that have started, the most recently started first (for dashboards)."""
        query = select(jobs).where(jobs.c.batch_id == batch_id, jobs.c.started_at.is_not(None))
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        query = query.order_by(jobs.c.started_at.desc(), jobs.c.seq.desc()).limit(limit)
        with self._read() as conn:
            return [_job(row) for row in conn.execute(query).mappings()]

    def iter_jobs(
        self,
        batch_id: str,
        *,
        status: JobStatus | None = None,
        after_seq: int = -1,
        limit: int | None = None,
        chunk: int = 1_000,
    ) -> Iterator[JobInfo]:
        """Jobs of a batch in planned order, read in chunks (never all at once)."""
        remaining = limit
        while remaining is None or remaining > 0:
            size = chunk if remaining is None else min(chunk, remaining)
            query = select(jobs).where(jobs.c.batch_id == batch_id, jobs.c.seq > after_seq)
            if status is not None:
                query = query.where(jobs.c.status == status.value)
            with self._read() as conn:
                rows = conn.execute(query.order_by(jobs.c.seq).limit(size)).mappings().all()
            for row in rows:
                yield _job(row)
            if len(rows) < size:
                return
            after_seq = rows[-1]["seq"]
            if remaining is not None:
                remaining -= len(rows)
