"""What only the Pub/Sub transport does: provisioning, message shape, dead letters, outages.

Everything else (the whole command set and its semantics) runs on Pub/Sub + PostgreSQL
through the backend-parametrised end-to-end tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from backends import Backend, free_port, patched_environ, start_emulator, stop_emulator
from conftest import Env, wait_until, write_records

from buttermilk.domain import JobStatus
from buttermilk.queue import PubSubQueueSettings
from buttermilk.queue.pubsub import PubSubQueue

pytestmark = pytest.mark.backends("pubsub")
T = TypeVar("T")


def with_queue(backend: Backend, fn: Callable[[PubSubQueue], Awaitable[T]], **options: Any) -> T:
    """Run ``fn`` with a queue on the test's Pub/Sub project, in a fresh event loop."""
    assert backend.project is not None

    async def main() -> T:
        async with PubSubQueue(PubSubQueueSettings(project=backend.project, **options)) as q:
            return await fn(q)

    with patched_environ(backend.environ):
        return anyio.run(main)


def pull(backend: Backend, subscription: str, count: int, timeout: float = 30) -> list[Any]:
    """Pull (and ack) ``count`` messages from a subscription of the test's project."""

    async def main(queue: PubSubQueue) -> list[Any]:
        _, subscriber = queue._async_clients()
        path = f"projects/{backend.project}/subscriptions/{subscription}"
        found: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            answer = await subscriber.pull(
                subscription=path, max_messages=100, timeout=3, retry=None
            )
            found.extend(answer.received_messages)
            if answer.received_messages:
                await subscriber.acknowledge(
                    subscription=path, ack_ids=[m.ack_id for m in answer.received_messages]
                )
        return found

    return with_queue(backend, main)


def test_create_provisions_topics_and_subscriptions_with_dead_letter_and_retry_policies(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 3)
    env.create("t_work", "queue.max_delivery_attempts=7", "queue.ack_deadline=20")
    env.create("t_work", "batch.interactive=true")  # reuses the dead-letter topic

    async def inspect(queue: PubSubQueue) -> dict[str, Any]:
        _, subscriber = queue._async_clients()
        jobs = await subscriber.get_subscription(subscription=queue.subscription_path("jobs"))
        interactive = await subscriber.get_subscription(
            subscription=queue.subscription_path("interactive")
        )
        dead = await subscriber.get_subscription(subscription=queue.dead_letter_subscription_path)
        return {"jobs": jobs, "interactive": interactive, "dead": dead}

    found = with_queue(env.backend, inspect)
    project = env.backend.project
    jobs = found["jobs"]
    assert jobs.topic == f"projects/{project}/topics/buttermilk-jobs"
    assert jobs.ack_deadline_seconds == 20
    assert jobs.dead_letter_policy.max_delivery_attempts == 7
    assert jobs.dead_letter_policy.dead_letter_topic == (
        f"projects/{project}/topics/buttermilk-dead-letter"
    )
    assert jobs.retry_policy.maximum_backoff.seconds == 1  # the test backend's setting
    # Interactive jobs travel on a topic of their own (the emulator ignores filters).
    assert found["interactive"].topic == f"projects/{project}/topics/buttermilk-jobs-interactive"
    assert found["dead"].topic == f"projects/{project}/topics/buttermilk-dead-letter"


def test_a_message_carries_its_job_as_json_with_attributes_for_operators(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)
    batch_id = env.create("t_work", "batch.parameters={sleep:0}")

    messages = pull(env.backend, "buttermilk-workers", 2)

    assert len(messages) == 2
    for received in messages:
        body = json.loads(received.message.data)
        assert body["v"] == 1 and body["batch_id"] == batch_id and body["flow"] == "t_work"
        assert body["record"]["record_id"] == body["record_id"]  # small records travel inline
        assert "record " in body["record"]["content"]
        assert dict(received.message.attributes) == {
            "batch_id": batch_id,
            "flow": "t_work",
            "interactive": "false",
        }


def test_a_record_too_big_for_pub_sub_is_refused_at_create_naming_it(env: Env) -> None:
    with (env.data / "records.jsonl").open("w") as fh:
        fh.write(json.dumps({"id": "small", "text": "fine"}) + "\n")
        fh.write(json.dumps({"id": "huge", "text": "x" * 10_500_000}) + "\n")

    result = env.cli("flow=t_work", "batch.command=create")

    assert result.returncode == 2, str(result)
    assert result.stderr.strip().splitlines()[-1].startswith("error: record 'huge' is ")
    assert "at most" in result.stderr
    assert env.ok("batch.command=list", "batch.format=json").json() == []


def test_a_poison_record_is_dead_lettered_after_its_attempts_and_failed_in_the_store(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 6)
    batch_id = env.create(
        "t_work",
        "batch.max_attempts=5",
        "batch.retry_delay=0.05",
        "batch.parameters={fail_on:[r00002]}",
        "queue.max_delivery_attempts=5",
    )

    run = env.ok("batch.command=run", "batch.idle_timeout=3", "batch.format=json")

    assert run.json()["completed"] == 5 and run.json()["failed"] == 1
    assert env.batch_status(batch_id) == "completed"  # error_policy=continue goes on
    job = env.store().get_job(batch_id, "r00002")
    assert job.status == JobStatus.FAILED and job.attempts == 5
    assert job.error_message and "r00002" in job.error_message
    dead = pull(env.backend, "buttermilk-dead-letter", 1)
    assert len(dead) == 1
    attributes = dict(dead[0].message.attributes)
    assert attributes["batch_id"] == batch_id and attributes["record_id"] == "r00002"
    assert attributes["delivery_attempt"] == "5"
    assert attributes["reason"].startswith("job failed: ")
    assert json.loads(dead[0].message.data)["record_id"] == "r00002"


def deliver_without_claiming(backend: Backend, times: int) -> None:
    """Receive the one queued message ``times`` times and give it back each time, as
    workers that died before claiming it would: only its delivery count grows."""

    async def main(queue: PubSubQueue) -> None:
        _, subscriber = queue._async_clients()
        path = queue.subscription_path("jobs")
        seen = 0
        deadline = time.monotonic() + 30
        while seen < times and time.monotonic() < deadline:
            answer = await subscriber.pull(subscription=path, max_messages=1, timeout=3, retry=None)
            for received in answer.received_messages:
                seen = received.delivery_attempt
                await subscriber.modify_ack_deadline(
                    subscription=path, ack_ids=[received.ack_id], ack_deadline_seconds=0
                )
        assert seen == times

    with_queue(backend, main)


@pytest.mark.slow
def test_a_job_whose_worker_dies_on_its_messages_last_delivery_fails_in_the_store(
    env: Env,
) -> None:
    # The subscription dead-letters the message after its last delivery: no claim will ever
    # come again, so the store must end the job itself once its lease has run out.
    env.extra["PYTHONPATH"] = str(Path(__file__).parent)  # the t_crash flow's agent
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create(
        "t_crash",
        "batch.max_attempts=10",
        "batch.parameters={kill_on:[r00000]}",
        "queue.max_delivery_attempts=5",
        "queue.ack_deadline=2",
    )
    deliver_without_claiming(env.backend, 4)

    killed = env.cli("batch.command=run", "batch.idle_timeout=3")
    assert killed.returncode == -9, str(killed)  # it claimed the 5th delivery, then died

    status = wait_until(
        lambda: (s := env.status(batch_id))["status"] == "completed" and s,
        20,
        "status to fail the job once its lease ran out",
        interval=0.5,
    )
    [error] = status["common_errors"]
    assert error["error_type"] == "WorkerLost"
    assert error["error_message"].startswith("worker lost while running it once")
    assert env.store().get_job(batch_id, "r00000").attempts == 1
    retried = env.ok("batch.command=retry", f"batch.batch_id={batch_id}")
    assert "requeued 1 jobs" in retried.stderr


def test_a_missing_project_is_a_one_line_error(env: Env) -> None:
    result = env.cli("batch.command=list", "queue.project=???")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: queue.project is required (give it as queue.project=...)"
    ]


def test_an_unreachable_pub_sub_is_a_one_line_error_and_creates_nothing(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)
    env.extra["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{free_port()}"
    started = time.monotonic()

    result = env.cli("flow=t_work", "batch.command=create", "queue.timeout=3")

    assert result.returncode == 1, str(result)
    assert time.monotonic() - started < 20
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: creating topic ") and "cannot reach the emulator" in last
    assert env.ok("batch.command=list", "batch.format=json").json() == []


@pytest.mark.slow
def test_a_worker_rides_out_an_emulator_restart_without_being_restarted(env: Env) -> None:
    port = free_port()
    emulator = start_emulator(port)
    env.extra["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    env.backend.environ = {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}
    try:
        write_records(env.data / "records.jsonl", 5)
        first = env.create("t_work")
        log = env.home / "worker.log"
        with env.worker(log_name="worker"):
            wait_until(lambda: env.batch_status(first) == "completed", 30, "first batch done")
            stop_emulator(emulator)
            wait_until(lambda: "cannot receive jobs" in log.read_text(), 30, "outage logged")
            emulator = start_emulator(port)  # it forgot every topic and subscription
            second = env.create("t_work")
            wait_until(lambda: env.batch_status(second) == "completed", 60, "second batch done")
        text = log.read_text()
        assert text.count("cannot receive jobs") == 1, text  # logged once, not per retry
        assert "receiving jobs again" in text
    finally:
        stop_emulator(emulator)


def test_the_queue_recreates_a_subscription_that_disappeared(env: Env) -> None:
    async def scenario(queue: PubSubQueue) -> int:
        await queue.prepare(interactive=False)
        _, subscriber = queue._async_clients()
        await subscriber.delete_subscription(subscription=queue.subscription_path("jobs"))
        assert await queue.receive(10, wait=0.5) == []  # answered 404: made it again
        await subscriber.get_subscription(subscription=queue.subscription_path("jobs"))
        await queue.publish_raw(b"hello")
        found = await queue.receive(10, wait=2)
        await queue.ack(found)
        return len(found)

    assert with_queue(env.backend, scenario) == 1


def test_settling_a_message_whose_subscription_is_gone_raises_a_queue_error(env: Env) -> None:
    async def scenario(queue: PubSubQueue) -> str:
        await queue.prepare(interactive=False)
        await queue.publish_raw(b"hello")
        found = await queue.receive(10, wait=2)
        _, subscriber = queue._async_clients()
        await subscriber.delete_subscription(subscription=queue.subscription_path("jobs"))
        try:
            await queue.ack(found)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "no error"

    outcome = with_queue(env.backend, scenario)
    assert outcome.startswith("QueueError: acknowledging 1 message(s)"), outcome
