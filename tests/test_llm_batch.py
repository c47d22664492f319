"""LLM batches end to end, through the real CLI against the fake OpenAI server: what each
job and each batch spent, ``max_cost``, answers reused by a later batch, ``estimate``,
and one request rate kept by two worker processes together.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, wait_until, write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from test_api import api_server

from buttermilk.agents.llm import LLM
from buttermilk.batch.planner import plan_records
from buttermilk.errors import UsageError
from buttermilk.flows.models import FlowConfig
from buttermilk.llm.estimate import retry_tokens
from buttermilk.llm.usage import count_tokens
from buttermilk.runner.hydra_flows import register_resolvers
from buttermilk.runner.settings import BatchSettings

TESTS_CONF = Path(__file__).parent / "conf"
USAGE = (30, 5)  # prompt and answer tokens the fake server reports for every call
T_LLM_JOB_COST = (30 * 1.0 + 5 * 2.0) / 1_000_000  # t_llm's price: {input: 1, output: 2}
MINI_JOB_COST = (30 * 0.15 + 5 * 0.60) / 1_000_000  # gpt-4o-mini in conf/llm_prices.yaml


def label(seen: Seen) -> Reply:
    """The right label for the test records (odd ones love it, even ones broke)."""
    mood = "positive" if "love it" in seen.text("user") else "negative"
    return answer(json.dumps({"label": mood}), usage=USAGE)


@pytest.fixture
def llm_env(env: Env, fake_openai: FakeOpenAI) -> Env:
    fake_openai.always(label)
    env.extra.update(T_LLM_BASE_URL=fake_openai.base_url)
    return env


def jobs_of(env: Env, batch_id: str) -> list[Any]:
    return list(env.store().iter_jobs(batch_id))


# -- spending ------------------------------------------------------------------------------


def test_a_batch_keeps_what_each_job_spent_and_status_and_list_show_its_sum(
    llm_env: Env, fake_openai: FakeOpenAI
) -> None:
    env = llm_env
    write_records(env.data / "records.jsonl", 6)

    done = env.ok("flow=t_llm", "batch.wait=true", "batch.format=json").json()

    assert done["status"] == "completed"
    assert done["cost"] == pytest.approx(6 * T_LLM_JOB_COST)
    assert (done["input_tokens"], done["output_tokens"], done["max_cost"]) == (180, 30, None)
    batch_id = done["batch_id"]
    for job in jobs_of(env, batch_id):
        assert job.cost == pytest.approx(T_LLM_JOB_COST)
        assert (job.input_tokens, job.output_tokens) == USAGE
        assert job.result["usage"] == {"cost": job.cost, "input_tokens": 30, "output_tokens": 5}
    [listed] = env.ok("batch.command=list", "batch.format=json").json()
    assert (listed["cost"], listed["input_tokens"]) == (done["cost"], 180)
    status = env.ok("batch.command=status", f"batch.batch_id={batch_id}").stdout
    assert re.search(r"spent +180 input \+ 30 output tokens, cost \$0\.00024(?!\d)", status)
    [row] = [line for line in env.ok("batch.command=list").stdout.splitlines() if batch_id in line]
    assert "210" in row and "$0.00024" in row
    assert len(fake_openai.requests) == 6


def test_max_cost_stops_the_batch_as_failed_before_all_its_jobs_ran(
    llm_env: Env, fake_openai: FakeOpenAI
) -> None:
    env = llm_env
    write_records(env.data / "records.jsonl", 12)
    cap = 2.5 * T_LLM_JOB_COST  # passed by the third job

    result = env.cli(
        "flow=t_llm",
        "batch.wait=true",
        "batch.format=json",
        "batch.concurrency=1",
        f"batch.max_cost={cap}",
    )

    assert result.returncode == 1, str(result)  # the batch did not complete
    summary = result.json()
    assert summary["status"] == "failed"
    stopped = (
        f"stopped by max_cost: the batch has spent 0.00012 USD, more than its max_cost={cap:g}"
    )
    assert stopped in summary["error"]
    assert summary["max_cost"] == cap
    assert summary["cost"] > cap
    # Jobs that were running when the cap was passed may finish; no other job starts.
    assert 3 <= summary["counts"]["completed"] <= 4
    assert summary["counts"]["cancelled"] >= 8
    assert len(fake_openai.requests) <= 4


@pytest.mark.backends("local")  # the API reads the same store fields on every backend
def test_the_api_takes_max_cost_and_shows_what_batches_and_jobs_spent(llm_env: Env) -> None:
    env = llm_env
    write_records(env.data / "records.jsonl", 3)

    with api_server(env) as api:
        created = api.client.post("/api/batches", json={"flow_name": "t_llm", "max_cost": 5})
        assert created.status_code == 201, created.text
        assert (created.json()["max_cost"], created.json()["cost"]) == (5, None)
        batch_id = created.json()["batch_id"]
        env.ok("batch.command=run", "batch.idle_timeout=0.5")
        batch = api.client.get(f"/api/batches/{batch_id}").json()
        jobs = api.client.get(f"/api/batches/{batch_id}/jobs").json()["items"]
        refused = api.client.post("/api/batches", json={"flow_name": "t_llm", "max_cost": -1})

    assert batch["status"] == "completed"
    assert batch["cost"] == pytest.approx(3 * T_LLM_JOB_COST)
    assert (batch["input_tokens"], batch["output_tokens"]) == (90, 15)
    assert [(j["input_tokens"], j["output_tokens"]) for j in jobs] == [USAGE] * 3
    assert all(j["cost"] == pytest.approx(T_LLM_JOB_COST) for j in jobs)
    assert refused.status_code == 422 and "max_cost" in refused.text


def test_max_cost_must_be_a_positive_number_of_dollars() -> None:
    for bad, reason in [(-1, "greater than 0"), ("lots", "valid number")]:
        with pytest.raises(UsageError) as caught:
            BatchSettings(request={"max_cost": bad}).to_request("t_llm")
        assert str(caught.value).startswith(f"batch.max_cost={bad!r} is not allowed")
        assert reason in str(caught.value)


# -- answers shared by batches -----------------------------------------------------------


def test_a_second_batch_of_the_same_records_takes_its_answers_from_the_store(
    llm_env: Env, fake_openai: FakeOpenAI
) -> None:
    env = llm_env
    write_records(env.data / "records.jsonl", 5)
    env.extra.update(T_LLM_CACHE="true")
    run = ("flow=t_llm_shared", "batch.wait=true", "batch.format=json")

    first = env.ok(*run).json()
    assert len(fake_openai.requests) == 5
    second = env.ok(*run).json()

    assert len(fake_openai.requests) == 5  # not one more
    assert first["cost"] == pytest.approx(5 * MINI_JOB_COST)  # the shipped price table
    assert (second["cost"], second["input_tokens"], second["output_tokens"]) == (0.0, 0, 0)
    answers = {j.record_id: j.result["outputs"]["judge"] for j in jobs_of(env, first["batch_id"])}
    for job in jobs_of(env, second["batch_id"]):
        judge = job.result["outputs"]["judge"]
        assert (judge["cached"], judge["cost"], judge["attempts"]) == (True, 0.0, 0)
        assert judge["answer"] == answers[job.record_id]["answer"]
        assert job.cost == 0.0


@pytest.mark.backends("local")  # the same code on every backend
def test_the_same_model_at_another_endpoint_is_asked_not_answered_from_the_cache(
    llm_env: Env, fake_openai: FakeOpenAI
) -> None:
    """The cache key holds the endpoint: one model name at two servers may be two models."""
    env = llm_env
    write_records(env.data / "records.jsonl", 3)
    env.extra.update(T_LLM_CACHE="true")
    run = ("flow=t_llm_shared", "batch.wait=true", "batch.format=json")
    env.ok(*run)
    other = FakeOpenAI().start()
    try:
        other.always(answer(json.dumps({"label": "positive"}), usage=USAGE))
        env.extra.update(T_LLM_BASE_URL=other.base_url)

        second = env.ok(*run).json()

        assert len(other.requests) == 3
    finally:
        other.close()
    for job in jobs_of(env, second["batch_id"]):
        judge = job.result["outputs"]["judge"]
        assert (judge["cached"], judge["answer"]) == (False, {"label": "positive"})


# -- estimate ------------------------------------------------------------------------------


@pytest.fixture
def hydra(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BUTTERMILK_DATA", str(env.data))
    register_resolvers()
    with initialize_config_module("buttermilk.conf", version_base=None):
        yield


def compose_test_flow(name: str) -> FlowConfig:
    cfg = compose("config", overrides=[f"hydra.searchpath=[file://{TESTS_CONF}]", f"+flows={name}"])
    data: Any = OmegaConf.to_container(cfg.flows, resolve=True)
    return FlowConfig.model_validate({**data, "name": name})


@pytest.mark.backends("local")  # estimate reads the flow's data only: no queue, no store
def test_estimate_counts_calls_tokens_and_cost_without_calling_storing_or_publishing(
    llm_env: Env, fake_openai: FakeOpenAI, hydra: None
) -> None:
    env = llm_env
    write_records(env.data / "records.jsonl", 10)
    args = ("flow=t_llm_chain", "batch.command=estimate", "batch.max_records=8", "batch.seed=5")

    found = env.ok(*args, "batch.format=json").json()
    table = env.ok(*args).stdout

    # The records create would plan, rendered with the flow's parameters.
    flow = compose_test_flow("t_llm_chain")
    judge = LLM(**flow.agents[1].kwargs)
    planned = plan_records(flow, shuffle=True, max_records=8, seed=5).records
    tokens = sum(count_tokens(judge.render_messages(r, {}, {"lang": "English"})) for r in planned)
    # Up to 2 schema retries per record, each the prompt again, the bad answer and why.
    most = 3 * tokens + 2 * 8 * retry_tokens(judge)
    assert (found["records"], found["seed"], found["other_agents"]) == (8, 5, ["first"])
    by_agent = {a["agent"]: a for a in found["agents"]}
    assert by_agent["judge"] == {
        "agent": "judge",
        "model": "t-model",
        "calls": 8,
        "max_calls": 8 * 3,  # schema_retries=2
        "input_tokens": tokens,
        "max_input_tokens": most,
        "price": {"input": 1.0, "output": 2.0},
        "input_cost": pytest.approx(tokens / 1_000_000),
        "max_input_cost": pytest.approx(most / 1_000_000),
        "max_output_tokens": 8 * 3 * 20,
        "max_cost": pytest.approx((most + 2 * 8 * 3 * 20) / 1_000_000),
        "unrenderable": 0,
        "problem": None,
        "images": 0,  # the flow sends no image
        "image_tokens": 0,
        "images_uncounted": 0,
        "image_problem": None,
    }
    # The critic's prompt needs the judge's answer, unknown before the batch runs.
    critic = by_agent["critic"]
    assert (critic["calls"], critic["unrenderable"], critic["input_cost"]) == (0, 8, None)
    assert "has no attribute 'judge'" in critic["problem"]
    assert found["total"]["calls"] == 8 and found["total"]["input_tokens"] == tokens
    assert any("without earlier agents' outputs" in note for note in found["notes"])
    assert any("No price for agent(s) critic" in note for note in found["notes"])

    assert "estimate for flow t_llm_chain: 8 records" in table
    assert "8-24" in table and f"{tokens:,}-{most:,}" in table  # calls and tokens: a range
    assert f"{tokens:,}" in table and "critic: 8 prompt(s) cannot be rendered" in table
    assert fake_openai.requests == []
    assert env.ok("batch.command=list", "batch.format=json").json() == []
    assert env.queue_depth() == 0


# -- one request rate for every worker ---------------------------------------------------

RPM = 240  # 4 requests per second, shared by both workers
BURST = 1  # seconds' worth that may go at once: a bucket of 4 requests
JOBS = 48


@pytest.mark.slow  # ~25 s: 44 requests paced at 4 per second, plus two workers starting
@pytest.mark.backends("local")  # PostgreSQL's limiter has its own test in test_llm_shared
def test_two_worker_processes_together_keep_to_one_request_rate(
    llm_env: Env, fake_openai: FakeOpenAI
) -> None:
    env = llm_env
    write_records(env.data / "records.jsonl", JOBS)
    env.extra.update(T_LLM_RPM=str(RPM), T_LLM_BURST=str(BURST))

    # Each worker holds at most 8 jobs, so the other one always finds some.
    with (
        env.worker("batch.worker_concurrency=8", log_name="worker1"),
        env.worker("batch.worker_concurrency=8", log_name="worker2"),
    ):
        # Both take jobs from the start, however slowly a loaded machine starts them.
        wait_until(
            lambda: all("taking jobs" in (env.home / f"worker{n}.log").read_text() for n in (1, 2)),
            60,
            "both workers started",
        )
        batch_id = env.create("t_llm_shared", "batch.concurrency=8")
        wait_until(lambda: env.counts(batch_id)["completed"] == JOBS, 120, "every job completed")

    workers = {job.worker for job in jobs_of(env, batch_id)}
    assert len(workers) == 2, workers
    arrivals = sorted(seen.at for seen in fake_openai.requests)
    assert len(arrivals) == JOBS
    # How the rate is measured: the bucket starts full, so its first BURST * RPM / 60
    # requests go at once; every later one waits for its share to refill, so from then on
    # requests arrive 60 / RPM seconds apart whichever worker sends them. The steady rate
    # is taken over the requests after the burst: (count - 1) / (last - first arrival).
    burst = BURST * RPM // 60
    steady = arrivals[burst:]
    measured = (len(steady) - 1) / (steady[-1] - steady[0]) * 60
    print(f"steady rate over {len(steady)} requests: {measured:.1f}/min (limit {RPM}/min)")
    assert measured == pytest.approx(RPM, rel=0.10)
    # And no stretch ever went faster: at most the burst plus what refilled meanwhile.
    window = 3.0
    for n, start in enumerate(arrivals):
        inside = sum(1 for t in arrivals[n:] if t - start <= window)
        assert inside <= burst + window * RPM / 60 + 1, (start, inside)
