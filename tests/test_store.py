"""The SQLite batch store: claims under contention, leases, outcomes, error policy,
completion, cancel, requeue and batch id prefixes."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from sqlalchemy import MetaData, Table, create_engine, func, insert, inspect, select, text

from buttermilk.domain import BatchRequest, BatchStatus, BatchSummary, JobKey, JobStatus
from buttermilk.errors import BatchStateError, UnknownBatchError
from buttermilk.records import Record
from buttermilk.runner.render import in_flight, spending
from buttermilk.store import counters
from buttermilk.store.schema import (
    ADDED_COLUMNS,
    SCHEMA_VERSION,
    batches,
    jobs,
    meta,
)
from buttermilk.store.store import Claim, Claimed, Skipped, SkipReason, Store


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path}/batches.db"


@pytest.fixture
def store(store_url: str) -> Any:
    s = Store(store_url)
    yield s
    if not s._is_sqlite:
        # Whatever the test did, the counters PostgreSQL keeps must match a full count.
        with s.engine.connect() as conn:
            exact = {
                (b, st): n
                for b, st, n in conn.execute(
                    select(jobs.c.batch_id, jobs.c.status, func.count()).group_by(
                        jobs.c.batch_id, jobs.c.status
                    )
                )
            }
            kept = {(b, st): n for b, st, n in counters.read(conn, [b for b, _ in exact])}
        assert kept == exact
    s.close()


def rid(i: int) -> str:
    return f"r{i:03d}"


def make_batch(
    store: Store, n: int, batch_id: str = "b1", *, published: bool = True, **request: Any
) -> list[str]:
    records = [Record(record_id=rid(i), content=f"text {i}") for i in range(n)]
    store.create_batch(
        batch_id=batch_id,
        request=BatchRequest(flow="t", **request),
        flow_snapshot={"name": "t"},
        seed=1,
        records=records,
    )
    if published:
        store.mark_published(batch_id)
    return [r.record_id for r in records]


def claim_one(
    store: Store,
    record_id: str,
    batch_id: str = "b1",
    *,
    max_attempts: int | None = None,
    last_delivery: bool = False,
    **kw: Any,
) -> Claimed | Skipped:
    kw.setdefault("worker", "w1")
    kw.setdefault("lease", 30)
    claim = Claim(batch_id, record_id, max_attempts=max_attempts, last_delivery=last_delivery)
    (result,) = store.claim([claim], **kw)
    return result


def claimed(store: Store, record_id: str, batch_id: str = "b1", **kw: Any) -> Claimed:
    result = claim_one(store, record_id, batch_id, **kw)
    assert isinstance(result, Claimed), result
    return result


def job_status(store: Store, record_id: str, batch_id: str = "b1") -> JobStatus:
    return store.get_job(batch_id, record_id).status


# -- claims under contention -----------------------------------------------------------

CLAIMER = """
import json, random, sys, time
from pathlib import Path
from buttermilk.store.store import Claim, Claimed, Store

url, name, ready, go, out, n = sys.argv[1:7]
store = Store(url)
ids = [f"r{i:03d}" for i in range(int(n))]
random.Random(name).shuffle(ids)
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.002)
won, reasons = [], []
for start in range(0, len(ids), 2):
    chunk = [Claim("b1", r) for r in ids[start:start + 2]]
    for result in store.claim(chunk, worker=name, lease=60):
        if isinstance(result, Claimed):
            won.append(result.record_id)
        else:
            reasons.append(result.reason.value)
Path(out).write_text(json.dumps({"won": won, "reasons": reasons}))
store.close()
"""


@pytest.mark.slow  # ~3 s; SQLite's busy handler makes it longer on a loaded machine
def test_threads_and_processes_claiming_the_same_jobs_give_each_job_to_exactly_one(
    tmp_path: Path, store_url: str
) -> None:
    url = store_url
    main = Store(url)
    total = 150
    all_ids = make_batch(main, total)

    # Two other processes...
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                url,
                f"proc{n}",
                str(tmp_path / f"ready{n}"),
                str(go),
                str(tmp_path / f"out{n}.json"),
                str(total),
            ]
        )
        for n in range(2)
    ]
    # ...and eight threads: four sharing this process's store object, four with their own.
    own_stores = [Store(url) for _ in range(4)]
    stores = [main] * 4 + own_stores
    start = threading.Event()
    won: dict[str, list[str]] = {}
    reasons: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claimer(name: str, store: Store) -> None:
        try:
            ids = list(all_ids)
            random.Random(name).shuffle(ids)
            start.wait(60)
            mine = []
            for first in range(0, total, 2):
                batch = [Claim("b1", r) for r in ids[first : first + 2]]
                for result in store.claim(batch, worker=name, lease=60):
                    if isinstance(result, Claimed):
                        mine.append(result.record_id)
                    else:
                        with lock:
                            reasons[result.reason.value] += 1
            won[name] = mine
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=claimer, args=(f"thread{n}", s)) for n, s in enumerate(stores)
    ]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: all((tmp_path / f"ready{n}").exists() for n in range(2)),
            60,
            "both claimer processes ready",
        )
        go.touch()
        start.set()
        for t in threads:
            t.join(60)
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    finally:
        start.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for s in own_stores:
            s.close()
    assert not errors, errors
    for n in range(2):
        out = json.loads((tmp_path / f"out{n}.json").read_text())
        won[f"proc{n}"] = out["won"]
        reasons.update(out["reasons"])

    everything = [r for ids in won.values() for r in ids]
    assert sorted(everything) == all_ids  # every job claimed, none twice
    assert sum(1 for ids in won.values() if ids) >= 2, "no contention happened"
    assert set(reasons) == {SkipReason.BUSY.value}
    assert sum(reasons.values()) == total * (len(won) - 1)
    for name, ids in won.items():
        for r in ids:
            job = main.get_job("b1", r)
            assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, name, 1)
    main.close()


# -- leases and outcomes ---------------------------------------------------------------


def test_a_claim_starts_the_job_and_the_batch_and_hands_over_the_record(store: Store) -> None:
    make_batch(store, 2)
    assert store.get_batch("b1").status == BatchStatus.PENDING

    got = claimed(store, rid(1), worker="w7")

    assert got.attempts == 1
    assert got.record == Record(record_id=rid(1), content="text 1")
    job = store.get_job("b1", rid(1))
    assert (job.status, job.worker, job.attempts) == (JobStatus.RUNNING, "w7", 1)
    batch = store.get_batch("b1")
    assert batch.status == BatchStatus.RUNNING
    assert batch.started_at is not None


def test_a_second_claim_of_a_running_job_with_a_live_lease_is_busy(store: Store) -> None:
    make_batch(store, 1)
    claimed(store, rid(0), worker="w1")

    again = claim_one(store, rid(0), worker="w2")

    assert again == Skipped("b1", rid(0), SkipReason.BUSY)
    assert store.get_job("b1", rid(0)).worker == "w1"


def test_after_the_lease_expires_another_worker_claims_the_job_with_one_more_attempt(
    store: Store,
) -> None:
    make_batch(store, 1)
    first = claimed(store, rid(0), worker="w1", lease=0.3)

    def take_over() -> Claimed | None:
        result = claim_one(store, rid(0), worker="w2")
        return result if isinstance(result, Claimed) else None

    second = wait_until(take_over, 10, "the expired lease to be claimable", interval=0.05)

    assert second.attempts == 2
    assert second.token != first.token
    assert store.get_job("b1", rid(0)).worker == "w2"


def test_finishing_with_a_stale_token_does_not_apply(store: Store) -> None:
    make_batch(store, 1)
    first = claimed(store, rid(0), worker="w1", lease=0.2)
    second = wait_until(
        lambda: next(
            (
                r
                for r in store.claim([Claim("b1", rid(0))], worker="w2", lease=30)
                if isinstance(r, Claimed)
            ),
            None,
        ),
        10,
        "the expired lease to be claimable",
        interval=0.05,
    )

    stale = store.finish([first.outcome(JobStatus.FAILED, error_type="Late", error_message="x")])
    job = store.get_job("b1", rid(0))
    assert stale == [False]
    assert (job.status, job.worker, job.error_type) == (JobStatus.RUNNING, "w2", None)

    current = store.finish([second.outcome(JobStatus.COMPLETED, result={"outputs": {"a": 1}})])
    job = store.get_job("b1", rid(0))
    assert current == [True]
    assert (job.status, job.result) == (JobStatus.COMPLETED, {"outputs": {"a": 1}})


def test_finishing_twice_with_the_same_token_applies_only_once(store: Store) -> None:
    make_batch(store, 2)
    got = claimed(store, rid(0))
    assert store.finish([got.outcome(JobStatus.COMPLETED, result={"n": 1})]) == [True]
    assert store.finish([got.outcome(JobStatus.FAILED, error_type="E")]) == [False]
    assert job_status(store, rid(0)) == JobStatus.COMPLETED


def test_a_finished_job_is_skipped_as_done(store: Store) -> None:
    make_batch(store, 2)
    got = claimed(store, rid(0))
    store.finish([got.outcome(JobStatus.COMPLETED, result={})])

    assert claim_one(store, rid(0), worker="w2") == Skipped("b1", rid(0), SkipReason.DONE)


def test_a_failed_job_is_skipped_as_done(store: Store) -> None:
    make_batch(store, 2)
    got = claimed(store, rid(0))
    store.finish([got.outcome(JobStatus.FAILED, error_type="E", error_message="m")])

    assert claim_one(store, rid(0), worker="w2") == Skipped("b1", rid(0), SkipReason.DONE)


def test_a_claim_of_an_unknown_job_is_skipped_as_unknown(store: Store) -> None:
    make_batch(store, 1)
    assert claim_one(store, "nope") == Skipped("b1", "nope", SkipReason.UNKNOWN)
    assert claim_one(store, rid(0), batch_id="zz") == Skipped("zz", rid(0), SkipReason.UNKNOWN)


def test_a_retryable_failure_goes_back_to_pending_and_keeps_its_attempt_count(
    store: Store,
) -> None:
    make_batch(store, 1)
    got = claimed(store, rid(0))
    store.finish([got.outcome(JobStatus.PENDING, error_type="AgentError", error_message="try")])

    job = store.get_job("b1", rid(0))
    assert (job.status, job.attempts, job.error_type) == (JobStatus.PENDING, 1, "AgentError")
    assert claimed(store, rid(0)).attempts == 2


def test_a_released_job_goes_back_to_pending_without_spending_an_attempt(store: Store) -> None:
    make_batch(store, 1)
    got = claimed(store, rid(0))
    assert store.finish([got.outcome(JobStatus.PENDING, release=True)]) == [True]

    job = store.get_job("b1", rid(0))
    assert (job.status, job.attempts, job.started_at) == (JobStatus.PENDING, 0, None)
    assert claimed(store, rid(0)).attempts == 1


def test_extend_leases_keeps_a_job_busy_past_its_first_lease(store: Store) -> None:
    make_batch(store, 1)
    got = claimed(store, rid(0), lease=0.2)
    store.extend_leases([("b1", JobKey(rid(0)), got.token)], until=time.time() + 60)

    # Poll well past the first lease: still busy.
    deadline = time.time() + 0.6
    while time.time() < deadline:
        assert claim_one(store, rid(0), worker="w2") == Skipped("b1", rid(0), SkipReason.BUSY)


def test_exchange_records_outcomes_and_claims_in_one_call_in_order(store: Store) -> None:
    make_batch(store, 3)
    first = claimed(store, rid(0))

    results = store.exchange(
        [Claim("b1", rid(1)), first.outcome(JobStatus.COMPLETED, result={}), Claim("b1", rid(0))],
        worker="w1",
        lease=30,
    )

    assert isinstance(results[0], Claimed) and results[0].record_id == rid(1)
    assert results[1] is True
    assert results[2] == Skipped("b1", rid(0), SkipReason.DONE)


# -- completion ------------------------------------------------------------------------


def test_the_batch_completes_exactly_when_no_job_is_pending_or_running(store: Store) -> None:
    make_batch(store, 3)
    jobs = [claimed(store, rid(i)) for i in range(2)]

    store.finish([jobs[0].outcome(JobStatus.COMPLETED, result={})])
    store.finish([jobs[1].outcome(JobStatus.FAILED, error_type="E", error_message="m")])
    assert store.get_batch("b1").status == BatchStatus.RUNNING  # r002 is still pending

    last = claimed(store, rid(2))
    assert store.get_batch("b1").status == BatchStatus.RUNNING
    store.finish([last.outcome(JobStatus.COMPLETED, result={})])

    batch = store.get_batch("b1")
    assert batch.status == BatchStatus.COMPLETED
    assert batch.finished_at is not None
    assert store.job_counts(["b1"])["b1"] == {JobStatus.COMPLETED: 2, JobStatus.FAILED: 1}


def test_a_batch_whose_publishing_did_not_finish_does_not_complete(store: Store) -> None:
    make_batch(store, 1, published=False)
    got = claimed(store, rid(0))
    store.finish([got.outcome(JobStatus.COMPLETED, result={})])

    assert store.get_batch("b1").status == BatchStatus.RUNNING
    assert store.complete_if_done("b1") is False

    store.mark_published("b1")
    assert store.complete_if_done("b1") is True
    assert store.get_batch("b1").status == BatchStatus.COMPLETED
    assert store.complete_if_done("b1") is False  # only once


def test_complete_if_done_leaves_a_batch_with_open_jobs_alone(store: Store) -> None:
    make_batch(store, 2)
    got = claimed(store, rid(0))
    store.finish([got.outcome(JobStatus.COMPLETED, result={})])

    assert store.complete_if_done("b1") is False
    assert store.get_batch("b1").status == BatchStatus.RUNNING


# -- error policy stop -----------------------------------------------------------------


def test_a_final_failure_under_stop_fails_the_batch_and_cancels_its_pending_jobs(
    store: Store,
) -> None:
    make_batch(store, 4, error_policy="stop")
    failing = claimed(store, rid(0))
    other = claimed(store, rid(1))

    done = store.finish(
        [
            failing.outcome(
                JobStatus.FAILED, error_type="AgentError", error_message="boom", stop_batch=True
            )
        ]
    )

    assert done == [True]
    batch = store.get_batch("b1")
    assert batch.status == BatchStatus.FAILED
    assert batch.error is not None and rid(0) in batch.error and "boom" in batch.error
    assert [job_status(store, rid(i)) for i in range(4)] == [
        JobStatus.FAILED,
        JobStatus.RUNNING,  # a live worker holds it; that worker cancels it
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
    ]
    assert isinstance(claim_one(store, rid(2), worker="w2"), Skipped)
    assert claim_one(store, rid(1), worker="w2") == Skipped("b1", rid(1), SkipReason.BATCH_ENDED)
    # The running job's own outcome is still recorded; the batch stays failed.
    assert store.finish([other.outcome(JobStatus.CANCELLED, error_type="Cancelled")]) == [True]
    assert store.get_batch("b1").status == BatchStatus.FAILED


def test_a_stop_outcome_with_a_lost_claim_does_not_stop_the_batch(store: Store) -> None:
    make_batch(store, 2, error_policy="stop")
    stale = claimed(store, rid(0), lease=0.2)
    wait_until(
        lambda: isinstance(claim_one(store, rid(0), worker="w2"), Claimed),
        10,
        "the expired lease to be claimable",
        interval=0.05,
    )

    done = store.finish(
        [stale.outcome(JobStatus.FAILED, error_type="E", error_message="m", stop_batch=True)]
    )

    assert done == [False]
    assert store.get_batch("b1").status == BatchStatus.RUNNING
    assert job_status(store, rid(1)) == JobStatus.PENDING


# -- cancel ----------------------------------------------------------------------------


def test_cancel_ends_the_batch_and_its_pending_jobs(store: Store) -> None:
    make_batch(store, 3)
    done = claimed(store, rid(0))
    store.finish([done.outcome(JobStatus.COMPLETED, result={})])

    batch = store.cancel("b1", reason="enough")

    assert batch.status == BatchStatus.CANCELLED
    assert batch.error == "enough"
    assert [job_status(store, rid(i)) for i in range(3)] == [
        JobStatus.COMPLETED,
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
    ]
    skipped = claim_one(store, rid(1), worker="w2")
    assert isinstance(skipped, Skipped)
    assert skipped.reason in (SkipReason.BATCH_ENDED, SkipReason.DONE)


def test_a_running_job_of_a_cancelled_batch_cannot_be_claimed_even_after_its_lease(
    store: Store,
) -> None:
    make_batch(store, 2)
    claimed_at = time.time()
    claimed(store, rid(0), lease=0.3)
    store.cancel("b1")

    assert claim_one(store, rid(0), worker="w2") == Skipped("b1", rid(0), SkipReason.BATCH_ENDED)
    wait_until(lambda: time.time() > claimed_at + 0.4, 5, "the lease to run out")
    assert claim_one(store, rid(0), worker="w2") == Skipped("b1", rid(0), SkipReason.BATCH_ENDED)


def test_a_cancelled_batch_can_be_cancelled_again_but_an_ended_one_cannot(store: Store) -> None:
    make_batch(store, 1, batch_id="b1")
    make_batch(store, 1, batch_id="b2")
    store.cancel("b1")
    assert store.cancel("b1").status == BatchStatus.CANCELLED

    got = claimed(store, rid(0), batch_id="b2")
    store.finish([got.outcome(JobStatus.COMPLETED, result={})])
    with pytest.raises(BatchStateError, match="already ended"):
        store.cancel("b2")
    with pytest.raises(UnknownBatchError):
        store.cancel("b3")


# -- requeue ---------------------------------------------------------------------------


def test_requeue_puts_failed_jobs_back_to_pending_with_a_fresh_attempt_budget(
    store: Store,
) -> None:
    make_batch(store, 3)
    ok, bad = claimed(store, rid(0)), claimed(store, rid(1))
    store.finish([ok.outcome(JobStatus.COMPLETED, result={"x": 1})])
    store.finish([bad.outcome(JobStatus.FAILED, error_type="E", error_message="m", traceback="tb")])

    requeued = store.requeue("b1")

    # r002 is pending: its message may have been lost with the transport, so it is listed
    # for publishing again (a second delivery is dropped by the claim).
    assert requeued.record_ids == [rid(1), rid(2)]
    job = store.get_job("b1", rid(1))
    assert (job.status, job.attempts, job.error_type, job.error_message, job.traceback) == (
        JobStatus.PENDING,
        0,
        None,
        None,
        None,
    )
    assert job_status(store, rid(0)) == JobStatus.COMPLETED
    assert requeued.batch.status == BatchStatus.RUNNING
    assert requeued.batch.published is False  # until the caller has republished
    assert claimed(store, rid(1)).attempts == 1


def test_requeue_of_a_completed_batch_makes_it_live_again(store: Store) -> None:
    make_batch(store, 2)
    for i, status in enumerate((JobStatus.COMPLETED, JobStatus.FAILED)):
        store.finish([claimed(store, rid(i)).outcome(status, result={}, error_type="E")])
    assert store.get_batch("b1").status == BatchStatus.COMPLETED

    requeued = store.requeue("b1")

    assert requeued.record_ids == [rid(1)]
    assert requeued.batch.status == BatchStatus.RUNNING
    assert requeued.batch.finished_at is None


def test_requeue_of_a_cancelled_batch_brings_back_its_cancelled_jobs(store: Store) -> None:
    make_batch(store, 4)
    store.finish([claimed(store, rid(2)).outcome(JobStatus.COMPLETED, result={})])
    store.cancel("b1")

    requeued = store.requeue("b1")

    assert requeued.record_ids == [rid(0), rid(1), rid(3)]
    assert requeued.batch.status == BatchStatus.RUNNING
    assert requeued.batch.error is None
    assert [job_status(store, rid(i)) for i in range(4)] == [
        JobStatus.PENDING,
        JobStatus.PENDING,
        JobStatus.COMPLETED,
        JobStatus.PENDING,
    ]


def test_requeue_of_a_cancelled_batch_brings_back_a_job_whose_worker_died_while_it_ran(
    store: Store,
) -> None:
    # A worker dies mid-job; the batch is cancelled before that job's lease runs out, so
    # cancel leaves the job "running" for its (dead) worker to end. Nobody ever does;
    # and a live worker that receives its redelivered message acks it as BATCH_ENDED.
    make_batch(store, 2)
    claimed_at = time.time()
    claimed(store, rid(0), worker="dead", lease=0.3)
    store.cancel("b1")
    wait_until(lambda: time.time() > claimed_at + 0.4, 5, "the dead worker's lease to run out")
    assert claim_one(store, rid(0), worker="w2") == Skipped("b1", rid(0), SkipReason.BATCH_ENDED)

    requeued = store.requeue("b1")

    # Retry must make every job that did not complete runnable again, with a message.
    assert requeued.record_ids == [rid(0), rid(1)]
    assert job_status(store, rid(0)) == JobStatus.PENDING


def test_requeue_of_an_unpublished_batch_lists_its_pending_jobs_in_planned_order(
    store: Store,
) -> None:
    ids = make_batch(store, 5, published=False)

    requeued = store.requeue("b1")

    assert requeued.record_ids == ids
    assert requeued.batch.status == BatchStatus.PENDING  # never started


def test_requeue_with_nothing_to_retry_is_an_error(store: Store) -> None:
    make_batch(store, 2)
    running = claimed(store, rid(0))  # under a live lease: its worker is at it
    store.finish([claimed(store, rid(1)).outcome(JobStatus.COMPLETED, result={})])
    with pytest.raises(BatchStateError, match="nothing to retry"):
        store.requeue("b1")
    store.finish([running.outcome(JobStatus.COMPLETED, result={})])
    with pytest.raises(BatchStateError, match="nothing to retry"):
        store.requeue("b1")
    with pytest.raises(UnknownBatchError):
        store.requeue("nope")


def test_requeue_of_a_live_batch_lists_its_pending_jobs_and_those_of_dead_workers(
    store: Store,
) -> None:
    # The transport lost the messages (a restarted emulator): only the store knows the jobs.
    make_batch(store, 3)
    claimed_at = time.time()
    claimed(store, rid(0), worker="dead", lease=0.3, max_attempts=1)  # its last try
    live = claimed(store, rid(1), worker="alive")
    wait_until(lambda: time.time() > claimed_at + 0.4, 5, "the dead worker's lease to run out")

    requeued = store.requeue("b1")

    assert requeued.record_ids == [rid(0), rid(2)]
    assert job_status(store, rid(1)) == JobStatus.RUNNING  # its worker still runs it
    again = claimed(store, rid(0), max_attempts=1)
    assert again.attempts == 1  # a fresh budget: not failed as lost on its next claim
    store.finish([live.outcome(JobStatus.COMPLETED, result={})])
    assert job_status(store, rid(1)) == JobStatus.COMPLETED


# -- workers lost on a job's last try ---------------------------------------------------


def lose(store: Store, record_id: str, times: int = 1, **claim: Any) -> None:
    """Claim a job ``times`` times for workers that die at once (their leases run out)."""
    for _ in range(times):
        claimed(store, record_id, worker="doomed", lease=0.2, **claim)
        after = time.time()  # the lease started before this
        wait_until(lambda: time.time() > after + 0.2, 5, "the lease to run out")  # noqa: B023


def test_a_job_whose_worker_dies_on_every_try_fails_once_its_attempts_are_spent(
    store: Store,
) -> None:
    make_batch(store, 2)
    store.finish([claimed(store, rid(1)).outcome(JobStatus.COMPLETED, result={})])
    lose(store, rid(0), 3, max_attempts=3)

    fourth = claim_one(store, rid(0), worker="w2", max_attempts=3)

    assert fourth == Skipped("b1", rid(0), SkipReason.LOST)
    job = store.get_job("b1", rid(0))
    assert (job.status, job.attempts, job.error_type) == (JobStatus.FAILED, 3, "WorkerLost")
    assert job.error_message is not None
    assert job.error_message.startswith("worker lost while running it 3 times")
    assert store.get_batch("b1").status == BatchStatus.COMPLETED  # nothing else was open
    assert claim_one(store, rid(0), max_attempts=3).reason == SkipReason.DONE  # type: ignore[union-attr]


def test_a_job_lost_on_its_last_try_fails_without_another_claim(store: Store) -> None:
    # Pub/Sub: the message's last delivery was claimed, then its worker died; the
    # subscription dead-letters the message, so no claim will ever come again.
    make_batch(store, 1)
    lose(store, rid(0), max_attempts=10)
    assert store.fail_lost_jobs(["b1"]) == 0  # not its last try: a claim takes it over
    lose(store, rid(0), max_attempts=10, last_delivery=True)

    assert store.fail_lost_jobs(["b1"]) == 1

    job = store.get_job("b1", rid(0))
    assert (job.status, job.attempts, job.error_type) == (JobStatus.FAILED, 2, "WorkerLost")
    assert job.error_message is not None
    assert job.error_message.startswith("worker lost while running it 2 times")
    assert store.get_batch("b1").status == BatchStatus.COMPLETED
    assert store.fail_lost_jobs(["b1"]) == 0


def test_a_last_delivery_that_finds_the_job_busy_makes_the_running_claim_its_last_try(
    store: Store,
) -> None:
    make_batch(store, 1)
    claimed_at = time.time()
    claimed(store, rid(0), worker="doomed", lease=0.5)
    # Its message comes back for the last time while the lease still runs.
    busy = claim_one(store, rid(0), worker="w2", last_delivery=True)
    assert busy == Skipped("b1", rid(0), SkipReason.BUSY)
    assert store.fail_lost_jobs(["b1"]) == 0  # the lease still runs: its worker may live

    wait_until(lambda: time.time() > claimed_at + 0.6, 5, "the lease to run out")

    assert store.fail_lost_jobs(["b1"]) == 1
    job = store.get_job("b1", rid(0))
    assert job.error_message == (
        "worker lost while running it once (killed, out of memory, or stalled past its "
        "lease); attempt 1 was its last try"
    )


def test_a_live_worker_on_its_last_try_is_left_alone(store: Store) -> None:
    make_batch(store, 1)
    got = claimed(store, rid(0), max_attempts=1)

    assert store.fail_lost_jobs(["b1"]) == 0
    assert claim_one(store, rid(0), max_attempts=1).reason == SkipReason.BUSY  # type: ignore[union-attr]
    store.finish([got.outcome(JobStatus.COMPLETED, result={})])
    assert store.get_batch("b1").status == BatchStatus.COMPLETED


def test_a_job_lost_on_its_last_try_stops_a_batch_under_the_stop_policy(store: Store) -> None:
    make_batch(store, 3, error_policy="stop")
    lose(store, rid(1), max_attempts=1)

    assert store.fail_lost_jobs(["b1"]) == 1

    batch = store.get_batch("b1")
    assert batch.status == BatchStatus.FAILED
    assert batch.error is not None and "WorkerLost" in batch.error and rid(1) in batch.error
    assert [job_status(store, rid(i)) for i in range(3)] == [
        JobStatus.CANCELLED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    ]


def test_jobs_of_an_ended_batch_are_not_failed_as_lost(store: Store) -> None:
    make_batch(store, 2)
    claimed(store, rid(0), worker="doomed", lease=0.3, max_attempts=1)
    after = time.time()
    store.cancel("b1")  # under a live lease: left to its worker (which then died)
    wait_until(lambda: time.time() > after + 0.3, 5, "the lease to run out")

    assert store.fail_lost_jobs(["b1"]) == 0
    assert job_status(store, rid(0)) == JobStatus.RUNNING


# -- batch ids -------------------------------------------------------------------------


def test_resolve_id_accepts_an_exact_id_or_a_unique_prefix(store: Store) -> None:
    for batch_id in ("abc123", "abd456", "abc", "xyz789"):
        make_batch(store, 1, batch_id=batch_id)

    assert store.resolve_id("abc123") == "abc123"
    assert store.resolve_id("abc") == "abc"  # exact wins over being a prefix of abc123
    assert store.resolve_id("abc1") == "abc123"
    assert store.resolve_id("x") == "xyz789"
    assert store.resolve_id("  abd ") == "abd456"


def test_resolve_id_refuses_an_ambiguous_prefix_naming_the_matches(store: Store) -> None:
    make_batch(store, 1, batch_id="abc123")
    make_batch(store, 1, batch_id="abd456")

    with pytest.raises(UnknownBatchError, match="several") as caught:
        store.resolve_id("ab")
    assert "abc123" in str(caught.value) and "abd456" in str(caught.value)


@pytest.mark.parametrize("given", ["q", "abc1234", "%", "a_c", "", "   "])
def test_resolve_id_refuses_an_unknown_id(store: Store, given: str) -> None:
    make_batch(store, 1, batch_id="abc123")
    with pytest.raises(UnknownBatchError):
        store.resolve_id(given)


def test_get_batch_of_an_unknown_id_is_an_error(store: Store) -> None:
    with pytest.raises(UnknownBatchError):
        store.get_batch("nope")


def test_a_batch_keeps_its_request_and_flow_snapshot(store: Store) -> None:
    make_batch(store, 3, concurrency=7, parameters={"k": [1, 2]})
    batch = store.get_batch("b1")
    assert batch.request.concurrency == 7
    assert batch.request.parameters == {"k": [1, 2]}
    assert batch.flow_snapshot == {"name": "t"}
    assert batch.total == 3
    assert [j.record_id for j in store.iter_jobs("b1", chunk=2)] == [rid(i) for i in range(3)]


# -- spending: cost and tokens per job and per batch, max_cost, migration -----------------


def spent(cost: float | None, input_tokens: int = 100, output_tokens: int = 10) -> dict[str, Any]:
    """A run's result with the usage summary FlowRunner adds."""
    usage = {"cost": cost, "input_tokens": input_tokens, "output_tokens": output_tokens}
    return {"outputs": {"llm": {"answer": "ok"}}, "timings": {}, "usage": usage}


def test_outcomes_keep_their_spending_on_the_job_and_add_it_to_the_batch(store: Store) -> None:
    make_batch(store, 4)
    assert store.get_batch("b1").cost is None  # nothing priced yet

    unpriced = claimed(store, rid(0))
    store.finish([unpriced.outcome(JobStatus.COMPLETED, result=spent(None, 7, 3))])
    batch = store.get_batch("b1")
    assert (batch.cost, batch.input_tokens, batch.output_tokens) == (None, 7, 3)

    for i in (1, 2):
        got = claimed(store, rid(i))
        store.finish([got.outcome(JobStatus.COMPLETED, result=spent(0.25, 100, 10))])
    no_usage = claimed(store, rid(3))
    store.finish([no_usage.outcome(JobStatus.COMPLETED, result={"outputs": {}, "timings": {}})])

    batch = store.get_batch("b1")
    assert batch.cost == pytest.approx(0.5)
    assert (batch.input_tokens, batch.output_tokens) == (207, 23)
    job = store.get_job("b1", rid(1))
    assert (job.cost, job.input_tokens, job.output_tokens) == (0.25, 100, 10)
    job = store.get_job("b1", rid(3))
    assert (job.cost, job.input_tokens, job.output_tokens) == (None, None, None)


def retried(cost: float | None, calls: int, retry_cost: float | None) -> dict[str, Any]:
    """A run's result whose usage says ``calls`` schema retries spent 40 + 4 tokens each."""
    result = spent(cost)
    result["usage"].update(
        schema_retry_calls=calls,
        schema_retry_input_tokens=40 * calls,
        schema_retry_output_tokens=4 * calls,
    )
    if retry_cost is not None:
        result["usage"]["schema_retry_cost"] = retry_cost
    return result


def test_what_schema_retries_spent_adds_up_per_batch_and_stays_null_until_priced(
    store: Store,
) -> None:
    make_batch(store, 3)
    unpriced = claimed(store, rid(0))
    store.finish([unpriced.outcome(JobStatus.COMPLETED, result=retried(None, 1, None))])
    batch = store.get_batch("b1")
    assert (batch.schema_retry_calls, batch.schema_retry_input_tokens) == (1, 40)
    assert (batch.schema_retry_output_tokens, batch.schema_retry_cost) == (4, None)

    for i, (calls, cost) in enumerate([(2, 0.125), (0, None)], start=1):
        got = claimed(store, rid(i))
        store.finish([got.outcome(JobStatus.FAILED, result=retried(0.5, calls, cost))])

    batch = store.get_batch("b1")
    assert (batch.schema_retry_calls, batch.schema_retry_input_tokens) == (3, 120)
    assert batch.schema_retry_output_tokens == 12
    assert (batch.schema_retry_cost, batch.cost) == (pytest.approx(0.125), pytest.approx(1.0))


def test_a_lost_claim_still_adds_what_its_calls_cost_but_not_its_result(store: Store) -> None:
    make_batch(store, 1)
    stale = claimed(store, rid(0), lease=0.2)
    wait_until(lambda: isinstance(claim_one(store, rid(0), worker="w2"), Claimed), 10, "takeover")

    # Its outcome is dropped (the other claim's counts), but the endpoint billed its calls.
    assert store.finish([stale.outcome(JobStatus.COMPLETED, result=spent(1.0))]) == [False]
    assert store.get_batch("b1").cost == 1.0
    assert job_status(store, rid(0)) == JobStatus.RUNNING
    assert store.get_job("b1", rid(0)).cost is None


def summary_of(store: Store, batch_id: str = "b1") -> BatchSummary:
    counts = store.job_counts([batch_id])[batch_id]
    return BatchSummary(batch=store.get_batch(batch_id), counts=counts, now=time.time())


def test_the_batch_adds_up_cached_and_reasoning_tokens_and_shows_what_running_jobs_may_add(
    store: Store,
) -> None:
    make_batch(store, 5, max_cost=0.5)
    jobs_ = [claimed(store, rid(i)) for i in range(4)]
    assert summary_of(store).in_flight_cost is None  # no job has had a price yet

    result = spent(0.3, 1000, 10)
    result["usage"] |= {"cached_input_tokens": 900, "reasoning_tokens": 4}
    store.finish([jobs_[0].outcome(JobStatus.COMPLETED, result=result)])
    store.finish([jobs_[1].outcome(JobStatus.COMPLETED, result=spent(0.1, 10, 1))])

    summary = summary_of(store)
    batch = summary.batch
    assert (batch.cost, batch.max_job_cost) == (pytest.approx(0.4), 0.3)
    assert (batch.input_tokens, batch.cached_input_tokens) == (1010, 900)
    assert (batch.output_tokens, batch.reasoning_tokens) == (11, 4)
    # Two jobs still run: each may cost up to the dearest so far, past the cap.
    assert summary.in_flight_cost == pytest.approx(0.6)
    assert summary.as_json()["in_flight_cost"] == pytest.approx(0.6)
    assert in_flight(summary) == (
        "up to $0.6 more: 2 running jobs x $0.3 (the dearest job so far); "
        "cap $0.5, spent $0.4, up to $1.00"
    )
    assert "1,010 input (900 cached) + 11 output (4 reasoning) tokens" in spending(batch)


def test_concurrent_outcomes_add_up_exactly(store: Store) -> None:
    total = 40
    make_batch(store, total)
    errors: list[BaseException] = []

    def finisher(first: int) -> None:
        try:
            for i in range(first, total, 4):
                got = claimed(store, rid(i), worker=f"w{first}")
                store.finish([got.outcome(JobStatus.COMPLETED, result=spent(0.125, 3, 1))])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=finisher, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert errors == []
    batch = store.get_batch("b1")
    assert (batch.cost, batch.input_tokens, batch.output_tokens) == (5.0, 3 * total, total)
    assert batch.status == BatchStatus.COMPLETED


def test_a_batch_whose_cost_passes_max_cost_fails_and_cancels_its_pending_jobs(
    store: Store,
) -> None:
    make_batch(store, 5, max_cost=0.5)
    first = claimed(store, rid(0))
    second = claimed(store, rid(1))
    running = claimed(store, rid(2))

    store.finish([first.outcome(JobStatus.COMPLETED, result=spent(0.3))])
    assert store.get_batch("b1").status == BatchStatus.RUNNING  # 0.3 of 0.5
    store.finish([second.outcome(JobStatus.COMPLETED, result=spent(0.3))])

    batch = store.get_batch("b1")
    assert batch.status == BatchStatus.FAILED
    assert batch.error is not None
    assert "max_cost=0.5" in batch.error and "0.6 USD" in batch.error and rid(1) in batch.error
    assert [job_status(store, rid(i)) for i in range(5)] == [
        JobStatus.COMPLETED,
        JobStatus.COMPLETED,
        JobStatus.RUNNING,  # its worker cancels it when its heartbeat sees the batch ended
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
    ]
    assert claim_one(store, rid(3), worker="w2") == Skipped("b1", rid(3), SkipReason.DONE)
    # What the running job still spends is counted; the batch stays failed.
    store.finish([running.outcome(JobStatus.COMPLETED, result=spent(0.3))])
    batch = store.get_batch("b1")
    assert batch.cost == pytest.approx(0.9)
    assert batch.status == BatchStatus.FAILED


def v1_metadata() -> MetaData:
    """The tables as schema version 1 had them: no spending columns, no LLM tables, jobs
    keyed by (batch_id, record_id)."""
    old = MetaData()
    for table in (meta, batches, jobs):
        dropped = ADDED_COLUMNS.get(table.name, ())
        dropped += ("variant", "repeat") if table is jobs else ()
        Table(table.name, old, *(c._copy() for c in table.columns if c.name not in dropped))
    return old


def test_a_version_1_store_gets_the_new_columns_and_tables_and_keeps_its_batches(
    store_url: str,
) -> None:
    engine = create_engine(store_url)
    with engine.begin() as conn:
        v1_metadata().create_all(conn)
        conn.execute(insert(meta).values(key="schema_version", value="1"))
        conn.execute(
            insert(batches).values(
                id="old",
                flow="t",
                status="completed",
                request={"flow": "t"},
                flow_snapshot={"name": "t"},
                total=0,
                seed=1,
                published=True,
                created_at=1.0,
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (batch_id, record_id, seq, status, attempts, record) "
                "VALUES ('old', 'r1', 0, 'completed', 1, :record)"
            ),
            {"record": '{"record_id": "r1", "content": "kept"}'},
        )
    engine.dispose()

    store = Store(store_url)
    try:
        with store.transaction(write=False) as conn:
            inspector = inspect(conn)
            for table, added in ADDED_COLUMNS.items():
                names = {c["name"] for c in inspector.get_columns(table)}
                assert set(added) <= names, table
            key = inspector.get_pk_constraint("jobs")["constrained_columns"]
            assert key == ["batch_id", "record_id", "variant", "repeat"]
            assert {"llm_budget", "llm_cache"} <= set(inspector.get_table_names())
            version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version"))
            assert version.scalar() == str(SCHEMA_VERSION)
        old = store.get_batch("old")
        assert (old.cost, old.input_tokens, old.output_tokens) == (None, 0, 0)
        assert [c.key for c in old.combinations()] == ["default"] and old.repeats == 1
        job = store.get_job("old", "r1")
        assert (job.variant, job.repeat, job.status, job.record.content) == (  # type: ignore[union-attr]
            "default",
            0,
            JobStatus.COMPLETED,
            "kept",
        )
        assert old.request.max_cost is None
        make_batch(store, 1, max_cost=2.0)
        got = claimed(store, rid(0))
        store.finish([got.outcome(JobStatus.COMPLETED, result=spent(0.5, 4, 2))])
        batch = store.get_batch("b1")
        assert (batch.cost, batch.input_tokens, batch.output_tokens) == (0.5, 4, 2)
    finally:
        store.close()
    Store(store_url).close()  # opening a migrated store again changes nothing
