"""The real bill: what a batch counts is what its endpoint charges.

Cached prompt tokens and reasoning tokens are recorded and priced as the provider bills
them (``../shared/cases/llm-cached-tokens-overcharged``), and every call an endpoint
answered counts, also the calls of jobs cancelled by ``max_cost``, timed out or retried
(``../shared/cases/adv-max-cost-undercounts-cancelled-calls``). Batches run in process (a
real SQLite store and local queue, a real worker) against the fake OpenAI server.
"""

from __future__ import annotations

import json
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from conftest import write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer
from fake_openai import fake_openai as fake_openai  # the fixture

from buttermilk.agents import llm as llm_agent
from buttermilk.agents.llm import LLM
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchInfo, BatchRequest, JobInfo, JobStatus
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.llm.response_format import JSON_SCHEMA, MODES
from buttermilk.llm.usage import Price, count_tokens
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.stopping import hard_stop
from buttermilk.store.store import Store

LABEL = json.dumps({"label": "negative"})
SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
# The cached-tokens case: 1000 prompt tokens of which 900 cached, 10 answer tokens, gpt-4.1.
CACHED = answer(LABEL, usage=(1000, 10), cached_tokens=900, reasoning_tokens=4)
GPT_41 = {"input": 2.0, "output": 8.0}
BILLED = (100 * 2.0 + 900 * 0.5 + 10 * 8.0) / 1e6  # what OpenAI bills per call: 0.00073
# The cancelled-calls case: 100 + 20 tokens at 1000 USD per 1M each: 0.12 USD a call.
DEAR = {"input": 1000.0, "output": 1000.0}
PER_CALL = 0.12


def ask(agent: LLM) -> dict[str, Any]:
    result: dict[str, Any] = anyio.run(agent, Record(record_id="q1", content="it broke"), {}, {})
    return result


def options(fake: FakeOpenAI, price: dict[str, float] | None) -> dict[str, Any]:
    """The LLM agent's options in these tests."""
    return {
        "model": "gpt-4.1",
        "base_url": fake.base_url,
        "prompt": "Review: {{ record.content }}",
        "schema": SCHEMA,
        "price": price,
        "backoff": 0.01,
    }


def judge(fake: FakeOpenAI, price: dict[str, float] | None) -> dict[str, Any]:
    """The same agent in a flow."""
    return {"name": "judge", "_target_": "buttermilk.agents.llm.LLM", **options(fake, price)}


def run_batch(tmp_path: Path, agent: dict[str, Any], records: int, **request: Any) -> BatchInfo:
    """Create a batch of a one-agent flow over ``records`` records, work it in this process
    until its queue stays empty, and return it as stored."""
    write_records(tmp_path / "records.jsonl", records)
    flow = FlowConfig.model_validate(
        {
            "name": "bill",
            "data": {"records": {"type": "file", "path": str(tmp_path / "records.jsonl")}},
            "agents": [agent],
        }
    )
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    service = BatchService(store, queue, StaticFlowCatalog({"bill": flow}))
    created = anyio.run(service.create, BatchRequest(flow="bill", **request))
    anyio.run(Worker(store, queue, WorkerOptions(idle_timeout=0.5)).run)
    return store.get_batch(created.batch.id)


def jobs_of(tmp_path: Path, batch_id: str) -> list[JobInfo]:
    return list(Store(f"sqlite:///{tmp_path}/batches.db").iter_jobs(batch_id))


# -- cached and reasoning tokens -------------------------------------------------------------


def test_cached_prompt_tokens_are_recorded_and_priced_at_the_cached_input_rate(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.always(CACHED)

    priced = ask(LLM(**options(fake_openai, {**GPT_41, "cached_input": 0.5})))
    unknown = ask(LLM(**options(fake_openai, GPT_41)))

    assert priced["usage"] == {
        "input_tokens": 1000,
        "output_tokens": 10,
        "total_tokens": 1010,
        "cached_input_tokens": 900,
        "reasoning_tokens": 4,
    }
    assert priced["cost"] == pytest.approx(BILLED, abs=1e-12)  # 0.00073, not 0.00208
    # Without a cached-input rate, cached tokens cost the input price (as before).
    assert unknown["usage"]["cached_input_tokens"] == 900
    assert unknown["cost"] == pytest.approx((1000 * 2.0 + 10 * 8.0) / 1e6, abs=1e-12)


def test_the_shipped_price_table_knows_openais_cached_input_prices() -> None:
    shipped = (files("buttermilk.conf") / "llm_prices.yaml").read_text()
    table = {name: Price.model_validate(p) for name, p in yaml.safe_load(shipped).items()}

    assert table["gpt-4.1"] == Price(input=2.0, output=8.0, cached_input=0.5)
    assert table["gpt-4o-mini"].cached_input == 0.075
    assert all(p.cached_input is None or p.cached_input <= p.input for p in table.values())


def test_a_batch_adds_up_cached_and_reasoning_tokens_and_costs_what_the_provider_bills(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(CACHED)

    batch = run_batch(tmp_path, judge(fake_openai, {**GPT_41, "cached_input": 0.5}), 2)

    assert batch.cost == pytest.approx(2 * BILLED, abs=1e-12)
    assert (batch.input_tokens, batch.cached_input_tokens) == (2000, 1800)
    assert (batch.output_tokens, batch.reasoning_tokens) == (20, 8)
    for job in jobs_of(tmp_path, batch.id):
        assert job.result is not None
        assert job.result["usage"]["cached_input_tokens"] == 900
        assert job.cost == pytest.approx(BILLED, abs=1e-12)


# -- every answered call counts ----------------------------------------------------------


def slow_after(fast: int, delay: float) -> Any:
    """Answers the first ``fast`` requests at once, the others after ``delay`` seconds."""
    seen: list[Seen] = []

    def step(request: Seen) -> Reply:
        seen.append(request)
        return answer(LABEL, usage=(100, 20), delay=0 if len(seen) <= fast else delay)

    return step


@pytest.mark.slow
def test_calls_of_jobs_that_max_cost_cancels_while_they_are_out_are_counted(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # Two quick answers pass the cap; the other calls out at that moment answer 2.5 s
    # later, after the worker's heartbeat (1 s) has cancelled their jobs.
    fake_openai.always(slow_after(2, 2.5))

    batch = run_batch(tmp_path, judge(fake_openai, DEAR), 12, max_cost=0.2, concurrency=4)

    calls = len(fake_openai.requests)
    jobs = jobs_of(tmp_path, batch.id)
    paid_but_cancelled = [
        j for j in jobs if j.status == JobStatus.CANCELLED and j.cost == pytest.approx(PER_CALL)
    ]
    assert batch.status == "failed" and "max_cost" in (batch.error or "")
    assert paid_but_cancelled, [(j.status, j.cost) for j in jobs]
    assert batch.cost == pytest.approx(calls * PER_CALL)  # was 2 calls' worth: 0.24
    assert sum(j.cost or 0 for j in jobs) == pytest.approx(calls * PER_CALL)
    assert batch.max_job_cost == pytest.approx(PER_CALL)


@pytest.mark.slow
def test_calls_of_timed_out_and_retried_attempts_are_counted(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(answer(LABEL, usage=(100, 20), delay=0.6))
    # The endpoint's mode is known (as after a batch's first call): the attempts call at
    # once instead of waiting behind a first call, which outlives every job's timeout.
    MODES.answered((fake_openai.base_url, "gpt-4.1"), JSON_SCHEMA)

    batch = run_batch(
        tmp_path, judge(fake_openai, DEAR), 2, job_timeout=0.2, max_attempts=2, retry_delay=0
    )

    jobs = jobs_of(tmp_path, batch.id)
    assert [(j.status, j.error_type) for j in jobs] == [(JobStatus.FAILED, "JobTimeoutError")] * 2
    assert len(fake_openai.requests) == 4  # two attempts of each job
    assert batch.cost == pytest.approx(4 * PER_CALL)
    assert (batch.input_tokens, batch.output_tokens) == (400, 80)
    assert all(j.cost == pytest.approx(PER_CALL) for j in jobs)  # the last attempt's


def test_a_call_still_unanswered_after_the_grace_counts_its_estimated_prompt(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_agent, "ANSWER_GRACE", 0.3)
    fake_openai.always(answer(LABEL, usage=(100, 20), delay=5))

    batch = run_batch(tmp_path, judge(fake_openai, DEAR), 1, job_timeout=0.2, max_attempts=1)

    [seen] = fake_openai.requests
    prompt = count_tokens(seen.messages)
    [job] = jobs_of(tmp_path, batch.id)
    assert (job.status, job.error_type) == (JobStatus.FAILED, "JobTimeoutError")
    assert (batch.input_tokens, batch.output_tokens) == (prompt, 0)
    assert batch.cost == pytest.approx(prompt * DEAR["input"] / 1e6)


def test_a_hard_stop_ends_the_wait_for_a_cancelled_calls_answer_at_once(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # A graceful stop waits up to ANSWER_GRACE (10 s) for the answer of a cancelled call;
    # a hard stop (the second Ctrl-C) does not: the call counts its estimated prompt.
    fake_openai.always(answer(LABEL, usage=(100, 20), delay=8))
    agent = LLM(**options(fake_openai, DEAR))

    async def stop_hard() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent, Record(record_id="q1", content="it broke"), {}, {})
            await anyio.to_thread.run_sync(fake_openai.wait_for_requests, 1)
            tg.cancel_scope.cancel()
            hard_stop()
            stopped = time.monotonic()
        return time.monotonic() - stopped

    took = anyio.run(stop_hard)

    assert took < llm_agent.ANSWER_GRACE / 2  # not the grace, nor the 8 s answer
    assert "got no answer" in caplog.text


def test_a_schema_retry_out_when_its_job_times_out_counts_as_a_schema_retry(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    # The first answer does not fit at once; the retry answers 2 s later, after the job's
    # timeout cancelled it: only the job's meter saw that call.
    def late_retry(seen: Seen) -> Reply:
        if len(seen.messages) < 3:
            return answer("not json", usage=(100, 20))
        return answer(LABEL, usage=(150, 30), delay=2.0)

    fake_openai.always(late_retry)

    batch = run_batch(tmp_path, judge(fake_openai, DEAR), 1, job_timeout=1.0, max_attempts=1)

    [job] = jobs_of(tmp_path, batch.id)
    assert (job.status, job.error_type) == (JobStatus.FAILED, "JobTimeoutError")
    assert len(fake_openai.requests) == 2
    assert (batch.input_tokens, batch.output_tokens) == (250, 50)
    assert batch.schema_retry_calls == 1
    assert (batch.schema_retry_input_tokens, batch.schema_retry_output_tokens) == (150, 30)
    assert batch.cost == pytest.approx(300 / 1000)
    assert batch.schema_retry_cost == pytest.approx(180 / 1000)
    assert job.result is not None and job.result["usage"]["schema_retry_cost"] == pytest.approx(
        0.18
    )
