"""Variants x repeats where money and people are involved: ``estimate`` counts the whole
grid per combination, ``max_cost`` holds for a grid, the response cache answers each
repeat with that repeat's own answer, and an interactive batch asks once per combination.

Batches run in-process (BatchService and Worker on a real SQLite store and local queue, or
PostgreSQL) against the real fake OpenAI server; the CLI runs only where it is the point.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pexpect
import pytest
from conftest import Env, write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from rich.console import Console as RichConsole

from buttermilk.agents.llm import LLM
from buttermilk.batch.planner import plan_records
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, BatchStatus, JobStatus
from buttermilk.errors import VariantError
from buttermilk.flows.agents import JobContext, current_job, set_current_job
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.llm.estimate import estimate_batch
from buttermilk.llm.limits import cache_key
from buttermilk.llm.usage import count_tokens
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.runner.estimate_view import estimate_view
from buttermilk.store.store import Store

PRICES = {"m-small": {"input": 1.0, "output": 2.0}, "m-large": {"input": 10.0, "output": 20.0}}
USAGE = (30, 5)  # prompt and answer tokens the fake server reports
JOB_COST = (30 * 1.0 + 5 * 2.0) / 1_000_000  # one call of m-small


def llm_flow(data: Path, base_url: str = "http://127.0.0.1:9/v1", **judge: Any) -> FlowConfig:
    """A flow with one LLM agent, ``judge``, whose prompt reads the ``tone`` parameter."""
    options = {
        "model": "m-small",
        "base_url": base_url,
        "prompt": "Review ({{ parameters.tone }}): {{ record.content }}",
        "prices": PRICES,
        "max_tokens": 10,
        "backoff": 0.01,
        **judge,
    }
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [{"name": "judge", "_target_": "buttermilk.agents.llm.LLM", **options}],
            "parameters": {"tone": "plain"},
        }
    )


def service(url: str, queue_path: Path, flow: FlowConfig) -> BatchService:
    return BatchService(
        Store(url), LocalQueue(queue_path, lease_seconds=5), StaticFlowCatalog({flow.name: flow})
    )


def work(svc: BatchService, batch_id: str) -> None:
    """Run a worker in this process until the batch ends."""
    anyio.run(Worker(svc.store, svc.queue, WorkerOptions(batch_id=batch_id, idle_timeout=5)).run)


def create(svc: BatchService, **request: Any) -> str:
    created = anyio.run(svc.create, BatchRequest(flow="f", **request))
    return created.batch.id


# -- estimate -----------------------------------------------------------------------------


def test_estimate_counts_records_x_combinations_x_repeats_at_each_combinations_price(
    tmp_path: Path,
) -> None:
    write_records(tmp_path / "records.jsonl", 6)
    flow = llm_flow(tmp_path).model_copy(
        update={"variants": {"judge.model": ["m-small", "m-large"], "tone": ["plain", "harsh"]}}
    )
    request = BatchRequest(flow="f", max_records=4, seed=3, repeats=3)

    found = estimate_batch(StaticFlowCatalog({"f": flow}), request)

    planned = plan_records(flow, shuffle=True, max_records=4, seed=3).records
    assert (found.records, found.repeats, found.jobs) == (4, 3, 4 * 4 * 3)
    keys = [c.variant for c in found.combinations]
    assert keys == ["m-small+plain", "m-small+harsh", "m-large+plain", "m-large+harsh"]
    for combination in found.combinations:
        model, tone = combination.values["judge.model"], combination.values["tone"]
        judge = LLM(**{**flow.agents[0].kwargs, "model": model})
        once = sum(count_tokens(judge.render_messages(r, {}, {"tone": tone})) for r in planned)
        price = PRICES[model]
        assert combination.total() == {
            "calls": 12,  # 4 records x 3 repeats: every repeat is a call
            "max_calls": 12,  # no schema: no retry
            "input_tokens": 3 * once,
            "max_input_tokens": 3 * once,
            "input_cost": pytest.approx(3 * once * price["input"] / 1e6),
            "max_input_cost": pytest.approx(3 * once * price["input"] / 1e6),
            "max_output_tokens": 12 * 10,
            "max_cost": pytest.approx((3 * once * price["input"] + 120 * price["output"]) / 1e6),
            "unrenderable": 0,
            "images": 0,  # the flow sends no image
            "image_tokens": 0,
            "images_uncounted": 0,
        }
    total = found.as_json()["total"]
    assert total["calls"] == 48
    assert total["input_cost"] == pytest.approx(
        sum(c.total()["input_cost"] for c in found.combinations)
    )
    [judge_row] = found.agents()  # the agent over the grid: two models, two prices
    assert (judge_row["model"], judge_row["price"], judge_row["calls"]) == (
        "m-small, m-large",
        None,
        48,
    )

    shown = io.StringIO()
    RichConsole(file=shown, width=200).print(estimate_view(found))
    text = shown.getvalue()
    assert "4 records x 4 combinations x 3 repeats = 48 jobs" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["m-large+harsh", "m-large", "harsh", "12"] in [row[:4] for row in rows]
    assert ["total", "48"] in [row[:2] for row in rows]


def test_estimate_refuses_an_axis_naming_an_agent_the_flow_lacks(tmp_path: Path) -> None:
    write_records(tmp_path / "records.jsonl", 2)
    request = BatchRequest(flow="f", variants={"jduge.model": ["a", "b"]})

    with pytest.raises(VariantError) as caught:
        estimate_batch(StaticFlowCatalog({"f": llm_flow(tmp_path)}), request)

    assert "no agent 'jduge'" in str(caught.value) and "judge" in str(caught.value)


@pytest.mark.backends("local")  # estimate reads the flow's data only: no queue, no store
def test_the_cli_estimates_the_grid_its_overrides_ask_for_and_creates_nothing(
    env: Env, fake_openai: FakeOpenAI
) -> None:
    write_records(env.data / "records.jsonl", 5)
    env.extra.update(T_LLM_BASE_URL=fake_openai.base_url)

    found = env.ok(
        "flow=t_llm",
        "batch.command=estimate",
        "batch.format=json",
        "batch.max_records=3",
        "batch.variants={judge.model: [t-model, t-other]}",
        "batch.repeats=2",
    ).json()

    assert (found["jobs"], found["repeats"]) == (12, 2)
    assert found["variants"] == {"judge.model": ["t-model", "t-other"]}
    combos = {c["variant"]: c for c in found["combinations"]}
    assert list(combos) == ["t-model", "t-other"]
    assert [c["total"]["calls"] for c in combos.values()] == [6, 6]
    assert combos["t-other"]["agents"][0]["model"] == "t-other"
    assert found["total"]["calls"] == 12
    assert fake_openai.requests == []
    assert env.ok("batch.command=list", "batch.format=json").json() == []


# -- max_cost over a grid -------------------------------------------------------------------


def test_max_cost_counts_the_spending_of_every_combination_and_repeat(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    write_records(tmp_path / "records.jsonl", 6)
    fake_openai.always(answer("fine", usage=USAGE))
    flow = llm_flow(tmp_path, fake_openai.base_url, price={"input": 1.0, "output": 2.0})
    svc = service(f"sqlite:///{tmp_path}/b.db", tmp_path / "q.db", flow)
    cap = 2.5 * JOB_COST  # passed by the third job, whichever combination it is
    batch_id = create(
        svc,
        variants={"judge.model": ["m-small", "m-large"]},
        repeats=2,
        max_cost=cap,
        concurrency=1,
    )

    work(svc, batch_id)

    batch = svc.store.get_batch(batch_id)
    jobs = list(svc.store.iter_jobs(batch_id))
    done = [j for j in jobs if j.status == JobStatus.COMPLETED]
    assert len(jobs) == 6 * 2 * 2
    assert batch.status == BatchStatus.FAILED and "max_cost" in (batch.error or "")
    assert 3 <= len(done) <= 4 and len(fake_openai.requests) == len(done)
    # Interleaved order: the first jobs are one record's combinations and repeats, so the
    # spending that stopped the batch came from both combinations.
    assert {j.variant for j in done} == {"m-small", "m-large"}
    assert batch.cost == pytest.approx(sum(j.cost or 0 for j in done)) and batch.cost > cap
    assert sum(j.status == JobStatus.CANCELLED for j in jobs) == len(jobs) - len(done)


# -- the response cache and repeats -----------------------------------------------------------


def test_repeat_0_keeps_the_cache_keys_stores_hold_and_other_repeats_get_their_own() -> None:
    messages = [{"role": "user", "content": "hi"}]
    key = cache_key("m", messages, {"temperature": 0}, None, endpoint="http://a/v1")
    # The key this request had before repeats existed (computed with that version).
    assert key == "ca123de4db8208c6a631261b4db7b967b2973bb4ef5314240522789ee9cf3cdd"
    assert (
        cache_key("m", messages, {"temperature": 0}, None, endpoint="http://a/v1", repeat=0) == key
    )

    judge = LLM(model="m", base_url="http://a/v1", prompt="{{ record.content }}", temperature=0)
    record = Record(record_id="r1", content="hi")
    sent = judge.render_messages(record, {}, {})
    outside = judge.cache_key(sent)

    def in_job(repeat: int) -> str:
        async def keyed() -> str:
            set_current_job(JobContext("b", "r1", 1, 3, interactive=False, repeat=repeat))
            return judge.cache_key(sent)

        return anyio.run(keyed)

    assert in_job(0) == outside
    assert len({outside, in_job(1), in_job(2)}) == 3


def numbered(count: itertools.count[int]) -> Any:
    """Answers that differ per call, as a model's may at temperature 0."""

    def reply(seen: Seen) -> Reply:
        return answer(f"answer {next(count)}", usage=USAGE)

    return reply


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_each_repeat_is_called_even_at_temperature_0_and_a_later_batch_gets_each_repeats_answer(
    tmp_path: Path, fake_openai: FakeOpenAI, backend: str, request: pytest.FixtureRequest
) -> None:
    write_records(tmp_path / "records.jsonl", 1)
    fake_openai.always(numbered(itertools.count(1)))
    url = (
        request.getfixturevalue("postgres_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path}/b.db"
    )
    flow = llm_flow(tmp_path, fake_openai.base_url, temperature=0, cache=True)
    svc = service(url, tmp_path / "q.db", flow)

    def answers(batch_id: str) -> dict[int, Mapping[str, Any]]:
        jobs = list(svc.store.iter_jobs(batch_id))
        assert all(j.status == JobStatus.COMPLETED and j.result for j in jobs), jobs
        return {j.repeat: j.result["outputs"]["judge"] for j in jobs if j.result}

    first_id = create(svc, repeats=3)
    work(svc, first_id)
    first = answers(first_id)

    assert len(fake_openai.requests) == 3  # 1 record x 3 repeats, none answered by the cache
    assert [seen.body["temperature"] for seen in fake_openai.requests] == [0, 0, 0]
    assert sorted(j["answer"] for j in first.values()) == ["answer 1", "answer 2", "answer 3"]
    assert [first[n]["cached"] for n in range(3)] == [False] * 3

    second_id = create(svc, repeats=3)
    work(svc, second_id)
    second = answers(second_id)

    assert len(fake_openai.requests) == 3  # not one more
    for repeat in range(3):
        assert second[repeat]["cached"] is True
        assert second[repeat]["answer"] == first[repeat]["answer"]  # this repeat's own
    svc.store.close()


# -- interactive batches -------------------------------------------------------------------


class AnsweringConsole:
    """A person who answers every question with its first choice, noting which job asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int, str]] = []

    async def ask(
        self, record: Record, outputs: Mapping[str, Any], question: str, choices: list[str]
    ) -> str:
        job = current_job()
        self.asked.append((record.record_id, job.variant, job.repeat, outputs["vader"]["label"]))
        return choices[0]


def review_flow(data: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [
                {"name": "vader", "_target_": "buttermilk.agents.sentiment.Vader"},
                {
                    "name": "review",
                    "_target_": "buttermilk.agents.review.ConsoleReview",
                    "question": "Is the label right?",
                    "choices": ["yes", "no"],
                },
            ],
            "variants": {"vader.threshold": [0.05, 0.9]},
        }
    )


def test_an_interactive_batch_asks_once_per_combination_and_the_console_knows_which(
    tmp_path: Path,
) -> None:
    ids = write_records(tmp_path / "records.jsonl", 2)
    svc = service(f"sqlite:///{tmp_path}/b.db", tmp_path / "q.db", review_flow(tmp_path))
    batch_id = create(svc, interactive=True)
    console = AnsweringConsole()
    worker = Worker(
        svc.store,
        svc.queue,
        WorkerOptions(batch_id=batch_id, idle_timeout=5, interactive=True),
        console=console,
    )

    anyio.run(worker.run)

    jobs = list(svc.store.iter_jobs(batch_id))
    keys = sorted((j.record_id, j.variant, j.repeat) for j in jobs)
    assert keys == [(rid, v, 0) for rid in ids for v in ("0.05", "0.9")]
    assert sorted(a[:3] for a in console.asked) == keys  # each job asked once, knowing its own
    for job in jobs:
        assert job.status == JobStatus.COMPLETED and job.result
        assert job.result["outputs"]["review"]["answer"] == "yes"
    # The person saw each combination's own label: the 0.9 threshold calls these neutral.
    labels = {(rid, v): label for rid, v, _, label in console.asked}
    assert {labels[(rid, "0.9")] for rid in ids} == {"neutral"}


@pytest.mark.backends("local")  # the terminal, not the store, is the point
def test_the_terminal_tells_the_person_which_combination_is_asking(
    env: Env, tmp_path: Path
) -> None:
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create(
        "t_review", "batch.interactive=true", "batch.variants={vader.threshold: [0.05, 0.9]}"
    )
    args = env.args("batch.command=run", "batch.interactive=true", "batch.idle_timeout=1")
    child = pexpect.spawn(
        args[0], args[1:], env=env.environ, encoding="utf-8", timeout=30, dimensions=(50, 200)
    )
    seen = []
    try:
        for _ in range(2):
            child.expect(r"record r00000 \(combination (0\.05|0\.9)\)")
            seen.append(child.match.group(1))
            child.expect(r"answer \[1-3\]: ")
            child.sendline("1")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close()

    assert child.exitstatus == 0
    assert sorted(seen) == ["0.05", "0.9"]
    assert env.batch_status(batch_id) == "completed"
    for variant in seen:
        job = env.store().get_job(batch_id, "r00000", variant=variant)
        assert job.result is not None and job.result["outputs"]["review"]["answer"] == "yes"
