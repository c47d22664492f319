"""Every call an endpoint answers is on a batch's bill: the endpoint checks of ``create``,
``estimate`` and a starting worker send no chat call (``GET /models`` only), and the
structured-output mode is found by the batch's first call to the endpoint, while its
other calls wait: one refusal per endpoint and mode, no call spending an attempt on it.

Against the fake OpenAI server refusing ``json_schema`` as llama-cpp-python 0.3's server
does (HTTP 500 naming ``response_format``).
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


def format_types(fake: FakeOpenAI) -> list[str]:
    return [seen.body["response_format"]["type"] for seen in fake.requests]


def test_create_checks_with_no_chat_call_and_the_first_batch_call_finds_the_mode(
    service: BatchService, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(answer(json.dumps({"label": "positive"}), usage=(30, 5)))
    request = BatchRequest(flow="m")
    created = anyio.run(lambda: service.create(request, check_endpoints=True))

    assert fake_openai.requests == [] and fake_openai.model_lists == 1

    outputs = work(service, created.batch.id)  # its worker checks again: GET /models
    assert fake_openai.model_lists == 2
    assert [o["response_mode"] for o in outputs] == ["json_object"] * RECORDS
    # The first call was refused once, sent again at once; the others waited for it.
    assert format_types(fake_openai) == ["json_schema"] + ["json_object"] * RECORDS
    assert len(fake_openai.refusals()) == 1
    assert sorted(o["attempts"] for o in outputs) == [1] * (RECORDS - 1) + [2]
    # Every call the endpoint answered is on the bill, and nothing else was sent.
    assert sum(o["usage"]["input_tokens"] for o in outputs) == 30 * RECORDS
    summary = anyio.run(service.summary, created.batch.id)
    assert summary.batch.input_tokens == 30 * RECORDS


def test_the_check_of_many_models_sends_no_chat_call(
    service: BatchService, fake_openai: FakeOpenAI
) -> None:
    request = BatchRequest(flow="m", variants={"judge.model": ["a", "b"]})

    first = anyio.run(service.unreachable_endpoints, request)  # what estimate checks
    fake_openai.models_status = 404  # a server without GET /models has answered too
    again = anyio.run(service.unreachable_endpoints, request)

    assert first == again == []
    assert fake_openai.requests == []
