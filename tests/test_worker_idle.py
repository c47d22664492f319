"""``batch.idle_timeout``: a worker is idle only after a look at the queue found nothing.

In process, on the embedded queue and store: the worker's own loop is the point.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from conftest import write_records

from buttermilk.batch import worker as worker_module
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store


def noop_flow(data: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(data)}},
            "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
        }
    )


def test_idle_timeout_0_works_every_queued_job_then_stops_once_the_queue_is_empty(
    tmp_path: Path,
) -> None:
    write_records(tmp_path / "records.jsonl", 12)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=5, poll_interval=0.02)
    flows = StaticFlowCatalog({"f": noop_flow(tmp_path / "records.jsonl")})
    created = anyio.run(BatchService(store, queue, flows).create, BatchRequest(flow="f"))
    # Two at once: the worker holds fewer jobs than wait on the queue.
    worker = Worker(store, queue, WorkerOptions(idle_timeout=0, concurrency=2))

    stats = anyio.run(worker.run)

    assert stats.completed == 12
    assert store.job_counts([created.batch.id])[created.batch.id] == {JobStatus.COMPLETED: 12}
    assert queue.depth() == 0
    store.close()


def test_idle_timeout_0_on_an_empty_queue_looks_once_then_stops(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=5, poll_interval=0.02)
    looks = 0
    receive = queue.receive

    async def counting_receive(*args: object, **kwargs: object) -> list[object]:
        nonlocal looks
        looks += 1
        return await receive(*args, **kwargs)  # type: ignore[arg-type]

    queue.receive = counting_receive  # type: ignore[method-assign]
    started = time.monotonic()

    stats = anyio.run(Worker(store, queue, WorkerOptions(idle_timeout=0)).run)

    assert (looks, stats.claimed) == (1, 0)
    assert time.monotonic() - started < 10
    store.close()


def test_a_worker_told_to_stop_while_it_waits_on_an_empty_queue_stops_without_waiting_it_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``batch.wait=true`` stops its worker as soon as the batch ends: the embedded queue's
    wait for messages (60 s here, a slow poll) is cut short, not waited out."""
    monkeypatch.setattr(worker_module, "RECEIVE_WAIT", 60.0)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=5, poll_interval=30)
    worker = Worker(store, queue, WorkerOptions(idle_timeout=None))
    stopped_after: list[float] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.sleep(0.3)  # its first look found nothing: it waits on the queue
            started = time.monotonic()
            worker.stop()
        stopped_after.append(time.monotonic() - started)

    anyio.run(main)

    assert stopped_after[0] < 10, stopped_after  # not the 60 s the wait had left
    assert worker.stats.claimed == 0
    store.close()
