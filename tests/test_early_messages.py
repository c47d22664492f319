"""A create on Pub/Sub publishes while it stores the batch: a worker may get a message
before its batch is committed. It gives such a message back for a moment (no attempt
spent, nothing dead-lettered); a message of a batch that never appears is set aside once
it is old."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import psycopg
import pytest
from backends import patched_environ
from conftest import Env, write_records
from sqlalchemy import text

from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import NOT_VISIBLE_FOR, Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.base import JobMessage
from buttermilk.queue.local import LocalQueue

DEADLINE = 60.0  # seconds any wait of these tests may take before it fails


def noop_flow(data: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
        }
    )


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"waited {DEADLINE:.0f}s for {what}"
        await anyio.sleep(0.02)


@pytest.mark.backends("pubsub")
def test_a_worker_racing_a_create_gives_early_messages_back_and_runs_every_job_once(
    env: Env,
) -> None:
    records = 300
    write_records(env.data / "records.jsonl", records)
    store = env.store()
    assert env.backend.database_url is not None
    # Hold the create's INSERT into batches back until the worker has had its messages.
    blocker = psycopg.connect(env.backend.database_url.replace("+psycopg", ""))
    blocker.execute("LOCK TABLE batches IN SHARE ROW EXCLUSIVE MODE")
    created: list[str] = []

    async def main() -> Worker:
        async with env.backend.pubsub_queue() as mine, env.backend.pubsub_queue() as theirs:
            await mine.prepare(interactive=False)
            service = BatchService(store, theirs, StaticFlowCatalog({"f": noop_flow(env.data)}))
            worker = Worker(store, mine, WorkerOptions(concurrency=50, idle_timeout=2))

            async def create() -> None:
                created.append((await service.create(BatchRequest(flow="f"))).batch.id)

            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                tg.start_soon(create)
                await wait_for(lambda: worker.stats.not_yet_visible >= 50, "early messages")
                assert not created  # the create is still storing its batch
                blocker.rollback()  # now the batch can be committed
                await wait_for(lambda: worker.stats.completed == records, "every job")
                worker.stop()
            return worker

    try:
        with patched_environ(env.backend.environ):
            worker = anyio.run(main)
    finally:
        blocker.close()

    stats = worker.stats
    assert stats.completed == records and stats.failed == 0 and stats.malformed == 0
    assert stats.skipped == 0  # no message ran a job twice
    with store.engine.connect() as conn:
        attempts = conn.execute(
            text("SELECT attempts, status, count(*) FROM jobs GROUP BY attempts, status")
        ).all()
    assert attempts == [(1, "completed", records)]  # waiting spent no attempt
    assert env.batch_status(created[0]) == "completed"
    assert env.backend.queue_depth(env.home) == 0  # nothing left over, nothing given up


@pytest.mark.backends("local")
def test_a_young_message_of_an_unknown_batch_waits_and_an_old_one_is_set_aside(
    env: Env,
) -> None:
    store = env.store()
    queue = LocalQueue(env.home / "queue.db", lease_seconds=5)
    young = JobMessage(batch_id="nosuchbatch1", record_id="a", flow="f", created_at=time.time())
    old = JobMessage(
        batch_id="nosuchbatch2",
        record_id="b",
        flow="f",
        created_at=time.time() - NOT_VISIBLE_FOR - 1,
    )

    async def main() -> Worker:
        async with queue:
            await queue.publish([young, old])
            worker = Worker(store, queue, WorkerOptions(idle_timeout=None))
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await wait_for(lambda: worker.stats.malformed == 1, "the old one set aside")
                await wait_for(lambda: worker.stats.not_yet_visible >= 2, "the young one twice")
                worker.stop()
            return worker

    worker = anyio.run(main)

    assert worker.stats.malformed == 1  # the old one, once
    assert worker.stats.not_yet_visible >= 2  # given back, came back, given back again
    remaining = LocalQueue(env.home / "queue.db")
    try:
        assert remaining.depth() == 1  # the young one is still there
    finally:
        anyio.run(remaining.aclose)
