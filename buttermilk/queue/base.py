"""The job transport: one small interface, one module per implementation.

Delivery is at least once. A received message stays invisible to other workers until it
is acked, nacked (made visible again after a delay) or its lease runs out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from pydantic import TypeAdapter, ValidationError

from buttermilk import values
from buttermilk.domain.variants import DEFAULT_KEY
from buttermilk.records import Record

SCHEMA_VERSION = 1
Channel = Literal["jobs", "interactive"]


@dataclass(frozen=True, slots=True, kw_only=True)
class JobMessage:
    """What a worker needs to find one job: the store holds everything else.

    A plain frozen dataclass: ``create`` builds one per job, so construction must be cheap.
    Bodies from the wire are checked field by field in :meth:`decode`.
    """

    batch_id: str
    record_id: str
    flow: str
    variant: str = DEFAULT_KEY
    """The job's combination of its batch's axes (its key)."""
    repeat: int = 0
    """The job's repeat of its combination, from 0."""
    interactive: bool = False
    parameters: dict[str, Any] | None = None
    record: Record | None = None
    created_at: float | None = None
    """When its batch's create began (Unix seconds; set on a new batch's jobs): a worker
    may get the message before the batch is committed, and waits for a young one."""
    v: int = SCHEMA_VERSION

    @property
    def channel(self) -> Channel:
        return "interactive" if self.interactive else "jobs"

    def encode(self, *, record_limit: int = 0) -> bytes:
        """The message body; the record goes inside only when its JSON fits ``record_limit``."""
        body: dict[str, Any] = {
            "v": self.v,
            "batch_id": self.batch_id,
            "record_id": self.record_id,
            "flow": self.flow,
            "interactive": self.interactive,
        }
        if self.variant != DEFAULT_KEY or self.repeat:
            body["variant"] = self.variant
            body["repeat"] = self.repeat
        if self.parameters is not None:
            body["parameters"] = self.parameters
        if self.created_at is not None:
            body["created_at"] = self.created_at
        encoded = orjson.dumps(body)
        if self.record is not None and record_limit > 0:
            record = values.dumps(dict(self.record.__dict__))
            if len(record) <= record_limit:
                return encoded[:-1] + b',"record":' + record + b"}"
        # orjson's bytes keep the whole buffer they were written into (4 KiB for a body of
        # 150 bytes); a publish holds thousands at once, so keep a copy of its own size.
        return bytes(memoryview(encoded))

    @classmethod
    def decode(cls, body: bytes) -> JobMessage:
        """Parse a message body; raises ValueError with a short reason when malformed."""
        try:
            data = values.loads(body)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("v") != SCHEMA_VERSION:
            raise ValueError(f"unknown schema version {data.get('v')!r}")
        known = {k: v for k, v in data.items() if k in _FIELDS}  # newer senders may add some
        try:
            return _MESSAGE.validate_python(known)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise ValueError(f"bad field {where}: {first['msg']}") from None


_FIELDS = frozenset(f.name for f in fields(JobMessage))
_MESSAGE: TypeAdapter[JobMessage] = TypeAdapter(JobMessage)


@dataclass(eq=False)
class Delivery:
    """One received message. ``message`` is None when the body could not be parsed."""

    queue: Queue
    handle: Any
    body: bytes
    message: JobMessage | None
    problem: str | None
    delivery_attempt: int

    async def ack(self) -> None:
        await self.queue.ack([self])

    async def nack(self, delay: float = 0.0) -> None:
        await self.queue.nack([self], delay)

    async def extend(self, seconds: float) -> None:
        await self.queue.extend([self], seconds)


def parse_body(body: bytes) -> tuple[JobMessage | None, str | None]:
    try:
        return JobMessage.decode(body), None
    except ValueError as exc:
        return None, str(exc)


class Queue(ABC):
    """A job queue. Use it as an async context manager, or call :meth:`aclose`."""

    name: str
    lease_seconds: float
    #: Whether ``receive`` can keep to one batch's messages (``batch_id=``).
    filters_by_batch: bool = False
    #: Most messages one ``receive`` call may ask for.
    receive_limit: int = 100
    #: Deliveries after which the transport gives a message up (None: never).
    max_deliveries: int | None = None
    #: Whether ``create`` publishes while the batch is being stored (workers may then get
    #: a message before its batch is committed; see ``JobMessage.created_at``).
    publishes_while_storing: bool = False
    #: Largest record (JSON bytes) a job of this transport may hold (None: no limit).
    max_record_bytes: int | None = None
    #: Whether a ``receive`` waiting for messages may be cancelled (a worker told to stop
    #: does so) without losing any it took: it never drops messages leased to it.
    receive_cancellable: bool = False

    async def prepare(self, *, interactive: bool) -> None:  # noqa: B027 - optional hook
        """Create whatever the transport needs before publishing (topics, tables)."""

    @abstractmethod
    async def publish(self, messages: Sequence[JobMessage]) -> None:
        """Send every message, or raise QueueError (some may have been sent by then)."""

    @abstractmethod
    async def receive(
        self,
        max_messages: int,
        *,
        interactive: bool = False,
        batch_id: str | None = None,
        wait: float = 1.0,
    ) -> list[Delivery]:
        """Lease up to ``max_messages``; waits up to ``wait`` seconds for the first one."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages for good."""

    @abstractmethod
    async def nack(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        """Give the messages back, visible again after ``delay`` seconds."""

    @abstractmethod
    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Keep the messages leased for ``seconds`` more, from now."""

    async def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Set aside messages that will never succeed (kept for inspection where the
        transport can keep them), then remove them like :meth:`ack`."""
        await self.ack(deliveries)

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background tasks."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
