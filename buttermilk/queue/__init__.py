"""Job transports. ``open_queue`` builds the one a config names."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from buttermilk.option_types import PositiveSeconds
from buttermilk.queue.base import Delivery, JobMessage, Queue

__all__ = [
    "Delivery",
    "JobMessage",
    "LocalQueueSettings",
    "PubSubQueueSettings",
    "Queue",
    "QueueSettings",
    "open_queue",
]


class LocalQueueSettings(BaseModel):
    """``queue=local``: the embedded SQLite queue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local"] = "local"
    path: str
    lease_seconds: PositiveSeconds = 30.0
    poll_interval: PositiveSeconds = 0.2


class PubSubQueueSettings(BaseModel):
    """``queue=pubsub``: Google Cloud Pub/Sub (or its emulator, via PUBSUB_EMULATOR_HOST)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["pubsub"] = "pubsub"
    project: str = Field(min_length=1)
    topic: str = "buttermilk-jobs"
    subscription: str = "buttermilk-workers"
    interactive_topic: str | None = None
    """Default: ``<topic>-interactive`` (interactive jobs travel apart from the others)."""
    interactive_subscription: str | None = None
    """Default: ``<subscription>-interactive``."""
    dead_letter_topic: str = "buttermilk-dead-letter"
    dead_letter_subscription: str | None = None
    """Default: the dead-letter topic's name (keeps dead letters readable)."""
    ack_deadline: int = Field(default=60, ge=1, le=600)
    max_delivery_attempts: int = Field(default=5, ge=5, le=100)
    min_backoff: float = Field(default=1.0, ge=0, le=600)
    max_backoff: float = Field(default=60.0, ge=0, le=600)
    pulls_in_flight: int = Field(default=4, ge=1, le=32)
    inline_record_bytes: int = Field(default=65_536, ge=0)
    """Records up to this size (JSON) travel inside the message; workers read larger ones
    from the store."""
    timeout: PositiveSeconds = 30.0
    """Longest wait for one Pub/Sub call (admin calls, acks, a chunk of publishes)."""


QueueSettings = Annotated[LocalQueueSettings | PubSubQueueSettings, Field(discriminator="type")]


def open_queue(settings: LocalQueueSettings | PubSubQueueSettings) -> Queue:
    """The queue a config describes."""
    if isinstance(settings, PubSubQueueSettings):
        from buttermilk.queue.pubsub import PubSubQueue

        return PubSubQueue(settings)
    from buttermilk.queue.local import LocalQueue

    return LocalQueue(
        settings.path, lease_seconds=settings.lease_seconds, poll_interval=settings.poll_interval
    )
