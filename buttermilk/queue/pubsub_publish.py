"""Publishing jobs to Pub/Sub: whole publish requests of raw protobuf messages, several
in flight at once, from the event loop.

The library's batching ``PublisherClient`` builds a proto-plus message, a future and a
lock round per message in its own threads: about 40 us of CPU each, most of a large
create. Here one raw ``PubsubMessage`` (the C protobuf) is built per job and up to
:data:`MAX_MESSAGES` of them go in one ``PublishRequest``; :data:`IN_FLIGHT` requests
are outstanding at once, so the service (or the emulator) is never waiting on us.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator

import anyio
from google.pubsub_v1 import PublishRequest, PubsubMessage

from buttermilk.queue.base import Channel, JobMessage

MAX_MESSAGES = 1_000  # messages per publish request (the service's limit)
MAX_BYTES = 9_000_000  # data bytes per request (the service refuses requests over 10 MB)
IN_FLIGHT = 8  # publish requests outstanding at once

_RAW_MESSAGE = PubsubMessage.pb()
_RAW_REQUEST = PublishRequest.pb()


def publish_requests(
    messages: Iterable[JobMessage], topics: dict[Channel, str], record_limit: int
) -> Iterator[PublishRequest]:
    """The messages as publish requests: one topic each, in order, at most
    :data:`MAX_MESSAGES` messages and about :data:`MAX_BYTES` of bodies per request.

    Each message carries its body (``JobMessage.encode``; the record inline when its JSON
    is at most ``record_limit`` bytes) and the attributes operators filter on: batch_id,
    flow, interactive.
    """
    topic: str | None = None
    chunk: list[object] = []
    size = 0
    attributes: dict[str, str] = {}
    attributes_of: tuple[str, str, bool] | None = None
    for m in messages:
        target = topics[m.channel]
        body = m.encode(record_limit=record_limit)
        full = len(chunk) >= MAX_MESSAGES or size + len(body) > MAX_BYTES
        if chunk and (target != topic or full):
            yield _request(topic, chunk)
            chunk, size = [], 0
        topic = target
        if attributes_of != (m.batch_id, m.flow, m.interactive):  # one dict per batch
            attributes_of = (m.batch_id, m.flow, m.interactive)
            attributes = {
                "batch_id": m.batch_id,
                "flow": m.flow,
                "interactive": "true" if m.interactive else "false",
            }
        chunk.append(_RAW_MESSAGE(data=body, attributes=attributes))
        size += len(body)
    if chunk:
        yield _request(topic, chunk)


def _request(topic: str | None, messages: list[object]) -> PublishRequest:
    assert topic is not None
    request: PublishRequest = PublishRequest.wrap(_RAW_REQUEST(topic=topic, messages=messages))
    return request


async def send_all(
    requests: Iterable[PublishRequest],
    send: Callable[[PublishRequest], Awaitable[None]],
    in_flight: int = IN_FLIGHT,
) -> None:
    """``send`` every request, up to ``in_flight`` at once; the first error stops the
    others and is raised (requests sent by then stay sent)."""
    slots = anyio.Semaphore(in_flight)
    errors: list[BaseException] = []

    async def one(request: PublishRequest) -> None:
        try:
            await send(request)
        except Exception as exc:
            errors.append(exc)
            tg.cancel_scope.cancel()
        finally:
            slots.release()

    async with anyio.create_task_group() as tg:
        for request in requests:
            await slots.acquire()
            if errors:
                slots.release()
                break
            tg.start_soon(one, request)
    if errors:
        raise errors[0]
