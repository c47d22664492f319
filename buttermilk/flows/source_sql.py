"""``type: sql``: the rows of a query, through SQLAlchemy, streamed.

The query runs once per read with a server-side cursor (``stream_results=True``,
``yield_per``): PostgreSQL (psycopg) keeps a named cursor, SQLite steps its statement,
so a table of any size is read a page at a time. Each row is ``{column: value}`` with
the driver's values (decimals, dates, bytes kept; see :mod:`buttermilk.values`), at the
location ``data source 'NAME' row N`` (1-based). BigQuery works through its dialect
(``bigquery://PROJECT/DATASET``, ``pip install 'buttermilk-batch[bigquery]'``).

A source never writes: the query runs in a transaction that is rolled back, read-only
where the dialect has it (PostgreSQL's ``READ ONLY``, SQLite's ``query_only``); on other
dialects a statement that starts with a writing keyword (``delete``, ``drop``, ...) is
refused before it runs. A query that returns no rows is refused (it must be a SELECT).

Errors are one line naming the source, with the database's own message (not the
cursor's ``DECLARE``) and the URL without its password: a bad URL or query, a missing
driver, a SQLite file that does not exist (never created) or a server that refuses the
connection (no such database, bad credentials) is a DataSourceError (exit 2); a server
that cannot be reached, or does not answer within the source's ``timeout`` seconds
(``connect_timeout`` of PostgreSQL, whole seconds, at least 2), is a
SourceUnavailableError (exit 1).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from typing import Any

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import SqlSource

YIELD_PER = 1_000  # rows fetched from the server-side cursor at a time
DRIVER_EXTRAS = {"bigquery": "bigquery"}
# What a PostgreSQL server answers (FATAL, no SQLSTATE at connect in psycopg) when the
# URL is wrong rather than the server down: the user's to fix.
_REFUSED = re.compile(
    r"FATAL: (database \S+ does not exist|role \S+ does not exist|password authentication "
    r"failed|no pg_hba\.conf entry|permission denied)"
)


# The database refused a write in the read-only transaction a source's query runs in
# (SQLite's query_only, PostgreSQL's READ ONLY); PostgreSQL's cursor (DECLARE ... FOR)
# takes no INSERT/UPDATE/DELETE at all, calling it a syntax error at its first word.
_WRITE_REFUSED = re.compile(
    r"attempt to write a readonly database|in a read-only transaction|syntax error at or near "
    r'"(insert|update|delete|merge|drop|create|alter|truncate|grant|revoke|call|copy)"',
    re.IGNORECASE,
)
# A statement that writes, refused before it runs on a dialect without read-only transactions
_WRITES = re.compile(
    r"^\s*(insert|update|delete|merge|drop|create|alter|truncate|replace|grant|revoke|call|"
    r"exec|execute|copy|upsert)\b",
    re.IGNORECASE,
)
READS_ONLY = "a source only reads: its query must return rows (a SELECT); nothing was changed"


def shown_url(url: str) -> str:
    """``url`` without its password (``***``), as messages and snapshots show it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a SQLAlchemy URL>"


def _message(exc: BaseException, url: str) -> str:
    """The database's own message, on one line, without the URL's password (PostgreSQL's
    primary message and detail: its full text quotes the cursor's DECLARE)."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if primary:
        detail = getattr(diag, "message_detail", None)
        text = " ".join(f"{primary}{f' ({detail})' if detail else ''}".split())
    else:
        text = " ".join(str(orig).split())
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:  # an unparsable URL has no password to hide
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def row_groups(name: str, source: SqlSource) -> Iterator[tuple[str, Iterator[Row]]]:
    """One group: the query's rows, in the order the database returns them."""
    yield "sql", _rows(name, source)


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    """The driver's own timeout option for ``url``'s dialect (none for others)."""
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        return {"connect_timeout": max(2, math.ceil(timeout))}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite URL's database file when that file does not exist."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:"):  # a URI filename (?uri=true)
        database = database.removeprefix("file:").split("?", 1)[0]
    path = os.path.expanduser(database)
    return None if os.path.isfile(path) else database


def _engine(name: str, source: SqlSource) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        missing = _missing_sqlite_file(source.url)
        if missing is not None:
            raise DataSourceError(
                f"data source {name!r} ({shown_url(source.url)}): the database file does not "
                f"exist: {missing}"
            )
        return create_engine(source.url, connect_args=_connect_args(source.url, source.timeout))
    except NoSuchModuleError as exc:
        dialect = str(exc).rsplit(":", 1)[-1].strip()
        extra = DRIVER_EXTRAS.get(dialect)
        how = f": pip install 'buttermilk-batch[{extra}]'" if extra else ""
        raise MissingPackageError(
            f"data source {name!r}: no SQLAlchemy dialect {dialect!r} is installed{how}"
        ) from None
    except ImportError as exc:
        raise MissingPackageError(
            f"data source {name!r}: the database driver is not installed ({exc})"
        ) from None
    except ArgumentError as exc:
        raise DataSourceError(
            f"data source {name!r}: url is not a SQLAlchemy URL ({_message(exc, source.url)})"
        ) from None


def _read_only(conn: Any) -> Any:
    """``conn`` in a transaction that cannot write where the dialect allows it
    (PostgreSQL's ``READ ONLY``, SQLite's ``query_only``); every dialect's is rolled back."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return conn.execution_options(postgresql_readonly=True)
    if dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")  # the engine is this read's alone
    return conn


def _query_rows(conn: Any, where: str, source: SqlSource) -> Iterator[Row]:
    """The query's rows, in a transaction rolled back at the end: a source never writes."""
    from sqlalchemy import text

    conn = _read_only(conn)
    if conn.dialect.name not in ("postgresql", "sqlite") and _WRITES.match(source.query):
        raise DataSourceError(f"{where}: the query writes; {READS_ONLY}")
    try:
        result = conn.execution_options(stream_results=True, yield_per=YIELD_PER).execute(
            text(source.query)
        )
        with contextlib.closing(result):  # its server-side cursor, however left
            if not result.returns_rows:
                raise DataSourceError(f"{where}: the query returns no rows; {READS_ONLY}")
            names = list(result.keys())
            if len(set(names)) != len(names):
                twice = sorted({n for n in names if names.count(n) > 1})
                raise DataSourceError(
                    f"{where}: the query names column(s) {twice} twice; give each a "
                    "name of its own (AS ...)"
                )
            for index, row in enumerate(result, start=1):
                yield f"{where} row {index}", dict(zip(names, row, strict=True))
    finally:
        if not conn.invalidated:
            conn.rollback()


def _rows(name: str, source: SqlSource) -> Iterator[Row]:
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    engine = _engine(name, source)
    where = f"data source {name!r} ({shown_url(source.url)})"
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            message = f"{where}: cannot connect: {_message(exc, source.url)}"
            # The server answered (no such database, bad credentials): exit 2, not 1.
            if engine.dialect.name == "sqlite" or _REFUSED.search(message):
                raise DataSourceError(message) from None
            raise SourceUnavailableError(message) from None
        with conn:
            try:
                yield from _query_rows(conn, where, source)
            except (DBAPIError, SQLAlchemyError) as exc:
                if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    raise SourceUnavailableError(
                        f"{where}: the connection was lost: {_message(exc, source.url)}"
                    ) from None
                said = _message(exc, source.url)
                hint = f"; {READS_ONLY}" if _WRITE_REFUSED.search(said) else ""
                raise DataSourceError(f"{where}: the query failed: {said}{hint}") from None
    finally:
        engine.dispose()
