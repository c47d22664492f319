"""The embedded SQLite queue: leases, nack delays, stale lease holders, routing, and
sharing one queue file between tasks, threads and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from conftest import wait_until

from buttermilk.queue.base import Delivery, JobMessage
from buttermilk.queue.local import LocalQueue

LEASE = 0.5


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[LocalQueue]:
    q = LocalQueue(tmp_path / "queue.db", lease_seconds=LEASE, poll_interval=0.02)
    yield q
    await q.aclose()


def job(record_id: str, batch_id: str = "b1", *, interactive: bool = False) -> JobMessage:
    return JobMessage(batch_id=batch_id, record_id=record_id, flow="f", interactive=interactive)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [d.message.record_id for d in deliveries if d.message is not None]


# -- leases ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_received_message_carries_its_job_and_first_attempt(queue: LocalQueue) -> None:
    sent = job("r1")
    await queue.publish([sent])

    (got,) = await queue.receive(10, wait=0)

    assert got.message == sent
    assert got.problem is None
    assert got.delivery_attempt == 1


@pytest.mark.anyio
async def test_a_received_message_is_invisible_until_its_lease_expires(
    queue: LocalQueue,
) -> None:
    await queue.publish([job("r1")])
    assert len(await queue.receive(1, wait=0)) == 1
    received_at = time.monotonic()

    assert await queue.receive(10, wait=0) == []
    again = await queue.receive(10, wait=5)

    assert time.monotonic() - received_at >= LEASE * 0.9
    assert ids(again) == ["r1"]
    assert again[0].delivery_attempt == 2


@pytest.mark.anyio
async def test_an_acked_message_never_comes_back(queue: LocalQueue) -> None:
    await queue.publish([job("r1"), job("r2")])
    first = await queue.receive(1, wait=0)
    await first[0].ack()

    later = await queue.receive(10, wait=LEASE * 3)
    assert ids(later) == ["r2"]
    await later[0].ack()

    assert await queue.receive(10, wait=LEASE * 2) == []
    assert queue.depth() == 0


@pytest.mark.anyio
async def test_a_nack_without_delay_makes_the_message_visible_at_once(
    queue: LocalQueue,
) -> None:
    await queue.publish([job("r1")])
    (got,) = await queue.receive(1, wait=0)

    await got.nack()

    again = await queue.receive(1, wait=0)
    assert ids(again) == ["r1"]
    assert again[0].delivery_attempt == 2


@pytest.mark.anyio
async def test_a_nack_with_delay_hides_the_message_for_that_delay(queue: LocalQueue) -> None:
    q = LocalQueue(queue.path, lease_seconds=30, poll_interval=0.02)
    try:
        await q.publish([job("r1")])
        (got,) = await q.receive(1, wait=0)

        await got.nack(delay=0.6)
        nacked_at = time.monotonic()

        assert await q.receive(1, wait=0) == []
        again = await q.receive(1, wait=5)
        assert time.monotonic() - nacked_at >= 0.5
        assert ids(again) == ["r1"]
    finally:
        await q.aclose()


@pytest.mark.anyio
async def test_extend_keeps_a_message_invisible_past_its_original_lease(
    queue: LocalQueue,
) -> None:
    await queue.publish([job("r1")])
    (got,) = await queue.receive(1, wait=0)

    await got.extend(LEASE * 4)

    # Polls for twice the original lease: the message must not show up.
    assert await queue.receive(1, wait=LEASE * 2) == []
    # And it does come back once the extended lease runs out.
    assert ids(await queue.receive(1, wait=LEASE * 6)) == ["r1"]


# -- stale lease holders ---------------------------------------------------------------


@pytest.mark.anyio
async def test_a_stale_holder_cannot_ack_a_message_someone_else_received(
    queue: LocalQueue,
) -> None:
    await queue.publish([job("r1")])
    (stale,) = await queue.receive(1, wait=0)
    (current,) = await queue.receive(1, wait=5)  # after the first lease expired

    await stale.ack()

    assert queue.depth() == 1
    await current.ack()
    assert queue.depth() == 0


@pytest.mark.anyio
async def test_a_stale_holder_cannot_nack_a_message_back_into_view(queue: LocalQueue) -> None:
    q = LocalQueue(queue.path, lease_seconds=LEASE, poll_interval=0.02)
    try:
        await q.publish([job("r1")])
        (stale,) = await q.receive(1, wait=0)
        (current,) = await q.receive(1, wait=5)
        await current.extend(30)

        await stale.nack(delay=0)

        assert await q.receive(1, wait=LEASE) == []
        assert q.depth() == 1
    finally:
        await q.aclose()


@pytest.mark.anyio
async def test_a_stale_holder_cannot_extend_the_new_holders_lease(queue: LocalQueue) -> None:
    await queue.publish([job("r1")])
    (stale,) = await queue.receive(1, wait=0)
    (current,) = await queue.receive(1, wait=5)
    taken_at = time.monotonic()

    await stale.extend(60)

    # The new holder's lease (LEASE seconds) still runs out: a third receiver gets it.
    third = await queue.receive(1, wait=5)
    assert ids(third) == ["r1"]
    assert third[0].delivery_attempt == 3
    assert time.monotonic() - taken_at < 5
    del current


@pytest.mark.anyio
async def test_after_a_nack_the_old_delivery_can_no_longer_ack(queue: LocalQueue) -> None:
    await queue.publish([job("r1")])
    (got,) = await queue.receive(1, wait=0)
    await got.nack(delay=0)

    await got.ack()

    assert queue.depth() == 1
    assert ids(await queue.receive(1, wait=0)) == ["r1"]


# -- routing ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_receive_can_keep_to_one_batch(queue: LocalQueue) -> None:
    await queue.publish([job("a1", "A"), job("b1", "B"), job("a2", "A"), job("b2", "B")])

    only_b = await queue.receive(10, batch_id="B", wait=0)
    rest = await queue.receive(10, wait=0)

    assert ids(only_b) == ["b1", "b2"]
    assert ids(rest) == ["a1", "a2"]
    assert await queue.receive(10, batch_id="C", wait=0) == []


@pytest.mark.anyio
async def test_interactive_jobs_only_reach_interactive_receivers(queue: LocalQueue) -> None:
    await queue.publish([job("plain"), job("asks", interactive=True)])

    plain = await queue.receive(10, wait=0)
    assert ids(plain) == ["plain"]
    await plain[0].ack()
    assert await queue.receive(10, wait=0.3) == []

    interactive = await queue.receive(10, interactive=True, wait=0)
    assert ids(interactive) == ["asks"]
    assert interactive[0].message is not None and interactive[0].message.interactive


@pytest.mark.anyio
async def test_receive_returns_at_most_the_number_asked_oldest_first(queue: LocalQueue) -> None:
    await queue.publish([job(f"r{i}") for i in range(7)])

    first = await queue.receive(3, wait=0)
    second = await queue.receive(3, wait=0)
    third = await queue.receive(3, wait=0)

    assert ids(first) == ["r0", "r1", "r2"]
    assert ids(second) == ["r3", "r4", "r5"]
    assert ids(third) == ["r6"]


@pytest.mark.anyio
async def test_receive_on_an_empty_queue_waits_about_as_long_as_asked(
    queue: LocalQueue,
) -> None:
    started = time.monotonic()
    assert await queue.receive(1, wait=0.3) == []
    assert 0.25 <= time.monotonic() - started < 3


@pytest.mark.anyio
async def test_a_message_published_while_waiting_is_received_before_the_wait_ends(
    queue: LocalQueue,
) -> None:
    async def publish_soon() -> None:
        await anyio.sleep(0.2)
        await queue.publish([job("late")])

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish_soon)
        started = time.monotonic()
        got = await queue.receive(1, wait=10)
    assert ids(got) == ["late"]
    assert time.monotonic() - started < 5


# -- malformed bodies ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 99, "batch_id": "b", "record_id": "r", "flow": "f"}', "schema version"),
        (b'{"v": 1, "record_id": "r", "flow": "f"}', "batch_id"),
    ],
)
async def test_a_malformed_body_comes_back_without_a_message_and_with_the_problem(
    queue: LocalQueue, body: bytes, problem: str
) -> None:
    queue.publish_raw(body)

    (got,) = await queue.receive(1, wait=0)

    assert got.message is None
    assert got.problem is not None and problem in got.problem
    assert got.body == body
    await got.ack()
    assert queue.depth() == 0


# -- concurrency -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_many_tasks_sharing_one_queue_object_get_every_message_exactly_once(
    tmp_path: Path,
) -> None:
    q = LocalQueue(tmp_path / "queue.db", lease_seconds=60, poll_interval=0.01)
    total = 600
    await q.publish([job(f"r{i:04d}") for i in range(total)])
    seen: Counter[str] = Counter()

    async def consume() -> None:
        while True:
            got = await q.receive(4, wait=0.3)
            if not got:
                return
            for d in got:
                assert d.message is not None
                seen[d.message.record_id] += 1
            async with anyio.create_task_group() as acks:
                for d in got:  # one ack per delivery, all at once
                    acks.start_soon(d.ack)
                acks.start_soon(q.extend, got, 60)

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for _ in range(24):
                    tg.start_soon(consume)
        assert sorted(seen) == [f"r{i:04d}" for i in range(total)]
        assert set(seen.values()) == {1}
        assert q.depth() == 0
    finally:
        await q.aclose()


@pytest.mark.anyio
async def test_publish_receive_nack_and_ack_from_many_tasks_at_once_lose_nothing(
    tmp_path: Path,
) -> None:
    q = LocalQueue(tmp_path / "queue.db", lease_seconds=60, poll_interval=0.01)
    expected = {f"p{n}-{i}" for n in range(10) for i in range(20)}
    acked: Counter[str] = Counter()
    nacked: set[str] = set()

    async def produce(n: int) -> None:
        for i in range(20):
            await q.publish([job(f"p{n}-{i}")])

    async def consume() -> None:
        while set(acked) != expected:
            for d in await q.receive(3, wait=0.05):
                assert d.message is not None
                rid = d.message.record_id
                if rid.endswith("7") and rid not in nacked:  # give some back once
                    nacked.add(rid)
                    await d.nack(0)
                else:
                    await d.ack()
                    acked[rid] += 1

    try:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(produce, n)
                for _ in range(10):
                    tg.start_soon(consume)
        assert set(acked) == expected
        assert set(acked.values()) == {1}
        assert nacked and q.depth() == 0
    finally:
        await q.aclose()


WORKER = """
import json, sys, time, anyio
from pathlib import Path
from buttermilk.queue.local import LocalQueue

db, ready, go, out = sys.argv[1:5]

async def main():
    q = LocalQueue(db, lease_seconds=60, poll_interval=0.01)
    Path(ready).touch()
    while not Path(go).exists():
        await anyio.sleep(0.005)
    got = []
    while True:
        batch = await q.receive(2, wait=0.5)
        if not batch:
            break
        got.extend(d.message.record_id for d in batch)
        await anyio.sleep(0.002)  # let the other processes take turns
    Path(out).write_text(json.dumps(got))
    await q.aclose()

anyio.run(main)
"""


def test_processes_receiving_from_one_file_never_share_a_leased_message(
    tmp_path: Path,
) -> None:
    db = tmp_path / "queue.db"
    q = LocalQueue(db, lease_seconds=60)
    total = 400
    anyio.run(q.publish, [job(f"r{i:04d}") for i in range(total)])
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    procs = []
    for n in range(3):
        args = [str(db), str(tmp_path / f"ready{n}"), str(go), str(tmp_path / f"out{n}.json")]
        procs.append(subprocess.Popen([sys.executable, str(script), *args]))
    try:
        wait_until(
            lambda: all((tmp_path / f"ready{n}").exists() for n in range(3)),
            60,
            "three queue processes started",
        )
        go.touch()
        for proc in procs:
            assert proc.wait(timeout=60) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    got = [json.loads((tmp_path / f"out{n}.json").read_text()) for n in range(3)]

    everything = [rid for part in got for rid in part]
    assert sorted(everything) == [f"r{i:04d}" for i in range(total)]  # each exactly once
    # Concurrency really happened (which processes start first is the scheduler's choice).
    busy = [len(part) for part in got]
    assert sum(1 for n in busy if n) >= 2, f"only one process received anything: {busy}"
    # No message was acked: all are still there, leased.
    assert q.depth() == total
    assert anyio.run(lambda: q.receive(10, wait=0)) == []
    anyio.run(q.aclose)
