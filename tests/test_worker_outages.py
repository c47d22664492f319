"""A worker whose services fail under it: the store goes away mid-run, the queue cannot be
reached at start; and a worker frozen past its lease whose jobs another worker took over.

Store outages are made on PostgreSQL (the test's database refuses connections for a
while), so those tests run on the pubsub backend only.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from backends import ADMIN_URL, free_port
from conftest import Env, stop_process, wait_until, write_records
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def refuse_connections(env: Env, refuse: bool) -> None:
    """Make the test's database refuse new connections (and end open ones), or accept
    them again: the store is away, or back."""
    assert env.backend.database_url is not None
    name = make_url(env.backend.database_url).database
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            allow = "false" if refuse else "true"
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allow}'))
            if refuse:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
    finally:
        engine.dispose()


def store_name(env: Env) -> str:
    """How the worker names the test's store in what it says (password hidden)."""
    assert env.backend.database_url is not None
    return make_url(env.backend.database_url).render_as_string(hide_password=True)


def tallies(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def log_of(env: Env, name: str) -> str:
    return (env.home / f"{name}.log").read_text()


@pytest.mark.slow
@pytest.mark.backends("pubsub")
def test_waiting_on_a_batch_rides_out_a_store_outage_and_ends_when_the_batch_does(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 20)
    tally = env.data / "tally.txt"
    waiting = env.popen(
        "flow=t_work",
        "batch.wait=true",
        "batch.concurrency=2",
        f"batch.parameters={{sleep:0.5,tally_file:'{tally}'}}",
        log_name="wait",
    )
    try:
        wait_until(lambda: len(tallies(tally)) >= 2, 30, "2 jobs ran")
        refuse_connections(env, True)
        try:
            said = ("holding its jobs", "cannot read the status of batch")
            wait_until(lambda: all(s in log_of(env, "wait") for s in said), 30, "outage said")
        finally:
            refuse_connections(env, False)
        code = waiting.wait(timeout=60)
    finally:
        stop_process(waiting)

    log = log_of(env, "wait")
    assert code == 0, log
    # The worker in it and the progress it shows each say so once (naming the store),
    # and once when it is back.
    [held] = [line for line in log.splitlines() if "holding its jobs" in line]
    [reading] = [line for line in log.splitlines() if "cannot read the status of batch" in line]
    assert store_name(env) in held and store_name(env) in reading
    assert log.count("the batch store is reachable again") == 1, log
    assert log.count("reading the status of batch") == 1, log
    assert "Traceback" not in log
    # Outcomes were held until the store came back: nothing ran twice.
    assert tallies(tally) == Counter({f"r{i:05d}": 1 for i in range(20)})
    assert log.strip().splitlines()[-1].endswith("completed: 20 of 20 jobs completed")


@pytest.mark.slow
@pytest.mark.backends("pubsub")
def test_a_worker_gives_up_on_a_store_gone_for_its_idle_timeout_in_one_line(env: Env) -> None:
    write_records(env.data / "records.jsonl", 30)
    batch_id = env.create(
        "t_work", "batch.concurrency=3", "batch.parameters={sleep:0.5}", env.lease(3)
    )
    worker = env.popen("batch.command=run", "batch.idle_timeout=3", env.lease(3), log_name="worker")
    try:
        wait_until(lambda: env.counts(batch_id)["completed"] >= 1, 30, "a job completed")
        refuse_connections(env, True)
        code = worker.wait(timeout=60)
    finally:
        stop_process(worker)
        refuse_connections(env, False)

    log = log_of(env, "worker")
    assert code == 1, log
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: gave up: ") and store_name(env) in last
    assert "batch.idle_timeout=3" in last
    assert log.count(store_name(env)) == 2  # the warning, then the error
    assert "Traceback" not in log and len(log) < 10_000
    # What it held was given back: another worker finishes the batch (the jobs it had
    # claimed once their lease runs out).
    env.ok("batch.command=run", "batch.idle_timeout=5", env.lease(3))
    assert env.batch_status(batch_id) == "completed"


@pytest.mark.backends("pubsub")
def test_a_worker_that_cannot_reach_pub_sub_at_start_says_so_in_one_line(env: Env) -> None:
    env.extra["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"

    result = env.cli("batch.command=run", "queue.timeout=3", "batch.idle_timeout=1")

    assert result.returncode == 1, str(result)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: creating topic ") and "cannot reach the emulator" in last


@pytest.mark.slow
@pytest.mark.backends("local")
def test_a_worker_whose_job_was_taken_over_counts_it_apart_not_as_completed(
    env: Env, tmp_path: Path
) -> None:
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create("t_work", "batch.parameters={sleep:3}")
    run = ("batch.command=run", "batch.idle_timeout=2", "batch.format=json", env.lease(2))
    out = tmp_path / "frozen.json"
    with out.open("w") as stdout:
        frozen = subprocess.Popen(
            env.args(*run), env=env.environ, stdout=stdout, stderr=subprocess.PIPE, text=True
        )
    try:
        wait_until(
            lambda: f":{frozen.pid}:" in (env.store().get_job(batch_id, "r00000").worker or ""),
            30,
            "the first worker to run the job",
        )
        frozen.send_signal(signal.SIGSTOP)  # past its lease: the job is taken over
        other = env.ok(*run)
        frozen.send_signal(signal.SIGCONT)
        _, stderr = frozen.communicate(timeout=30)
    finally:
        frozen.send_signal(signal.SIGCONT)
        stop_process(frozen)

    assert frozen.returncode == 0, stderr
    assert other.json()["completed"] == 1, other.stderr
    summary = json.loads(out.read_text())
    assert (summary["completed"], summary["taken_over"]) == (0, 1)
    assert "taken over by another worker" in stderr
    assert env.counts(batch_id)["completed"] == 1
