"""The batch store (SQLAlchemy Core): SQLite by default, PostgreSQL for many machines."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

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
    return Store(settings.url)
