"""Shared fixtures: a private state folder and dataset per test, and the real CLI.

Every test gets its own ``BUTTERMILK_HOME`` (queue and store files) and
``BUTTERMILK_DATA`` (datasets), and runs the CLI as a subprocess with the test flows
of ``tests/conf`` on Hydra's search path.

Tests that take ``env`` run once per backend: ``local`` (the embedded queue and SQLite
store) and ``pubsub`` (the Pub/Sub emulator and PostgreSQL, each test in its own Pub/Sub
project and its own database). ``@pytest.mark.backends("local")`` keeps a test to some.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from backends import (
    Backend,
    emulator_pull_defects,
    postgres_url,
    pubsub_backend,
    pubsub_emulator,
)

from buttermilk.domain import JobStatus
from buttermilk.store.store import Store

TESTS_CONF = Path(__file__).parent / "conf"
CLI = [sys.executable, "-m", "buttermilk.runner.cli"]


def wait_until(
    predicate: Callable[[], Any], timeout: float, message: str, interval: float = 0.1
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for: {message}")
        time.sleep(interval)


def write_records(path: Path, count: int, *, prefix: str = "r", start: int = 0) -> list[str]:
    """A JSONL dataset of ``count`` short texts; returns the record ids."""
    ids = [f"{prefix}{i:05d}" for i in range(start, start + count)]
    with path.open("w") as fh:
        for n, rid in enumerate(ids):
            mood = "love it, great value" if n % 2 else "awful, it broke"
            fh.write(json.dumps({"id": rid, "text": f"record {rid}: {mood}", "n": n}) + "\n")
    return ids


@dataclass
class Result:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        command = " ".join(self.args)
        return (
            f"$ {command}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


@dataclass
class Env:
    """One test's private installation: state folder, data folder, and the CLI."""

    home: Path
    data: Path
    backend: Backend = field(default_factory=lambda: Backend.local())
    extra: dict[str, str] = field(default_factory=dict)
    base_args: list[str] = field(default_factory=list)
    _store: Store | None = None

    @property
    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BUTTERMILK_HOME=str(self.home),
            BUTTERMILK_DATA=str(self.data),
            BUTTERMILK_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.backend.environ)
        env.update(self.extra)
        return env

    def args(self, *args: str) -> list[str]:
        # Hydra's flags (--config-dir) must come before the overrides.
        return [
            *CLI,
            *self.base_args,
            "ui=batch",
            f"hydra.searchpath=[file://{TESTS_CONF}]",
            *self.backend.overrides(self.home),
            *args,
        ]

    def lease(self, seconds: int) -> str:
        """The override that sets how long a received job stays leased to its worker."""
        return self.backend.lease_override(seconds)

    def cli(self, *args: str, timeout: float = 120, stdin: str | None = None) -> Result:
        """Run the CLI to completion."""
        full = self.args(*args)
        proc = subprocess.run(
            full, env=self.environ, capture_output=True, text=True, timeout=timeout, input=stdin
        )
        return Result(full, proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, timeout: float = 120) -> Result:
        """Run the CLI and fail the test unless it exits 0."""
        result = self.cli(*args, timeout=timeout)
        assert result.returncode == 0, str(result)
        return result

    def popen(self, *args: str, log_name: str = "proc") -> subprocess.Popen[str]:
        """Start the CLI in the background; its output goes to a log file in the state folder."""
        with (self.home / f"{log_name}.log").open("w") as log:
            return subprocess.Popen(
                self.args(*args), env=self.environ, stdout=log, stderr=subprocess.STDOUT, text=True
            )

    @contextmanager
    def worker(self, *args: str, log_name: str = "worker") -> Iterator[subprocess.Popen[str]]:
        """A background worker (``run`` until stopped); on exit, SIGTERM and expect exit 0."""
        proc = self.popen("batch.command=run", "batch.idle_timeout=null", *args, log_name=log_name)
        try:
            yield proc
        except BaseException:
            stop_process(proc)
            raise
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (self.home / f"{log_name}.log").read_text()

    def create(self, flow: str, *args: str) -> str:
        """Create a batch; returns its id."""
        return str(
            self.ok(f"flow={flow}", "batch.command=create", "batch.format=json", *args).json()[
                "batch_id"
            ]
        )

    def status(self, batch_id: str) -> dict[str, Any]:
        return dict(
            self.ok(
                "batch.command=status", f"batch.batch_id={batch_id}", "batch.format=json"
            ).json()
        )

    def store(self) -> Store:
        """The store the CLI writes to (opened once per test)."""
        if self._store is None:
            self._store = Store(self.backend.store_url(self.home))
        return self._store

    def publish_raw(self, body: bytes) -> None:
        """Put an arbitrary message where workers take jobs from."""
        self.backend.publish_raw(self.home, body)

    def queue_depth(self) -> int:
        """How many messages wait on the jobs queue (Pub/Sub: as many as one look finds)."""
        return self.backend.queue_depth(self.home)

    def counts(self, batch_id: str) -> dict[str, int]:
        """Jobs per status, read straight from the store (cheap enough to poll)."""
        found = self.store().job_counts([batch_id])[batch_id]
        return {status.value: found.get(status, 0) for status in JobStatus}

    def batch_status(self, batch_id: str) -> str:
        return self.store().get_batch(batch_id).status.value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that takes ``env`` once per backend (or per ``backends`` marker)."""
    if "env" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend_name", marker.args if marker else BACKENDS)


BACKENDS = ("local", "pubsub")


@pytest.fixture
def env(tmp_path: Path, backend_name: str, request: pytest.FixtureRequest) -> Iterator[Env]:
    home = tmp_path / "home"
    data = tmp_path / "data"
    home.mkdir()
    data.mkdir()
    if backend_name == "pubsub":
        backend = request.getfixturevalue("pubsub_backend")
    else:
        backend = Backend.local()
    env = Env(home=home, data=data, backend=backend)
    yield env
    if env._store is not None:
        env._store.close()


# Fixtures defined in backends.py, made visible to every test module.
__all__ = ["postgres_url", "pubsub_backend", "pubsub_emulator"]


def stop_process(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Kill a background CLI process if it still runs (cleanup)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=timeout)


def kill_one_of_three_workers(env: Env, batch_id: str, *, after: int, held: int) -> None:
    """Run three workers on the batch (each holding at most ``held`` jobs, 5 s leases),
    SIGKILL one once ``after`` jobs have completed, wait for the batch to complete, then
    stop the other two and check that they exited 0.

    On Pub/Sub, should the emulator lose the messages of the killed worker's waiting pull
    (see backends.emulator_pull_defects; real Pub/Sub redelivers them), the batch stalls
    with jobs no worker can receive: ``retry`` publishes them again, as a user would."""
    common = (
        "batch.command=run",
        "batch.idle_timeout=null",
        f"batch.worker_concurrency={held}",
        env.lease(5),
    )
    doomed = env.popen(*common, log_name="doomed")
    survivors = [env.popen(*common, log_name=f"survivor{n}") for n in (1, 2)]
    try:
        wait_until(
            lambda: env.counts(batch_id)["completed"] >= after, 90, f"{after} jobs completed"
        )
        defects = emulator_pull_defects() if env.backend.name == "pubsub" else None
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        wait_for_the_batch_after_a_kill(env, batch_id, defects)
        for survivor in survivors:
            survivor.send_signal(signal.SIGTERM)
        codes = [survivor.wait(timeout=30) for survivor in survivors]
    finally:
        for proc in (doomed, *survivors):
            stop_process(proc)
    assert doomed.returncode == -signal.SIGKILL
    assert codes == [0, 0], [(env.home / f"survivor{n}.log").read_text()[-3000:] for n in (1, 2)]


STALL = 15.0  # seconds without a job ending after which a batch counts as stalled


def wait_for_the_batch_after_a_kill(env: Env, batch_id: str, defects: int | None) -> None:
    """Wait (120 s at most) until the batch completes. Should it stall after the emulator
    failed a pull (more defects than ``defects``), publish its open jobs again, once."""
    deadline = time.monotonic() + 120
    last, moved, retried = -1, time.monotonic(), False
    while env.batch_status(batch_id) != "completed":
        counts = env.counts(batch_id)
        ended = counts["completed"] + counts["failed"]
        if ended != last:
            last, moved = ended, time.monotonic()
        now_defects = emulator_pull_defects() if defects is not None else None
        lost = now_defects is not None and defects is not None and now_defects > defects
        if lost and not retried and time.monotonic() - moved > STALL:
            print(f"the emulator failed a pull of the killed worker; retrying: {counts}")
            env.ok("batch.command=retry", f"batch.batch_id={batch_id}")
            retried = True
        if time.monotonic() > deadline:
            logs = {
                name: (env.home / f"{name}.log").read_text()[-2000:]
                for name in ("doomed", "survivor1", "survivor2")
                if (env.home / f"{name}.log").exists()
            }
            pytest.fail(
                f"batch not completed after 120 s: {counts}; emulator pull defects "
                f"{defects} -> {now_defects}; the workers' logs end: {logs}"
            )
        time.sleep(0.2)
