"""Job transports. ``open_queue`` builds the one a config names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from buttermilk.queue.base import Delivery, JobMessage, Queue

__all__ = ["Delivery", "JobMessage", "LocalQueueSettings", "Queue", "QueueSettings", "open_queue"]


class LocalQueueSettings(BaseModel):
    """``queue=local``: the embedded SQLite queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local"] = "local"
    path: str
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=0.2, gt=0)


QueueSettings = Annotated[LocalQueueSettings, Field(discriminator="type")]


def open_queue(settings: LocalQueueSettings) -> Queue:
    """The queue a config describes (its connections open now)."""
    from buttermilk.queue.local import LocalQueue

    return LocalQueue(
        settings.path, lease_seconds=settings.lease_seconds, poll_interval=settings.poll_interval
    )
