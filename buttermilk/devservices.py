"""Local services for tests and benchmarks: a Pub/Sub emulator, a throwaway database.

Not used by Buttermilk itself: the test suite and the benchmark scripts share these so
that both start and stop the same services the same way.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from buttermilk.errors import ButtermilkError

EMULATOR_START_TIMEOUT = 60.0


class ServiceError(ButtermilkError):
    """Raised when a local service (emulator, database) cannot be started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def emulator_ready(host: str) -> bool:
    """Whether the Pub/Sub emulator at ``host:port`` answers."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=1) as answer:
            return bool(answer.read().strip() == b"Ok")
    except OSError:
        return False


def start_emulator(port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the Pub/Sub emulator on ``port`` in its own process group (its output to
    ``log``, when given); wait until ready."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise ServiceError("the Pub/Sub emulator needs gcloud on PATH")
    with open(log, "ab") if log is not None else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(
            [gcloud, "beta", "emulators", "pubsub", "start", f"--host-port=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # gcloud starts a Java child: stop the group as a whole
        )
    deadline = time.monotonic() + EMULATOR_START_TIMEOUT
    while not emulator_ready(f"127.0.0.1:{port}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_emulator(proc)
            raise ServiceError(f"the Pub/Sub emulator did not start on port {port}")
        time.sleep(0.1)
    return proc


def stop_emulator(proc: subprocess.Popen[bytes]) -> None:
    """Stop the emulator and its Java child (the whole process group it leads)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with suppress(ProcessLookupError):  # the Java child may outlive its gcloud parent
        os.killpg(proc.pid, signal.SIGKILL)


def _admin(admin_url: str) -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(admin_url)
    try:
        return psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        where = url.render_as_string()
        raise ServiceError(f"PostgreSQL at {where} does not answer: {exc}") from None


@contextmanager
def throwaway_database(admin_url: str, prefix: str = "bm_tmp") -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with _admin(admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with _admin(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
