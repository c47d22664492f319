"""Every batch ends: workers killed by a record, retries due after the queue went quiet,
messages the transport lost, and what a command waiting on a batch says at the end.

Each test runs on both backends (see conftest) unless marked otherwise.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Env, wait_until, write_records

from buttermilk.domain import JobStatus

TESTS = Path(__file__).parent
SIGKILLED = -9


def with_crashing_agent(env: Env) -> None:
    """Let the CLI import tests/crashing.py (the t_crash flow's agent)."""
    env.extra["PYTHONPATH"] = str(TESTS)


def tallies(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def lose_messages(env: Env, count: int) -> None:
    """The transport forgets the queued jobs (a restarted emulator, a deleted queue file)."""
    if env.backend.name == "local":
        with sqlite3.connect(env.home / "queue.db") as conn:
            assert conn.execute("DELETE FROM messages").rowcount == count
        return
    from test_pubsub import pull  # Pub/Sub: take them and ack them

    assert len(pull(env.backend, "buttermilk-workers", count)) == count


@pytest.mark.slow
def test_a_record_that_kills_its_worker_fails_after_max_attempts_and_the_batch_ends(
    env: Env,
) -> None:
    with_crashing_agent(env)
    write_records(env.data / "records.jsonl", 3)
    tally = env.data / "tally.txt"
    batch_id = env.create(
        "t_crash",
        "batch.max_attempts=2",
        "batch.concurrency=1",
        f"batch.parameters={{kill_on:[r00001],tally_file:'{tally}'}}",
        env.lease(2),  # Pub/Sub: the subscription's ack deadline
    )

    codes = []
    for _ in range(5):  # a supervisor restarting the worker each time it dies
        # Two jobs in hand at most (one running): with three queued, the first pull fills
        # both, and no pull waits when the agent kills its worker (the emulator loses the
        # messages of such a pull: see backends.emulator_pull_defects).
        run = env.cli(
            "batch.command=run", "batch.idle_timeout=3", "batch.worker_concurrency=1", env.lease(2)
        )
        codes.append(run.returncode)
        # As a user would look: status fails a job lost on its last try (on Pub/Sub its
        # message may be dead-lettered rather than delivered to the next worker).
        if env.status(batch_id)["status"] == "completed":
            break
        after = time.monotonic()  # the dead worker's lease runs out
        wait_until(lambda: time.monotonic() > after + 2, 5, "the lease to run out")  # noqa: B023

    # Two workers die on it; the next ones end it (on a loaded machine a worker may idle
    # out before Pub/Sub delivers the message again, and the next one takes it), or none
    # is needed: the status call after the second death fails the job lost on its last try.
    assert codes[:2] == [SIGKILLED, SIGKILLED] and set(codes[2:]) <= {0}, run
    assert env.batch_status(batch_id) == "completed"
    poison = env.store().get_job(batch_id, "r00001")
    assert (poison.status, poison.attempts, poison.error_type) == (
        JobStatus.FAILED,
        2,
        "WorkerLost",
    )
    assert poison.error_message is not None
    assert poison.error_message.startswith("worker lost while running it 2 times")
    # Whoever found the lost job said so: the last worker's log, or (when a status call
    # swept it first, as on a loaded machine) the batch's errors as status shows them.
    shown = env.status(batch_id)["common_errors"]
    assert ("r00001" in run.stderr and "WorkerLost" in run.stderr) or any(
        e["error_type"] == "WorkerLost" and e["count"] == 1 for e in shown
    ), (run.stderr, shown)
    assert env.counts(batch_id)["completed"] == 2
    assert tallies(tally) == Counter({"r00000": 1, "r00002": 1})
    requeued = env.ok("batch.command=retry", f"batch.batch_id={batch_id}")
    assert "requeued 1 jobs" in requeued.stderr


@pytest.mark.slow
@pytest.mark.backends("local")  # Pub/Sub: test_pubsub.py, where the last delivery does it
def test_status_fails_a_job_whose_worker_died_on_its_last_try(env: Env) -> None:
    # On Pub/Sub the message of such a job may be gone (dead-lettered after its last
    # delivery): nothing but the store can end it.
    with_crashing_agent(env)
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create(
        "t_crash", "batch.max_attempts=1", "batch.parameters={kill_on:[r00000]}", env.lease(2)
    )
    killed = env.cli("batch.command=run", "batch.idle_timeout=3", env.lease(2))
    assert killed.returncode == SIGKILLED, str(killed)
    assert env.counts(batch_id)["running"] == 1

    status = wait_until(
        lambda: (s := env.status(batch_id))["status"] == "completed" and s,
        15,
        "status to fail the job once its lease ran out",
        interval=0.5,
    )

    assert status["counts"]["failed"] == 1
    [error] = status["common_errors"]
    assert error["error_type"] == "WorkerLost"
    assert error["error_message"].startswith("worker lost while running it once")


@pytest.mark.backends("local")  # the same code on every backend
@pytest.mark.slow
def test_a_worker_stays_for_a_retry_due_after_its_idle_timeout(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)
    batch_id = env.create(
        "t_work",
        "batch.retry_delay=4",
        "batch.parameters={fail_on:[r00001]}",
        "batch.max_attempts=2",
    )

    run = env.cli("batch.command=run", "batch.idle_timeout=1.5", "batch.format=json")

    assert run.returncode == 0, str(run)
    assert env.batch_status(batch_id) == "completed"
    assert run.json()["retried"] == 1 and run.json()["failed"] == 1
    assert f"batch {batch_id} has a job coming back in" in run.stderr
    assert "(a retry): waiting for it" in run.stderr
    job = env.store().get_job(batch_id, "r00001")
    assert job.status == JobStatus.FAILED and job.attempts == 2


@pytest.mark.slow
def test_retry_publishes_again_the_jobs_of_a_live_batch_whose_messages_were_lost(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 5)
    tally = env.data / "tally.txt"
    batch_id = env.create("t_work", f"batch.parameters={{tally_file:'{tally}'}}")
    lose_messages(env, 5)

    first = env.ok("batch.command=retry", f"batch.batch_id={batch_id}")
    second = env.ok("batch.command=retry", f"batch.batch_id={batch_id}")  # two per job now
    env.ok("batch.command=run", "batch.idle_timeout=2")

    assert "requeued 5 jobs" in first.stderr and "requeued 5 jobs" in second.stderr
    assert env.batch_status(batch_id) == "completed"
    assert env.counts(batch_id)["completed"] == 5
    assert tallies(tally) == Counter({f"r{i:05d}": 1 for i in range(5)})  # each ran once


@pytest.mark.slow
def test_waiting_on_a_batch_whose_jobs_failed_exits_3_and_says_how_many(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)

    some = env.cli(
        "flow=t_work",
        "batch.wait=true",
        "batch.max_attempts=1",
        "batch.parameters={fail_on:[r00001]}",
    )
    every = env.cli(
        "flow=t_work",
        "batch.wait=true",
        "batch.max_attempts=1",
        "batch.format=json",
        "batch.parameters={fail_on:[r00000,r00001,r00002]}",
    )

    assert some.returncode == 3, str(some)
    assert (
        some.stderr.strip().splitlines()[-1].endswith("completed: 2 of 3 jobs completed, 1 failed")
    )
    assert every.returncode == 3, str(every)
    assert every.json()["status"] == "completed"  # the batch ran its course
    assert (
        every.stderr.strip().splitlines()[-1].endswith("completed: 0 of 3 jobs completed, 3 failed")
    )


@pytest.mark.backends("local")  # the same code on every backend
def test_waiting_on_a_batch_that_fails_exits_1(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)

    stopped = env.cli(
        "flow=t_work",
        "batch.wait=true",
        "batch.max_attempts=1",
        "batch.error_policy=stop",
        "batch.concurrency=1",
        "batch.parameters={fail_on:[r00000,r00001,r00002]}",
    )

    assert stopped.returncode == 1, str(stopped)
    last = stopped.stderr.strip().splitlines()[-1]
    assert " failed: 0 of 3 jobs completed, 1 failed, 2 cancelled (stopped by error_policy" in last


@pytest.mark.backends("pubsub")  # PostgreSQL's text columns refuse NUL
def test_an_error_message_holding_nul_is_stored_and_the_batch_ends(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)

    result = env.cli("flow=t_nul_error", "batch.wait=true", "batch.format=json", timeout=120)

    assert result.returncode == 3, str(result)
    failed = [job for job in env.store().iter_jobs(result.json()["batch_id"])]
    assert [job.status for job in failed] == [JobStatus.FAILED] * 2
    assert all("bad\\x00byte" in (job.error_message or "") for job in failed)


@pytest.mark.backends("local")  # the process's own end: the same on every transport
def test_a_worker_whose_synchronous_agent_hangs_past_job_timeout_still_exits(env: Env) -> None:
    with_crashing_agent(env)
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create("t_hang", "batch.job_timeout=1", "batch.max_attempts=1")

    run = env.cli("batch.command=run", "batch.idle_timeout=0", timeout=60)

    assert run.returncode == 0, str(run)
    assert env.counts(batch_id)["failed"] == 1
    job = next(iter(env.store().iter_jobs(batch_id)))
    assert job.error_type == "JobTimeoutError"
    assert "1 thread(s) still running after the command ended" in run.stderr
    assert run.stdout.startswith("worker finished in")  # the summary was flushed first
