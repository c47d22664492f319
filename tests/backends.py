"""The backends the end-to-end tests run on, and the services behind them.

- ``local``: the embedded SQLite queue and SQLite store in the test's state folder.
- ``pubsub``: the Pub/Sub emulator (the one named by ``PUBSUB_EMULATOR_HOST``, or one
  started here for the session) and PostgreSQL (``BUTTERMILK_TEST_POSTGRES``, default
  the local server's ``test`` database), each test with its own Pub/Sub project and its
  own freshly created database, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from buttermilk import devservices
from buttermilk.devservices import (
    ServiceError,
    emulator_ready,
    free_port,
    stop_emulator,
    throwaway_database,
)
from buttermilk.queue import PubSubQueueSettings
from buttermilk.queue.local import LocalQueue
from buttermilk.queue.pubsub import PubSubQueue

ADMIN_URL = os.environ.get(
    "BUTTERMILK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass
class Backend:
    """How the CLI is pointed at one backend, and how tests reach into it."""

    name: str
    environ: dict[str, str] = field(default_factory=dict)
    project: str | None = None
    database_url: str | None = None

    @classmethod
    def local(cls) -> Backend:
        return cls("local")

    def overrides(self, home: Path) -> list[str]:
        if self.name == "local":
            return []
        return [
            "queue=pubsub",
            f"queue.project={self.project}",
            "queue.min_backoff=0",
            "queue.max_backoff=1",
            "store=postgres",
            f"store.url={self.database_url}",
        ]

    def lease_override(self, seconds: int) -> str:
        key = "queue.lease_seconds" if self.name == "local" else "queue.ack_deadline"
        return f"{key}={seconds}"

    def store_url(self, home: Path) -> str:
        return self.database_url or f"sqlite:///{home}/batches.db"

    def pubsub_queue(self) -> PubSubQueue:
        assert self.project is not None
        return PubSubQueue(PubSubQueueSettings(project=self.project))

    def publish_raw(self, home: Path, body: bytes) -> None:
        if self.name == "local":
            queue = LocalQueue(home / "queue.db")
            queue.publish_raw(body)
            anyio.run(queue.aclose)
            return

        async def send() -> None:
            async with self.pubsub_queue() as queue:
                await queue.prepare(interactive=False)
                await queue.publish_raw(body)

        with patched_environ(self.environ):
            anyio.run(send)

    def queue_depth(self, home: Path) -> int:
        if self.name == "local":
            queue = LocalQueue(home / "queue.db")
            try:
                return queue.depth()
            finally:
                anyio.run(queue.aclose)
        # Pub/Sub cannot count a backlog: take what one look finds, and give it back.

        async def look() -> int:
            async with self.pubsub_queue() as queue:
                await queue.prepare(interactive=False)
                found = await queue.receive(queue.receive_limit, wait=1.0)
                await queue.nack(found)
                return len(found)

        with patched_environ(self.environ):
            return anyio.run(look)


class patched_environ:
    """Set environment variables for the duration of a ``with`` block."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, old in self.saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


# -- the Pub/Sub emulator ----------------------------------------------------------


def start_emulator(port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the emulator on ``port`` (see buttermilk.devservices); fail the test if not."""
    try:
        return devservices.start_emulator(port, log)
    except ServiceError as exc:
        pytest.fail(str(exc))


# The emulator (0.8.20 here) fails a unary pull whose client died while it waited with a
# Java NoSuchMethodError in its log, and the messages it had handed that pull never come
# back (seen: none within 60 s, not dead-lettered). Real Pub/Sub redelivers them after
# their ack deadline. Tests that kill a worker tell that loss from ours by this count.
EMULATOR_PULL_DEFECT = "NoSuchMethodError"


def emulator_pull_defects() -> int | None:
    """How many pulls the emulator has failed that way so far (None: its log is unknown:
    set PUBSUB_EMULATOR_LOG to the log of an emulator started outside the tests)."""
    log = os.environ.get("PUBSUB_EMULATOR_LOG")
    if not log or not Path(log).exists():
        return None
    return Path(log).read_text(errors="replace").count(EMULATOR_PULL_DEFECT)


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """``host:port`` of a running emulator: the given one, or one started for the session."""
    given = os.environ.get("PUBSUB_EMULATOR_HOST")
    if given:
        if not emulator_ready(given):
            pytest.fail(f"PUBSUB_EMULATOR_HOST={given} does not answer")
        yield given
        return
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="pubsub-emulator-")) / "emulator.log"
    proc = start_emulator(port, log)
    os.environ["PUBSUB_EMULATOR_LOG"] = str(log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_emulator(proc)


# -- PostgreSQL --------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty database; dropped after the test."""
    try:
        with throwaway_database(ADMIN_URL, prefix="bm_test") as url:
            yield url
    except ServiceError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def pubsub_backend(pubsub_emulator: str, postgres_url: str) -> Backend:
    """The Pub/Sub + PostgreSQL backend, in a Pub/Sub project of its own."""
    return Backend(
        "pubsub",
        environ={"PUBSUB_EMULATOR_HOST": pubsub_emulator},
        project=f"test-{secrets.token_hex(6)}",
        database_url=postgres_url,
    )
