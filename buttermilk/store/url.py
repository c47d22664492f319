"""Which database URLs the store can use: checked before anything connects."""

from __future__ import annotations

import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from buttermilk.errors import InvalidOptionError

ALLOWED = "give sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
# backend -> the drivers this store is written for ("" is the backend's default driver).
# PostgreSQL's default driver is psycopg2; the store streams jobs with psycopg 3's COPY.
DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("psycopg",)}
_PASSWORD = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")


def hide_password(url: str) -> str:
    """``url`` with its password replaced by ``***``, parseable or not."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _PASSWORD.sub(r"\1***@", url)


def check_url(url: str) -> URL:
    """The parsed ``store.url``.

    Raises InvalidOptionError (a UsageError, naming ``store.url`` with its password hidden)
    when the URL cannot be parsed, names a database or driver this store does not support,
    or a driver that is not installed.
    """

    def refuse(why: str) -> InvalidOptionError:
        return InvalidOptionError("store.url", hide_password(url), f"{why}; {ALLOWED}")

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise refuse("it is not a database URL") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in DRIVERS:
        raise refuse(f"{backend!r} is not a database this store supports")
    if driver not in DRIVERS[backend]:
        named = f"driver {driver!r}" if driver else "the default driver (psycopg2)"
        raise refuse(f"{named} is not supported for {backend}")
    try:
        parsed.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as exc:
        raise refuse(f"its driver cannot be loaded ({exc})") from None
    return parsed
