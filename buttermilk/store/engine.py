"""The store's plumbing: its engine, transactions, schema set-up, and one-line errors.

Methods of the store are synchronous and short; async callers run them in a worker
thread. Every state change is a conditional UPDATE, so that concurrent workers (threads,
processes or machines) can never both claim a job or both record its outcome.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError, InterfaceError, SQLAlchemyError, StatementError

from buttermilk import values
from buttermilk.errors import StoreError, StoreValueError
from buttermilk.store import counters
from buttermilk.store.schema import SCHEMA_VERSION, meta, metadata, migrate
from buttermilk.store.url import check_url

SCHEMA_LOCK_KEY = 0x6275_7474_6572  # any constant: PostgreSQL advisory lock for schema setup


def dumps(value: Any) -> str:
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
            json_serializer=dumps,
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
        json_serializer=dumps,
        json_deserializer=values.loads,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
    )


class StoreBase:
    """A connection to the store's database (``sqlite:///...`` or
    ``postgresql+psycopg://...``) and its transactions; the store's parts build on it."""

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
                migrate(conn, int(version))
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
