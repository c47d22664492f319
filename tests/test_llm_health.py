"""Endpoint health: create refuses (and estimate warns about) an LLM endpoint that cannot be
reached; while a batch runs, an endpoint that keeps failing is marked down and its jobs
wait, without failing or spending attempts, until it is back.

Everything runs against the fake OpenAI server (a real HTTP server on a real port), which
the tests stop and start again.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import Env, wait_until, write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from rich.console import Console

from buttermilk.api.app import create_app
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, BatchSummary, JobStatus
from buttermilk.errors import EndpointUnreachableError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.llm.endpoints import Endpoint, check_endpoint
from buttermilk.llm.retry import status_failure
from buttermilk.queue.local import LocalQueue
from buttermilk.runner import render
from buttermilk.store import endpoints as published
from buttermilk.store.store import Store

CLOSED = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def label(seen: Seen) -> Reply:
    mood = "positive" if "love it" in seen.text("user") else "negative"
    return answer(json.dumps({"label": mood}), usage=(30, 5), delay=0.02)


def flow_at(data: Path, base_url: str) -> FlowConfig:
    write_records(data / "records.jsonl", 24)
    judge = {
        "name": "judge",
        "_target_": "buttermilk.agents.llm.LLM",
        "model": "t-model",
        "base_url": base_url,
        "prompt": "Review: {{ record.content }}",
        "schema": {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}},
        "backoff": 0.01,
    }
    return FlowConfig.model_validate(
        {
            "name": "h",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [judge],
        }
    )


@dataclass
class Setup:
    service: BatchService
    store: Store


@pytest.fixture
def setup(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[Setup]:
    fake_openai.always(label)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    flows = StaticFlowCatalog({"h": flow_at(tmp_path, fake_openai.base_url)})
    yield Setup(BatchService(store, queue, flows), store)
    store.close()


class Working:
    """A worker on one batch, in a thread of this process, until the batch ends."""

    def __init__(self, setup: Setup, batch_id: str) -> None:
        options = WorkerOptions(batch_id=batch_id, concurrency=4)
        self.worker = Worker(setup.store, setup.service.queue, options)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            anyio.run(self.worker.run)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive() and self.error is None, self.error


def summary(setup: Setup, batch_id: str) -> BatchSummary:
    found: BatchSummary = anyio.run(setup.service.summary, batch_id)
    return found


def create(setup: Setup, **options: Any) -> str:
    return anyio.run(lambda: setup.service.create(BatchRequest(flow="h"), **options)).batch.id


def health_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "buttermilk.llm.health"]


# -- before a batch: create, estimate, the API ------------------------------------------------


@pytest.mark.backends("local")  # the check is the same on every transport
def test_create_against_a_closed_port_is_refused_in_one_line_and_creates_nothing(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 3)
    env.extra.update(T_LLM_BASE_URL=CLOSED, T_LLM_API_KEY="sk-secret-key")

    refused = env.cli("flow=t_llm")

    assert refused.returncode == 1, str(refused)
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: LLM endpoint {CLOSED} (agent judge) cannot be reached: ")
    assert "connection failed" in line and "sk-secret" not in line
    assert "'batch.variants={judge.base_url: [URL]}'" in line
    assert line.endswith("or skip this check with batch.check_endpoints=false")
    assert env.ok("batch.command=list", "batch.format=json").json() == []

    created = env.ok("flow=t_llm", "batch.check_endpoints=false", "batch.format=json").json()
    assert created["total"] == 3 and created["endpoints_down"] == []


@pytest.mark.backends("local")
def test_estimate_warns_about_an_unreachable_endpoint_and_still_estimates(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)
    env.extra.update(T_LLM_BASE_URL=CLOSED)

    warned = env.ok("flow=t_llm", "batch.command=estimate", "batch.format=json")
    quiet = env.ok(
        "flow=t_llm", "batch.command=estimate", "batch.format=json", "batch.check_endpoints=false"
    )

    assert warned.json()["total"]["calls"] == quiet.json()["total"]["calls"] == 3
    assert re.search(
        rf"WARNING LLM endpoint {re.escape(CLOSED)} \(agent judge\) cannot be", warned.stderr
    )
    assert CLOSED not in quiet.stderr


def test_every_combinations_endpoint_is_checked_and_named(setup: Setup, tmp_path: Path) -> None:
    up = setup.service.flows.get("h").agents[0].kwargs["base_url"]
    request = BatchRequest(flow="h", variants={"judge.base_url": [up, CLOSED]})

    problems = anyio.run(setup.service.unreachable_endpoints, request)
    with pytest.raises(EndpointUnreachableError) as caught:
        anyio.run(lambda: setup.service.create(request, check_endpoints=True))

    assert len(problems) == 1 and problems[0].startswith(f"LLM endpoint {CLOSED} (agent judge)")
    assert str(caught.value) == problems[0]
    assert setup.store.list_batches() == []


def test_a_refused_key_is_said_without_the_key_and_no_check_sends_a_chat_call(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_HEALTH_KEY", "sk-not-shown")
    endpoint = Endpoint(fake_openai.base_url, "T_HEALTH_KEY", "t-model")

    fake_openai.models_status = 401
    refused = anyio.run(check_endpoint, endpoint)
    fake_openai.models_status = 404  # no /models: the server answered, so it is reachable
    answered = anyio.run(check_endpoint, endpoint)

    assert refused is not None and refused.startswith("refuses the key in $T_HEALTH_KEY (set)")
    assert "sk-not-shown" not in refused
    assert answered is None
    assert fake_openai.requests == []  # nothing billed: no chat call


def test_the_api_answers_503_naming_the_endpoint_and_creates_nothing(
    setup: Setup, fake_openai: FakeOpenAI
) -> None:
    app = create_app(setup.service, check_endpoints=True)

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post("/api/batches", json={"flow_name": "h"})

    fake_openai.stop()
    refused = anyio.run(post)
    fake_openai.restart()
    created = anyio.run(post)

    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"].startswith(f"LLM endpoint {fake_openai.base_url} (agent judge) ")
    assert error["message"].endswith(
        '(through this API: a base_url axis is the create body\'s variants, {"AGENT.base_url": '
        "[URL]}; the check is the server's batch.check_endpoints option)"
    )
    assert created.status_code == 201, created.text
    assert len(setup.store.list_batches()) == 1


# -- while a batch runs -------------------------------------------------------------------------


def test_a_server_stopped_mid_batch_and_started_again_fails_no_job_and_spends_no_attempt(
    setup: Setup, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    batch_id = create(setup, check_endpoints=True)
    working = Working(setup, batch_id)
    wait_until(
        lambda: setup.store.job_counts([batch_id])[batch_id].get(JobStatus.COMPLETED),
        10,
        "a job done",
    )

    fake_openai.stop()
    down = wait_until(lambda: summary(setup, batch_id).endpoints_down, 10, "status shows it down")
    [shown] = down
    assert (shown.endpoint, shown.workers) == (fake_openai.base_url, 1)
    assert "connection failed" in shown.error
    console = Console(width=400, record=True)
    console.print(render.status_view(summary(setup, batch_id)))
    assert f"{fake_openai.base_url} down since" in console.export_text()
    while_down = summary(setup, batch_id)
    assert while_down.as_json()["endpoints_down"][0]["endpoint"] == shown.endpoint
    assert while_down.eta is None  # its jobs wait for the endpoint: no countdown
    [listed] = anyio.run(lambda: setup.service.list(limit=5))
    assert listed.as_json()["endpoints_down"] is None  # not read for a list: not "none"
    fake_openai.restart()
    working.join()

    done = summary(setup, batch_id)
    assert done.batch.status.value == "completed"
    assert done.counts == {JobStatus.COMPLETED: 24}
    assert done.endpoints_down == []
    assert {job.attempts for job in setup.store.iter_jobs(batch_id)} == {1}
    lines = health_lines(caplog)
    assert len([x for x in lines if " is down (5 calls in a row failed" in x]) == 1, lines
    assert len([x for x in lines if " is back, after " in x]) == 1, lines


def test_a_worker_starting_on_a_batch_whose_endpoint_is_down_says_so_once_and_its_jobs_wait(
    setup: Setup, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake_openai.stop()
    batch_id = create(setup)  # check_endpoints off, as batch.check_endpoints=false does
    working = Working(setup, batch_id)
    wait_until(lambda: summary(setup, batch_id).endpoints_down, 10, "status shows it down")
    [said] = health_lines(caplog)
    assert said.startswith(f"LLM endpoint {fake_openai.base_url} (agent judge) cannot be reached")
    assert f"batch {batch_id}'s jobs wait" in said
    assert fake_openai.requests == []  # no job called it
    fake_openai.restart()
    working.join()

    done = summary(setup, batch_id)
    assert done.counts == {JobStatus.COMPLETED: 24}
    assert {job.attempts for job in setup.store.iter_jobs(batch_id)} == {1}
    assert len(health_lines(caplog)) == 2 and " is back, after " in health_lines(caplog)[1]


# -- what workers publish -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_endpoints_down_are_shown_per_batch_merged_across_workers_and_forgotten_when_stale(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if kind == "postgresql" else None
    store = Store(url or f"sqlite:///{tmp_path}/b.db")
    a, b = "http://a/v1", "http://b/v1"
    try:
        published.mark_down(store, "w1", a, ["k1", "k2"], 100.0, "connection failed (1)")
        published.mark_down(store, "w2", a, ["k1"], 90.0, "HTTP 502")
        published.mark_down(store, "w1", b, ["k2"], 95.0, "HTTP 500")
        now = time.time()

        [shown] = published.endpoints_down(store, "k1", now)
        assert (shown.endpoint, shown.since, shown.workers) == (a, 90.0, 2)
        assert [e.endpoint for e in published.endpoints_down(store, "k2", now)] == [a, b]
        assert published.endpoints_down(store, "k1", now + published.STALE_AFTER + 1) == []

        published.mark_up(store, "w1", a)
        [left] = published.endpoints_down(store, "k1", now)
        assert (left.workers, left.error) == (1, "HTTP 502")
        assert [e.endpoint for e in published.endpoints_down(store, "k2", now)] == [b]
    finally:
        store.close()


def test_failure_reasons_leave_out_aiohttps_tls_note_and_a_servers_traceback() -> None:
    closed = Endpoint("http://127.0.0.1:9/v1", None, "t-model")  # port 9: nothing listens
    problem = anyio.run(check_endpoint, closed)
    assert problem is not None and problem.startswith("cannot be reached: connection failed")
    assert "ssl:" not in problem and "127.0.0.1:9" in problem

    message = "Input should be 'text' or 'json_object'\nTraceback (most recent call last):\n"
    message += '  File "/venv/llama_cpp/server/app.py", line 80, in create_chat_completion'
    refused = status_failure(500, {}, {"error": {"message": message}})
    assert refused.reason == "HTTP 500: Input should be 'text' or 'json_object'"
