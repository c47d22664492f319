"""Grids (records x combinations x repeats) under failure: a worker killed mid-run, a
batch cancelled mid-run, paired records under shuffle and max_records, planned order.

Each test runs on both backends (see conftest): the kill test through the CLI (a worker
process is what gets killed), the others in-process (BatchService and Worker over the
backend's real store and queue).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from backends import patched_environ
from conftest import Env, kill_one_of_three_workers, write_records

from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, BatchStatus, JobKey, JobStatus
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.base import Queue
from buttermilk.queue.local import LocalQueue

HELD = 10  # most jobs one worker holds (its worker_concurrency)


def tallies(path: Path) -> Counter[JobKey]:
    """Runs per job, from the lines tally_jobs appended: ``record variant repeat``."""
    if not path.exists():
        return Counter()
    found: Counter[JobKey] = Counter()
    for line in path.read_text().splitlines():
        record_id, variant, repeat = line.split()
        found[JobKey(record_id, variant, int(repeat))] += 1
    return found


def grid_keys(ids: list[str], variants: list[str], repeats: int) -> list[JobKey]:
    """Every job of a grid in planned order: record-major, then repeat, then combination."""
    return [JobKey(r, v, n) for r in ids for n in range(repeats) for v in variants]


# -- a worker killed mid-run (CLI) ------------------------------------------------------


@pytest.mark.slow
def test_a_grid_with_a_worker_killed_mid_run_has_one_result_per_record_combination_and_repeat(
    env: Env,
) -> None:
    ids = write_records(env.data / "records.jsonl", 150)
    tally = env.data / "tally.txt"
    batch_id = env.create(
        "t_grid",  # label: [a, b] x 2 repeats
        "batch.concurrency=12",
        f"batch.parameters={{sleep:0.05,tally_file:'{tally}'}}",
        env.lease(5),  # Pub/Sub: the subscription is made with this ack deadline
    )
    kill_one_of_three_workers(env, batch_id, after=120, held=HELD)

    jobs = list(env.store().iter_jobs(batch_id))
    records = list(dict.fromkeys(job.record_id for job in jobs))  # shuffled, in planned order
    assert sorted(records) == ids
    expected = grid_keys(records, ["a", "b"], 2)
    assert [job.key for job in jobs] == expected  # one job per key, in planned order
    assert all(job.status == JobStatus.COMPLETED and job.result for job in jobs)
    # Each job's agents learnt its combination and repeat.
    assert all(
        job.result["outputs"]["tally"] == {"variant": job.variant, "repeat": job.repeat}
        for job in jobs
        if job.result
    )
    runs = tallies(tally)
    assert set(runs) == set(expected), "every (record, combination, repeat) ran"
    assert max(runs.values()) <= 2
    twice = {key for key, n in runs.items() if n > 1}
    # Only what the killed worker held may have run twice.
    assert len(twice) <= HELD, twice
    retried = {job.key for job in jobs if job.attempts > 1}
    assert len(retried) <= HELD and twice <= retried


# -- in-process: BatchService and Worker over the backend's store and queue --------------


def grid_flow(data: Path) -> FlowConfig:
    """Waits ``parameters.sleep`` per job; no axes of its own (each request gives them)."""
    return FlowConfig.model_validate(
        {
            "name": "grid",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [
                {"name": "wait", "_target_": "buttermilk.agents.testing.Sleep", "seconds": 0.0},
                {"name": "tally", "_target_": "buttermilk.agents.testing.tally_jobs"},
            ],
            "parameters": {"sleep": 0.0},
        }
    )


@asynccontextmanager
async def service_on(env: Env) -> AsyncIterator[tuple[BatchService, Queue]]:
    """A BatchService (with the grid flow) over the test backend's real store and queue."""
    queue: Queue
    if env.backend.name == "local":
        queue = LocalQueue(env.home / "queue.db", lease_seconds=10)
    else:
        queue = env.backend.pubsub_queue()
    async with queue:
        flows = StaticFlowCatalog({"grid": grid_flow(env.data)})
        yield BatchService(env.store(), queue, flows), queue


def on_backend(env: Env, main: Callable[[], Awaitable[None]]) -> None:
    """Run ``main`` with the backend's environment (the emulator's address) set."""
    with patched_environ(env.backend.environ):
        anyio.run(main)


def test_cancel_mid_run_leaves_the_combinations_balanced(env: Env) -> None:
    write_records(env.data / "records.jsonl", 60)
    concurrency = 4
    request = BatchRequest(
        flow="grid",
        variants={"label": ["a", "b", "c"]},
        repeats=1,
        concurrency=concurrency,
        parameters={"sleep": 0.05},
    )
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env) as (service, queue):
            created = await service.create(request)
            batch_id = found["batch_id"] = created.batch.id
            options = WorkerOptions(concurrency=20, batch_id=batch_id, idle_timeout=30)
            worker = Worker(env.store(), queue, options)
            with anyio.fail_after(60):
                # The worker stops by itself once its batch has ended.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    while env.counts(batch_id)["completed"] < 45:  # noqa: ASYNC110 - polls the store
                        await anyio.sleep(0.02)
                    await service.cancel(batch_id)

    on_backend(env, main)

    batch_id = found["batch_id"]
    assert env.store().get_batch(batch_id).status == BatchStatus.CANCELLED
    per_variant = env.store().variant_counts(batch_id)
    completed = {key: per_variant[key].get(JobStatus.COMPLETED, 0) for key in ("a", "b", "c")}
    assert sum(completed.values()) < 180, "cancelled before the end"
    assert max(completed.values()) - min(completed.values()) <= concurrency, completed


def test_every_combination_and_repeat_runs_on_the_same_shuffled_records(env: Env) -> None:
    ids = write_records(env.data / "records.jsonl", 40)
    request = BatchRequest(
        flow="grid",
        variants={"label": ["a", "b"], "tone": ["dry", "warm"]},
        repeats=2,
        shuffle=True,
        max_records=7,
    )
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env) as (service, queue):
            created = await service.create(request)
            found["batch_id"] = created.batch.id
            options = WorkerOptions(batch_id=created.batch.id, idle_timeout=30)
            await Worker(env.store(), queue, options).run()

    on_backend(env, main)

    jobs = list(env.store().iter_jobs(found["batch_id"]))
    assert len(jobs) == 7 * 4 * 2
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    chosen: dict[tuple[str, int], list[str]] = {}
    for job in jobs:
        chosen.setdefault((job.variant, job.repeat), []).append(job.record_id)
    assert set(chosen) == {(v, n) for v in ("a+dry", "a+warm", "b+dry", "b+warm") for n in (0, 1)}
    first = chosen["a+dry", 0]
    assert len(set(first)) == 7 and set(first) <= set(ids)
    assert first != sorted(first), "shuffled"  # 7 of 40 in id order: 1 chance in 5,040
    # Paired: the same records, in the same order, for every combination and repeat.
    assert all(records == first for records in chosen.values()), chosen


@pytest.mark.backends("local")  # message order is the local queue's; the store's is below
def test_a_grid_is_queued_record_major_so_each_record_s_jobs_come_together(env: Env) -> None:
    write_records(env.data / "records.jsonl", 5)
    request = BatchRequest(
        flow="grid", variants={"label": ["a", "b", "c"]}, repeats=2, shuffle=False
    )
    taken: list[JobKey] = []
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env) as (service, queue):
            found["batch_id"] = (await service.create(request)).batch.id
            deliveries = await queue.receive(12, wait=1.0)
            taken.extend(
                JobKey(d.message.record_id, d.message.variant, d.message.repeat)
                for d in deliveries
                if d.message is not None
            )
            await queue.nack(deliveries)

    on_backend(env, main)

    expected = grid_keys([f"r{i:05d}" for i in range(5)], ["a", "b", "c"], 2)
    jobs = list(env.store().iter_jobs(found["batch_id"]))
    assert [job.key for job in jobs] == expected
    assert [job.seq for job in jobs] == list(range(30))
    assert taken == expected[:12]  # the first two records' six jobs each, in seq order


def test_the_store_holds_a_grid_in_record_major_order(env: Env) -> None:
    ids = write_records(env.data / "records.jsonl", 4)
    request = BatchRequest(
        flow="grid", variants={"label": ["a", "b"], "tone": ["dry", "warm"]}, repeats=3
    )
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env) as (service, _):
            found["batch"] = (await service.create(request)).batch

    on_backend(env, main)

    jobs = list(env.store().iter_jobs(found["batch"].id))
    records = list(dict.fromkeys(job.record_id for job in jobs))  # in planned order
    assert sorted(records) == ids
    variants = ["a+dry", "a+warm", "b+dry", "b+warm"]
    assert [job.key for job in jobs] == grid_keys(records, variants, 3)
    assert [job.seq for job in jobs] == list(range(4 * 4 * 3))
