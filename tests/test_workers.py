"""Workers under failure: killed processes, long jobs, malformed messages, routing.

Each test runs on both backends (see conftest); the Pub/Sub-only behaviours (dead letters,
an emulator restart) are in test_pubsub.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from conftest import Env, kill_one_of_three_workers, wait_until, write_records

from buttermilk.domain import JobStatus


def tallies(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


HELD = 10  # most jobs one worker holds (its worker_concurrency)


@pytest.mark.slow
def test_three_workers_one_killed_mid_run_every_record_completes_exactly_once(env: Env) -> None:
    ids = write_records(env.data / "records.jsonl", 3000)
    tally = env.data / "tally.txt"
    batch_id = env.create(
        "t_work",
        "batch.concurrency=30",
        f"batch.parameters={{sleep:0.02,tally_file:'{tally}'}}",
        env.lease(5),  # Pub/Sub: the subscription is made with this ack deadline
    )
    kill_one_of_three_workers(env, batch_id, after=600, held=HELD)

    jobs = list(env.store().iter_jobs(batch_id))
    assert sorted(job.record_id for job in jobs) == sorted(ids)
    assert all(job.status == JobStatus.COMPLETED and job.result for job in jobs)
    runs = tallies(tally)
    assert set(runs) == set(ids), "every record ran"
    twice = [rid for rid, n in runs.items() if n > 1]
    assert all(runs[rid] <= 2 for rid in runs)
    # Only what the killed worker held may have run twice.
    assert len(twice) <= HELD, twice
    retried = [job.record_id for job in jobs if job.attempts > 1]
    assert len(retried) <= HELD and set(twice) <= set(retried)


@pytest.mark.slow
def test_a_job_longer_than_its_lease_is_not_redelivered_while_it_runs(env: Env) -> None:
    write_records(env.data / "records.jsonl", 1)
    tally = env.data / "tally.txt"
    # Three times the lease (the Pub/Sub ack deadline).
    batch_id = env.create(
        "t_work", f"batch.parameters={{sleep:9,tally_file:'{tally}'}}", env.lease(3)
    )
    with (
        env.worker(env.lease(3), log_name="w1"),
        env.worker(env.lease(3), log_name="w2"),
    ):
        wait_until(lambda: env.batch_status(batch_id) == "completed", 40, "batch completed")

    assert tallies(tally) == Counter({"r00000": 1})
    job = env.store().get_job(batch_id, "r00000")
    assert job.attempts == 1 and job.duration is not None and job.duration >= 9


def test_a_batch_never_runs_more_jobs_at_once_than_its_concurrency(env: Env) -> None:
    write_records(env.data / "records.jsonl", 24)
    batch_id = env.create("t_work", "batch.concurrency=3", "batch.parameters={sleep:0.3}")
    peak = 0

    def done() -> bool:
        nonlocal peak
        peak = max(peak, env.counts(batch_id)["running"])
        return env.batch_status(batch_id) == "completed"

    with env.worker("batch.worker_concurrency=20"):
        wait_until(done, 60, "batch completed", interval=0.02)
    assert 1 <= peak <= 3


def test_malformed_messages_are_dropped_and_the_worker_goes_on(env: Env) -> None:
    write_records(env.data / "records.jsonl", 5)
    batch_id = env.create("t_work")
    env.publish_raw(b"this is not json")
    env.publish_raw(b'{"v": 99, "batch_id": "x"}')
    env.publish_raw(b'{"v": 1, "record_id": "r1", "flow": "t_work"}')
    env.publish_raw(b'{"v": 1, "batch_id": "knope1234567", "record_id": "r1", "flow": "t_work"}')
    env.publish_raw(
        b'{"v": 1, "batch_id": "%s", "record_id": "r00001", "flow": "nope"}' % batch_id.encode()
    )

    run = env.ok("batch.command=run", "batch.idle_timeout=2", "batch.format=json")

    assert run.json()["completed"] == 5 and run.json()["malformed"] == 5
    assert env.batch_status(batch_id) == "completed"
    assert env.queue_depth() == 0
    for reason in (
        "not JSON",
        "unknown schema version 99",
        "bad field batch_id",
        "unknown batch knope1234567",
        "dropping a message for flow 'nope'",
    ):
        assert run.stderr.count(reason) == 1, (reason, run.stderr)


def test_interactive_jobs_reach_only_interactive_workers(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)
    interactive = env.create("t_review", "batch.interactive=true")
    plain = env.create("t_review")

    run = env.ok("batch.command=run", "batch.idle_timeout=0.5", "batch.format=json")

    assert run.json()["completed"] == 3
    assert env.batch_status(plain) == "completed"
    assert env.counts(interactive)["pending"] == 3
    job = next(iter(env.store().iter_jobs(plain)))
    assert job.result is not None
    assert job.result["outputs"]["review"] == {
        "skipped": True,
        "reason": "batch is not interactive",
    }


def test_an_interactive_worker_needs_a_console(env: Env) -> None:
    result = env.cli("batch.command=run", "batch.interactive=true")

    assert result.returncode == 2
    assert "stdin is not a terminal" in result.stderr
