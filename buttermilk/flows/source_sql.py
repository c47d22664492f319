"""``type: sql``: the rows of a query, through SQLAlchemy, streamed.

The query runs once per read with a server-side cursor (``stream_results=True``,
``yield_per``): PostgreSQL (psycopg) keeps a named cursor, SQLite steps its statement,
so a table of any size is read a page at a time. Each row is ``{column: value}`` with
the driver's values (decimals, dates, bytes kept; see :mod:`buttermilk.values`), at the
location ``data source 'NAME' row N`` (1-based). BigQuery works through its dialect
(``bigquery://PROJECT/DATASET``, ``pip install 'buttermilk-batch[bigquery]'``).

Errors are one line naming the source, with the database's own message and the URL
without its password: a bad URL or query, or a missing driver, is a DataSourceError
(exit 2); a database server that cannot be reached is a SourceUnavailableError (exit 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import SqlSource

YIELD_PER = 1_000  # rows fetched from the server-side cursor at a time
DRIVER_EXTRAS = {"bigquery": "bigquery"}


def shown_url(url: str) -> str:
    """``url`` without its password (``***``), as messages and snapshots show it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a SQLAlchemy URL>"


def _message(exc: BaseException, url: str) -> str:
    """The database's own message, on one line, without the URL's password."""
    orig = getattr(exc, "orig", None) or exc
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


def _engine(name: str, source: SqlSource) -> Any:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        return create_engine(source.url)
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


def _rows(name: str, source: SqlSource) -> Iterator[Row]:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    engine = _engine(name, source)
    where = f"data source {name!r} ({shown_url(source.url)})"
    try:
        try:
            conn = engine.connect()
        except SQLAlchemyError as exc:
            message = f"{where}: cannot connect: {_message(exc, source.url)}"
            if engine.dialect.name == "sqlite":
                raise DataSourceError(message) from None
            raise SourceUnavailableError(message) from None
        with conn:
            try:
                result = conn.execution_options(stream_results=True, yield_per=YIELD_PER).execute(
                    text(source.query)
                )
                with contextlib.closing(result):  # its server-side cursor, however left
                    names = list(result.keys())
                    if len(set(names)) != len(names):
                        twice = sorted({n for n in names if names.count(n) > 1})
                        raise DataSourceError(
                            f"{where}: the query names column(s) {twice} twice; give each a "
                            "name of its own (AS ...)"
                        )
                    for index, row in enumerate(result, start=1):
                        location = f"data source {name!r} row {index}"
                        yield location, dict(zip(names, row, strict=True))
            except (DBAPIError, SQLAlchemyError) as exc:
                if isinstance(exc, DBAPIError) and exc.connection_invalidated:
                    raise SourceUnavailableError(
                        f"{where}: the connection was lost: {_message(exc, source.url)}"
                    ) from None
                raise DataSourceError(
                    f"{where}: the query failed: {_message(exc, source.url)}"
                ) from None
    finally:
        engine.dispose()
