"""BatchService.create is all or nothing from the user's point of view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from conftest import Env, write_records

from buttermilk.batch.service import PUBLISH_CHUNK, BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.errors import QueueError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.base import JobMessage
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.store.store import Store


class QueueThatFailsMidway(LocalQueue):
    """A real local queue whose second publish call fails, as a network would."""

    calls = 0

    async def publish(self, messages: Sequence[JobMessage]) -> None:
        self.calls += 1
        if self.calls > 1:
            raise QueueError("connection reset while publishing")
        await super().publish(messages)


def flow(data: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
        }
    )


def test_a_create_whose_publishing_fails_midway_leaves_no_batch(tmp_path: Path) -> None:
    write_records(tmp_path / "records.jsonl", PUBLISH_CHUNK + 10)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = QueueThatFailsMidway(tmp_path / "queue.db", lease_seconds=5)
    service = BatchService(store, queue, StaticFlowCatalog({"f": flow(tmp_path)}))

    with pytest.raises(QueueError, match="connection reset"):
        anyio.run(service.create, BatchRequest(flow="f"))

    assert store.list_batches() == []
    assert queue.depth() == PUBLISH_CHUNK  # the first chunk went out before the failure
    stats = anyio.run(Worker(store, queue, WorkerOptions(idle_timeout=0.2)).run)
    assert stats.completed == 0 and stats.malformed == PUBLISH_CHUNK  # dropped: no such batch
    assert queue.depth() == 0


def test_a_batch_whose_publishing_never_finished_is_completed_by_retry(env: Env) -> None:
    ids = write_records(env.data / "records.jsonl", 5)
    # As if the creating process died after storing the batch, before publishing a message:
    env.store().create_batch(
        batch_id="kdied0000000",
        request=BatchRequest(flow="f"),
        flow_snapshot=flow(env.data).snapshot(),
        seed=1,
        records=[Record(record_id=rid, content=rid) for rid in ids],
    )
    shown = env.ok("batch.command=status", "batch.batch_id=kdied").stdout
    assert "not every job was published" in shown

    retried = env.ok(
        "batch.command=retry", "batch.batch_id=kdied", "batch.wait=true", "batch.format=json"
    )

    assert "requeued 5 jobs" in retried.stderr
    assert retried.json()["status"] == "completed" and retried.json()["counts"]["completed"] == 5
