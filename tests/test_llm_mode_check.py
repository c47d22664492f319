"""The endpoint check learns each endpoint's structured-output mode: ``create``, ``estimate``
and a starting worker probe it once, at the check, so no batch call is refused for it.

Against the fake OpenAI server refusing ``json_schema`` as llama-cpp-python 0.3's server
does (HTTP 500 naming ``response_format``); its probes (one-token calls) are kept apart
from the batch's calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import write_records
from fake_openai import FakeOpenAI, answer, llama_cpp_refusal
from fake_openai import fake_openai as fake_openai  # the fixture

from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store

RECORDS = 6
SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["positive", "negative"]}},
    "required": ["label"],
    "additionalProperties": False,
}


def flow_at(data: Path, base_url: str) -> FlowConfig:
    write_records(data / "records.jsonl", RECORDS)
    judge = {
        "name": "judge",
        "_target_": "buttermilk.agents.llm.LLM",
        "model": "t-model",
        "base_url": base_url,
        "prompt": "Review: {{ record.content }}",
        "schema": SCHEMA,
        "backoff": 0.01,
    }
    return FlowConfig.model_validate(
        {
            "name": "m",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [judge],
        }
    )


@pytest.fixture
def service(tmp_path: Path, fake_openai: FakeOpenAI) -> Iterator[BatchService]:
    fake_openai.refuse("json_schema", llama_cpp_refusal)
    fake_openai.always(answer(json.dumps({"label": "positive"})))
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    flows = StaticFlowCatalog({"m": flow_at(tmp_path, fake_openai.base_url)})
    yield BatchService(store, queue, flows)
    store.close()


def work(service: BatchService, batch_id: str) -> list[dict[str, Any]]:
    """Work the batch in this process (as ``batch.wait=true`` does); its judge outputs."""
    options = WorkerOptions(batch_id=batch_id, concurrency=3, idle_timeout=0.5)
    anyio.run(Worker(service.store, service.queue, options).run)
    jobs = list(service.store.iter_jobs(batch_id))
    assert {job.status for job in jobs} == {JobStatus.COMPLETED}
    return [job.result["outputs"]["judge"] for job in jobs if job.result]


def probe_kinds(fake: FakeOpenAI) -> list[tuple[str, str]]:
    return [(p.body["model"], p.body["response_format"]["type"]) for p in fake.probes]


def test_create_learns_the_mode_at_its_check_and_no_batch_call_is_refused(
    service: BatchService, fake_openai: FakeOpenAI
) -> None:
    request = BatchRequest(flow="m")
    created = anyio.run(lambda: service.create(request, check_endpoints=True))

    learnt = probe_kinds(fake_openai)
    assert learnt == [("t-model", "json_schema"), ("t-model", "json_object")]
    assert fake_openai.requests == []  # only the probes, before any job

    outputs = work(service, created.batch.id)
    assert [o["response_mode"] for o in outputs] == ["json_object"] * RECORDS
    assert probe_kinds(fake_openai) == learnt  # the worker's check found it known
    sent = [seen.body["response_format"]["type"] for seen in fake_openai.requests]
    assert sent == ["json_object"] * RECORDS  # no call refused, none sent twice
    assert [o["attempts"] for o in outputs] == [1] * RECORDS


def test_a_starting_worker_learns_the_mode_at_its_check_before_any_job_calls(
    service: BatchService, fake_openai: FakeOpenAI
) -> None:
    fake_openai.probe_usage = (9, 1)
    fake_openai.always(answer(json.dumps({"label": "positive"}), usage=(30, 5)))
    created = anyio.run(lambda: service.create(BatchRequest(flow="m")))  # no check
    assert fake_openai.probes == []

    outputs = work(service, created.batch.id)

    assert probe_kinds(fake_openai) == [("t-model", "json_schema"), ("t-model", "json_object")]
    first_call = min(seen.at for seen in fake_openai.requests)
    assert max(p.at for p in fake_openai.probes) < first_call
    assert [o["response_mode"] for o in outputs] == ["json_object"] * RECORDS
    assert [o["attempts"] for o in outputs] == [1] * RECORDS
    # The check's probe is billed to no job: each record paid for its one call only.
    assert [o["usage"]["input_tokens"] for o in outputs] == [30] * RECORDS


def test_the_check_probes_each_model_of_an_endpoint_once_and_only_what_is_unknown(
    service: BatchService, fake_openai: FakeOpenAI
) -> None:
    request = BatchRequest(flow="m", variants={"judge.model": ["a", "b"]})

    first = anyio.run(service.unreachable_endpoints, request)  # what estimate checks
    again = anyio.run(service.unreachable_endpoints, request)

    assert first == again == []
    assert sorted(probe_kinds(fake_openai)) == [
        ("a", "json_object"),
        ("a", "json_schema"),
        ("b", "json_object"),
        ("b", "json_schema"),
    ]
    assert fake_openai.requests == []
