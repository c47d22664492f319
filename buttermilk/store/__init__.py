"""The batch store (SQLAlchemy Core): SQLite by default, PostgreSQL for many machines.

SQLAlchemy is imported when a store is opened (or :class:`Store` first named), not with
:class:`StoreSettings`: a command refused for its options answers without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from buttermilk.store.store import Store

__all__ = ["Store", "StoreSettings", "open_store"]


class StoreSettings(BaseModel):
    """``store=...``: where batches and jobs are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    """``sqlite:///PATH`` or ``postgresql+psycopg://...`` (checked when the store opens)."""


def open_store(settings: StoreSettings) -> Store:
    """The store at ``settings.url``.

    Raises InvalidOptionError for a URL the store cannot use (see
    :func:`buttermilk.store.url.check_url`) and StoreError when the database cannot be
    opened.
    """
    from buttermilk.store.store import Store

    return Store(settings.url)


def __getattr__(name: str) -> Any:
    """``Store``, imported on first use (it brings SQLAlchemy)."""
    if name == "Store":
        from buttermilk.store.store import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
