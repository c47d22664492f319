"""The batch store (SQLAlchemy Core): SQLite by default, PostgreSQL for many machines."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from buttermilk.store.store import Store

__all__ = ["Store", "StoreSettings", "open_store"]


class StoreSettings(BaseModel):
    """``store=...``: where batches and jobs are kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str


def open_store(settings: StoreSettings) -> Store:
    return Store(settings.url)
