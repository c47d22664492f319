"""Google Cloud Pub/Sub as the job transport (or its emulator, via ``PUBSUB_EMULATOR_HOST``).

What ``prepare`` makes when missing (it never changes or deletes anything):

- a topic per channel (jobs, interactive), each with one subscription shared by the
  workers of that channel; both carry a dead-letter policy and a retry policy;
- the dead-letter topic and a subscription on it, so that dead letters are kept.

Interactive jobs have their own topic rather than a subscription filter: the emulator
stores filters but does not apply them.

Publishing sends whole requests of raw protobuf messages, several in flight (see
:mod:`buttermilk.queue.pubsub_publish`). Pulls, acks and deadline changes
use the async client with a short deadline and no hidden retries, so an outage reaches
the worker at once as a :class:`QueueError` and the worker decides how to back off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import grpc
from google.api_core import exceptions as gexc
from google.api_core.retry import AsyncRetry, if_exception_type
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError
from google.protobuf import duration_pb2
from google.pubsub_v1 import (
    DeadLetterPolicy,
    PublisherAsyncClient,
    PublishRequest,
    PubsubMessage,
    PullResponse,
    RetryPolicy,
    SubscriberAsyncClient,
    Subscription,
)
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from buttermilk.errors import QueueError
from buttermilk.queue import PubSubQueueSettings
from buttermilk.queue.base import Channel, Delivery, JobMessage, Queue, parse_body
from buttermilk.queue.pubsub_publish import publish_requests, send_all

log = logging.getLogger(__name__)
T = TypeVar("T")

PULL_MAX = 100  # Pub/Sub hands out at most this many messages per pull
ACK_CHUNK = 1_000  # ack ids per acknowledge / modify call (the request limit is 512 KB)
MAX_DEADLINE = 600  # longest ack deadline Pub/Sub accepts, in seconds
MAX_MESSAGE_BYTES = 10_000_000  # Pub/Sub refuses larger publish requests
ENVELOPE_BYTES = 2_000  # room for the message's other fields and attributes
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


class PubSubQueue(Queue):
    """Jobs as Pub/Sub messages; one subscription per channel, shared by all workers."""

    name = "pubsub"
    filters_by_batch = False
    publishes_while_storing = True
    max_record_bytes = MAX_MESSAGE_BYTES - ENVELOPE_BYTES

    def __init__(self, settings: PubSubQueueSettings) -> None:
        self.settings = settings
        self.lease_seconds = float(settings.ack_deadline)
        self.receive_limit = PULL_MAX * settings.pulls_in_flight
        self.max_deliveries = settings.max_delivery_attempts
        self.emulator = os.environ.get("PUBSUB_EMULATOR_HOST") or None
        self._clients: tuple[PublisherAsyncClient, SubscriberAsyncClient] | None = None
        self._clients_loop: asyncio.AbstractEventLoop | None = None
        self._prepared: set[Channel] = set()

    # -- names ---------------------------------------------------------------------

    def _path(self, kind: str, name: str) -> str:
        return f"projects/{self.settings.project}/{kind}/{name}"

    def topic_path(self, channel: Channel) -> str:
        s = self.settings
        name = s.topic if channel == "jobs" else s.interactive_topic or f"{s.topic}-interactive"
        return self._path("topics", name)

    def subscription_path(self, channel: Channel) -> str:
        s = self.settings
        name = (
            s.subscription
            if channel == "jobs"
            else s.interactive_subscription or f"{s.subscription}-interactive"
        )
        return self._path("subscriptions", name)

    @property
    def dead_letter_topic_path(self) -> str:
        return self._path("topics", self.settings.dead_letter_topic)

    @property
    def dead_letter_subscription_path(self) -> str:
        s = self.settings
        return self._path("subscriptions", s.dead_letter_subscription or s.dead_letter_topic)

    @property
    def where(self) -> str:
        """Which Pub/Sub this is, for error messages."""
        target = f"the emulator at {self.emulator}" if self.emulator else "Google Cloud Pub/Sub"
        return f"{target} (project {self.settings.project})"

    # -- clients -------------------------------------------------------------------

    def _async_clients(self) -> tuple[PublisherAsyncClient, SubscriberAsyncClient]:
        """Clients bound to the running event loop (gRPC's asyncio channels need that)."""
        loop = asyncio.get_running_loop()
        if self._clients is None or self._clients_loop is not loop:
            self._clients = self._make_async_clients()
            self._clients_loop = loop
        return self._clients

    def _make_async_clients(self) -> tuple[PublisherAsyncClient, SubscriberAsyncClient]:
        try:
            if self.emulator:
                # The library's emulator channel keeps gRPC's 4 MiB receive limit.
                channel = grpc.aio.insecure_channel(self.emulator, options=UNLIMITED)
                creds = AnonymousCredentials()  # type: ignore[no-untyped-call]
                return (
                    PublisherAsyncClient(
                        transport=PublisherGrpcAsyncIOTransport(channel=channel, credentials=creds)
                    ),
                    SubscriberAsyncClient(
                        transport=SubscriberGrpcAsyncIOTransport(channel=channel, credentials=creds)
                    ),
                )
            return PublisherAsyncClient(), SubscriberAsyncClient()
        except DefaultCredentialsError as exc:
            raise QueueError(f"no Google Cloud credentials for Pub/Sub: {_one_line(exc)}") from None

    def _retry(self) -> AsyncRetry:
        return AsyncRetry(
            predicate=if_exception_type(*_TRANSIENT),
            initial=0.2,
            maximum=2.0,
            timeout=min(self.settings.timeout, 15.0),
        )

    async def _call(
        self,
        what: str,
        call: Callable[[], Any],
        tolerate: tuple[type[Exception], ...] = (),
    ) -> Any:
        """Await one client call, turning the library's errors into one-line QueueErrors."""
        try:
            return await call()
        except tolerate:
            return None
        except gexc.PermissionDenied as exc:
            raise QueueError(f"{what}: permission denied on {self.where}: {exc.message}") from None
        except gexc.RetryError as exc:
            cause = exc.cause or exc
            raise QueueError(f"{what}: cannot reach {self.where}: {_one_line(cause)}") from None
        except gexc.GoogleAPICallError as exc:
            raise QueueError(f"{what} on {self.where} failed: {_one_line(exc)}") from None

    # -- provisioning --------------------------------------------------------------

    async def prepare(self, *, interactive: bool) -> None:
        channel: Channel = "interactive" if interactive else "jobs"
        if channel not in self._prepared:
            await self._provision(channel)
            self._prepared.add(channel)
            await self._adopt_deadline(channel)

    async def _adopt_deadline(self, channel: Channel) -> None:
        """Lease for the subscription's real ack deadline (it may predate this config)."""
        _, subscriber = self._async_clients()
        path = self.subscription_path(channel)
        found = await self._call(
            f"reading subscription {path}",
            lambda: subscriber.get_subscription(
                subscription=path, retry=self._retry(), timeout=self.settings.timeout
            ),
        )
        deadline = float(found.ack_deadline_seconds)
        if deadline and deadline != self.settings.ack_deadline:
            log.warning(
                "subscription %s has an ack deadline of %ds; queue.ack_deadline=%d applies "
                "only to subscriptions created with it",
                path,
                deadline,
                self.settings.ack_deadline,
            )
            self.lease_seconds = deadline

    async def _provision(self, channel: Channel) -> None:
        """Make whatever of this channel's topics and subscriptions is missing."""
        s = self.settings
        await self._ensure_topic(self.dead_letter_topic_path)
        await self._ensure_subscription(
            Subscription(
                name=self.dead_letter_subscription_path,
                topic=self.dead_letter_topic_path,
                ack_deadline_seconds=60,
            )
        )
        topic = self.topic_path(channel)
        await self._ensure_topic(topic)
        await self._ensure_subscription(
            Subscription(
                name=self.subscription_path(channel),
                topic=topic,
                ack_deadline_seconds=s.ack_deadline,
                dead_letter_policy=DeadLetterPolicy(
                    dead_letter_topic=self.dead_letter_topic_path,
                    max_delivery_attempts=s.max_delivery_attempts,
                ),
                retry_policy=RetryPolicy(
                    minimum_backoff=_duration(s.min_backoff),
                    maximum_backoff=_duration(max(s.max_backoff, s.min_backoff)),
                ),
            )
        )

    async def _ensure_topic(self, path: str) -> None:
        publisher, _ = self._async_clients()
        created = await self._call(
            f"creating topic {path}",
            lambda: publisher.create_topic(
                name=path, retry=self._retry(), timeout=self.settings.timeout
            ),
            tolerate=(gexc.AlreadyExists,),
        )
        if created is not None:
            log.info("created Pub/Sub topic %s", path)

    async def _ensure_subscription(self, subscription: Subscription) -> None:
        _, subscriber = self._async_clients()
        created = await self._call(
            f"creating subscription {subscription.name}",
            lambda: subscriber.create_subscription(
                request=subscription, retry=self._retry(), timeout=self.settings.timeout
            ),
            tolerate=(gexc.AlreadyExists,),
        )
        if created is not None:
            log.info("created Pub/Sub subscription %s", subscription.name)

    # -- publishing ----------------------------------------------------------------

    async def publish(self, messages: Sequence[JobMessage]) -> None:
        """Send every message (see :mod:`buttermilk.queue.pubsub_publish`); raises
        QueueError, one line, when the service refuses or cannot be reached."""
        publisher, _ = self._async_clients()
        topics: dict[Channel, str] = {c: self.topic_path(c) for c in ("jobs", "interactive")}
        requests = publish_requests(messages, topics, self.settings.inline_record_bytes)

        async def send(request: PublishRequest) -> None:
            try:
                await self._call(
                    "publishing",
                    lambda: publisher.publish(
                        request=request, retry=self._retry(), timeout=self.settings.timeout
                    ),
                )
            except QueueError as exc:
                if isinstance(exc.__context__, gexc.NotFound):
                    raise QueueError(
                        f"publishing: a topic is missing on {self.where} (was it deleted, or "
                        "the emulator restarted?); run the command again to recreate it"
                    ) from None
                raise

        await send_all(requests, send)

    async def publish_raw(
        self, body: bytes, *, channel: Channel = "jobs", **attributes: str
    ) -> None:
        """Put an arbitrary message on a channel's topic (tools and tests of bad input)."""
        publisher, _ = self._async_clients()
        await self._call(
            "publishing",
            lambda: publisher.publish(
                topic=self.topic_path(channel),
                messages=[PubsubMessage(data=body, attributes=attributes)],
                timeout=self.settings.timeout,
            ),
        )

    # -- receiving -----------------------------------------------------------------

    async def receive(
        self,
        max_messages: int,
        *,
        interactive: bool = False,
        batch_id: str | None = None,
        wait: float = 1.0,
    ) -> list[Delivery]:
        channel: Channel = "interactive" if interactive else "jobs"
        path = self.subscription_path(channel)
        sizes = [PULL_MAX] * (max_messages // PULL_MAX)
        if max_messages % PULL_MAX:
            sizes.append(max_messages % PULL_MAX)
        sizes = sizes[: self.settings.pulls_in_flight]
        found: list[list[Delivery]] = [[] for _ in sizes]
        errors: list[BaseException] = []

        async def pull(i: int, size: int) -> None:
            try:
                found[i] = await self._pull(path, size, wait)
            except QueueError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i, size in enumerate(sizes):
                tg.start_soon(pull, i, size)
        deliveries = [d for chunk in found for d in chunk]
        if errors and not deliveries:
            if any(isinstance(e.__context__, gexc.NotFound) for e in errors):
                await self._recreate(channel)
                return []
            raise errors[0]
        return deliveries

    async def _pull(self, path: str, size: int, wait: float) -> list[Delivery]:
        _, subscriber = self._async_clients()
        try:
            # An empty pull returns about a second before its deadline.
            response = await subscriber.pull(
                subscription=path, max_messages=size, timeout=wait + 1.0, retry=None
            )
        except gexc.DeadlineExceeded:
            return []
        except gexc.GoogleAPICallError as exc:
            raise QueueError(f"pulling from {path} failed: {_one_line(exc)}") from exc
        deliveries = []
        # The raw protobuf: each field read through the proto-plus wrapper costs more
        # than decoding the body itself.
        for received in PullResponse.pb(response).received_messages:
            body = received.message.data
            message, problem = parse_body(body)
            deliveries.append(
                Delivery(
                    self,
                    (path, received.ack_id),
                    body,
                    message,
                    problem,
                    received.delivery_attempt or 1,
                )
            )
        return deliveries

    async def _recreate(self, channel: Channel) -> None:
        log.warning(
            "subscription %s is missing on %s (the emulator restarted?): creating it again",
            self.subscription_path(channel),
            self.where,
        )
        await self._provision(channel)

    # -- settling ------------------------------------------------------------------

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        _, subscriber = self._async_clients()

        async def send(path: str, ids: list[str]) -> None:
            await subscriber.acknowledge(
                subscription=path, ack_ids=ids, timeout=self.settings.timeout, retry=self._retry()
            )

        await self._per_subscription("acknowledging", deliveries, send)

    async def nack(self, deliveries: Sequence[Delivery], delay: float = 0.0) -> None:
        await self._set_deadline(deliveries, delay, "releasing")

    async def extend(self, deliveries: Sequence[Delivery], seconds: float) -> None:
        await self._set_deadline(deliveries, seconds, "extending")

    async def _set_deadline(
        self, deliveries: Sequence[Delivery], seconds: float, what: str
    ) -> None:
        _, subscriber = self._async_clients()
        deadline = min(math.ceil(max(seconds, 0.0)), MAX_DEADLINE)

        async def send(path: str, ids: list[str]) -> None:
            await subscriber.modify_ack_deadline(
                subscription=path,
                ack_ids=ids,
                ack_deadline_seconds=deadline,
                timeout=self.settings.timeout,
                retry=self._retry(),
            )

        await self._per_subscription(what, deliveries, send)

    async def _per_subscription(
        self,
        what: str,
        deliveries: Sequence[Delivery],
        send: Callable[[str, list[str]], Any],
    ) -> None:
        by_path: dict[str, list[str]] = defaultdict(list)
        for d in deliveries:
            path, ack_id = d.handle
            by_path[path].append(ack_id)
        for path, ids in by_path.items():
            for start in range(0, len(ids), ACK_CHUNK):
                chunk = ids[start : start + ACK_CHUNK]
                await self._call(f"{what} {len(chunk)} message(s)", lambda: send(path, chunk))  # noqa: B023

    async def dead_letter(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Copy the messages to the dead-letter topic with the reason, then ack them."""
        if not deliveries:
            return
        publisher, _ = self._async_clients()
        copies = [
            PubsubMessage(
                data=d.body,
                attributes={
                    "reason": reason[:1000],
                    "delivery_attempt": str(d.delivery_attempt),
                    "source_subscription": d.handle[0],
                    **(
                        {"batch_id": d.message.batch_id, "record_id": d.message.record_id}
                        if d.message is not None
                        else {}
                    ),
                },
            )
            for d in deliveries
        ]
        await self._call(
            "dead-lettering",
            lambda: publisher.publish(
                topic=self.dead_letter_topic_path,
                messages=copies,
                timeout=self.settings.timeout,
                retry=self._retry(),
            ),
        )
        await self.ack(deliveries)

    async def aclose(self) -> None:
        if self._clients is not None and self._clients_loop is asyncio.get_running_loop():
            publisher_client, subscriber = self._clients
            await publisher_client.transport.close()  # type: ignore[no-untyped-call]
            await subscriber.transport.close()  # type: ignore[no-untyped-call]
        self._clients = self._clients_loop = None


def _duration(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
