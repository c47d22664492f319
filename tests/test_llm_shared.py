"""What LLM agents share through the batch store, on SQLite and PostgreSQL: token buckets
every worker draws from, answers every batch reuses, and the spending a run reports.

Several ``Store`` objects on one database stand for several worker processes (the
end-to-end test with real worker processes is in ``test_llm_batch.py``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_openai import FakeOpenAI, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from sqlalchemy import event, select

from buttermilk.agents.llm import LLM
from buttermilk.errors import UsageError
from buttermilk.flows.agents import JobContext, set_current_job
from buttermilk.flows.models import AgentConfig, FlowConfig
from buttermilk.flows.runner import FlowRunner, spent_by, usage_summary
from buttermilk.llm.limits import Limits, Take, TokenBucketLimiter, refill_and_take
from buttermilk.llm.schema import InvalidAnswerError
from buttermilk.llm.shared import StoreRateLimiter, StoreResponseCache, batcher_of
from buttermilk.records import Record
from buttermilk.store.schema import llm_budget, llm_cache
from buttermilk.store.store import Store

GOOD = '{"label": "positive"}'


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path}/batches.db"


@pytest.fixture
def stores(store_url: str) -> Iterator[list[Store]]:
    """Two stores on one database, as two worker processes would open it."""
    opened = [Store(store_url), Store(store_url)]
    yield opened
    for store in opened:
        store.close()


# -- token buckets -------------------------------------------------------------------------


def test_a_bucket_refills_at_its_rate_up_to_its_capacity_and_goes_into_debt() -> None:
    take = Take("requests", rate=2.0, capacity=4.0, amount=1.0)

    assert refill_and_take(4.0, 0.0, 0.0, take) == (3.0, 0.0)
    assert refill_and_take(0.0, 0.0, 0.0, take) == (-1.0, 0.5)  # its turn in half a second
    assert refill_and_take(-1.0, 0.0, 1.0, take) == (0.0, 0.0)  # a second refills two
    assert refill_and_take(0.0, 0.0, 100.0, take) == (3.0, 0.0)  # never above capacity
    # A clock behind the bucket's (another machine's) neither refills nor drains it.
    assert refill_and_take(2.0, 10.0, 9.0, take) == (1.0, 0.0)


def test_limits_hold_burst_seconds_of_each_rate_and_at_least_one_request() -> None:
    limits = Limits(requests_per_minute=120, tokens_per_minute=6000, burst_seconds=2)

    assert [(t.kind, t.rate, t.capacity, t.amount) for t in limits.takes(1, 50)] == [
        ("requests", 2.0, 4.0, 1),
        ("tokens", 100.0, 200.0, 50),
    ]
    assert Limits(requests_per_minute=6, burst_seconds=1).capacity("requests") == 1.0
    assert Limits(tokens_per_minute=600).takes(1, 10)[0].kind == "tokens"  # only what is set
    assert not Limits()


def test_the_in_process_limiter_keeps_to_its_burst() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(requests_per_minute=60, clock=lambda: now[0], burst_seconds=2)

    assert [limiter.reserve("m", 0) for _ in range(4)] == [0, 0, 1.0, 2.0]


def scheduled_starts(limiter: StoreRateLimiter, count: int, threads: int) -> list[float]:
    """Reserve ``count`` requests from ``threads`` threads at once; returns when each may
    start (its wait added to the time the reservation came back), sorted."""
    starts: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Event()

    def reserve(n: int) -> None:
        go.wait(10)
        try:
            for _ in range(n):
                wait = limiter.reserve("m", 10)
                with lock:
                    starts.append(time.time() + wait)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=reserve, args=(count // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    go.set()
    for worker in workers:
        worker.join(60)
    assert errors == []
    return sorted(starts)


def test_limiters_on_two_stores_share_one_budget_and_space_calls_at_the_rate(
    stores: list[Store],
) -> None:
    limits = Limits(requests_per_minute=120, burst_seconds=1)  # 2 per second, 2 at once
    first, second = (StoreRateLimiter(store, limits, scope="http://llm/v1") for store in stores)
    count = 20

    starts = sorted(
        scheduled_starts(first, count // 2, threads=2) + scheduled_starts(second, count // 2, 2)
    )

    # Reserving takes milliseconds, so all reservations are made at about the same
    # time: two go at once (the burst), then one every half second after those.
    gaps = [b - a for a, b in itertools.pairwise(starts[1:])]
    assert starts[1] - starts[0] < 0.25
    assert all(0.35 < gap < 0.65 for gap in gaps), gaps
    assert starts[-1] - starts[1] == pytest.approx((count - 2) * 0.5, abs=0.3)
    with stores[0].transaction(write=False) as conn:
        keys = conn.execute(select(llm_budget.c.key)).scalars().all()
    assert keys == ["requests m @ http://llm/v1"]


def test_concurrent_calls_share_transactions_and_each_still_waits_its_exact_turn(
    stores: list[Store],
) -> None:
    store = stores[0]
    requests = Limits(requests_per_minute=600, burst_seconds=1)  # 10 a second, 10 at once
    tokens = Limits(tokens_per_minute=600, burst_seconds=60)  # 600 at once, 10 a second
    limiter = StoreRateLimiter(store, tokens, scope="http://llm/v1")
    commits: list[int] = []
    event.listen(store.engine, "commit", lambda conn: commits.append(1))
    calls = 40

    async def forty_calls_at_once() -> list[float]:
        waits: list[float] = []

        async def one() -> None:
            takes = requests.takes(1, 0) + tokens.takes(0, 10)
            waits.append(await batcher_of(store).take("m @ http://llm/v1", takes))
            await limiter.report("m", 10, 5)  # gives 5 tokens back, waiting for no store

        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(one)
        return waits

    started = time.monotonic()
    waits = sorted(anyio.run(forty_calls_at_once))
    took = time.monotonic() - started

    # The 11th call waits 0.1 s, the 40th 3 s: as if each had had a transaction of its own.
    assert waits[:10] == pytest.approx([0.0] * 10, abs=0.05)
    assert waits[10:] == pytest.approx([0.1 * n for n in range(1, 31)], abs=0.05)
    assert len(commits) <= 6, f"{len(commits)} transactions for {calls} calls"
    with store.transaction(write=False) as conn:
        levels = dict(conn.execute(select(llm_budget.c.key, llm_budget.c.level)).all())
    # Every correction reached the store: 600 - 40 x 10 taken + 40 x 5 given back, plus
    # what refilled meanwhile (10 a second); without them it would be 200.
    assert 399 <= levels["tokens m @ http://llm/v1"] <= 400 + took * 10 + 1


def test_a_model_at_another_endpoint_has_a_budget_of_its_own(stores: list[Store]) -> None:
    limits = Limits(requests_per_minute=60, burst_seconds=1)
    here = StoreRateLimiter(stores[0], limits, scope="http://a/v1")
    there = StoreRateLimiter(stores[1], limits, scope="http://b/v1")

    assert here.reserve("m", 1) == 0
    assert there.reserve("m", 1) == 0
    assert here.reserve("m", 1) == pytest.approx(1.0, abs=0.2)


def test_reported_tokens_give_back_what_a_call_did_not_use(stores: list[Store]) -> None:
    limits = Limits(tokens_per_minute=600, burst_seconds=60)  # 600 at once, 10 per second
    first, second = (StoreRateLimiter(store, limits) for store in stores)

    assert first.reserve("m", 600) == 0
    assert second.reserve("m", 10) == pytest.approx(1.0, abs=0.2)
    anyio.run(first.report, "m", 600, 300)  # the first call used half its estimate

    assert second.reserve("m", 250) == 0


def test_a_caller_waits_its_turn_without_holding_the_store(stores: list[Store]) -> None:
    limiter = StoreRateLimiter(stores[0], Limits(requests_per_minute=60, burst_seconds=1))
    cache = StoreResponseCache(stores[1])
    timings: dict[str, float] = {}

    async def main() -> None:
        started = time.monotonic()
        await limiter.acquire("m", 1)  # the burst: at once

        async def second_call() -> None:
            await limiter.acquire("m", 1)  # a second later
            timings["second call"] = time.monotonic() - started

        async with anyio.create_task_group() as tg:
            tg.start_soon(second_call)
            await anyio.sleep(0.1)
            await cache.put("k", {"answer": 1})  # a write while the second call waits
            timings["write"] = time.monotonic() - started

    anyio.run(main)

    assert timings["write"] < 0.7 < timings["second call"]
    assert timings["second call"] == pytest.approx(1.0, abs=0.5)


# -- the answer cache --------------------------------------------------------------------


def test_an_answer_stored_by_one_store_is_found_by_another_and_the_first_one_stays(
    stores: list[Store],
) -> None:
    first, second = (StoreResponseCache(store) for store in stores)

    async def main() -> list[Any]:
        await first.put("k1", {"answer": {"label": "positive"}, "cost": 0.5})
        await second.put("k1", {"answer": "another"})  # a race lost: no error, no change
        return [await second.get("k1"), await first.get("k2")]

    assert anyio.run(main) == [{"answer": {"label": "positive"}, "cost": 0.5}, None]


# -- the agent in a batch job ------------------------------------------------------------


def make_agent(fake: FakeOpenAI, **options: Any) -> LLM:
    return LLM(
        model="m",
        base_url=fake.base_url,
        prompt="Classify: {{ record.content }}",
        schema={"type": "object", "properties": {"label": {"enum": ["positive"]}}},
        price={"input": 1.0, "output": 2.0},
        **options,
    )


def in_job(agent: LLM, store: Store | None, content: str) -> dict[str, Any]:
    """Run the agent on one record as a worker's job would, in a fresh event loop."""
    record = Record(record_id=content, content=content)

    async def job() -> dict[str, Any]:
        set_current_job(JobContext("b1", record.record_id, 1, 3, False, store=store))
        return await agent(record, {}, {})

    return anyio.run(job)


def test_in_a_batch_job_the_agent_keeps_its_budget_and_answers_in_the_store(
    stores: list[Store], fake_openai: FakeOpenAI
) -> None:
    fake_openai.always(answer(GOOD, usage=(100, 10)))
    agent = make_agent(fake_openai, cache=True, rpm=60, rate_burst=1)
    other_worker = make_agent(fake_openai, cache=True, rpm=60, rate_burst=1)

    first = in_job(agent, stores[0], "lovely")
    again = in_job(other_worker, stores[1], "lovely")
    started = time.monotonic()
    in_job(other_worker, stores[1], "awful")  # waits for the bucket the first call drained

    assert (first["cached"], again["cached"]) == (False, True)
    assert (again["answer"], again["cost"], again["attempts"]) == (first["answer"], 0.0, 0)
    assert time.monotonic() - started > 0.5
    assert [r.text("user") for r in fake_openai.requests] == ["Classify: lovely", "Classify: awful"]
    with stores[0].transaction(write=False) as conn:
        assert len(conn.execute(select(llm_cache.c.key)).all()) == 2
        [key] = conn.execute(select(llm_budget.c.key)).scalars().all()
    assert key == f"requests m @ {fake_openai.base_url}"


def test_outside_a_batch_job_the_agent_limits_and_caches_in_its_process(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.always(answer(GOOD))
    agent = make_agent(fake_openai, cache=True, requests_per_minute=60, rate_burst=1)

    assert in_job(agent, None, "x")["cached"] is False
    assert in_job(agent, None, "x")["cached"] is True
    started = time.monotonic()
    in_job(agent, None, "y")
    assert time.monotonic() - started > 0.5
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"rpm": 0}, "LLM: rpm=0 is not allowed: input should be greater than 0"),
        ({"tpm": "lots"}, "LLM: tpm='lots' is not allowed: input should be a valid number"),
        ({"rate_burst": -1}, "LLM: rate_burst=-1 is not allowed"),
        ({"prices": {"m": {"input": 1}}}, "LLM: prices.m.output is required"),
    ],
)
def test_bad_limits_and_prices_are_refused_with_one_line(
    fake_openai: FakeOpenAI, option: dict[str, Any], expected: str
) -> None:
    with pytest.raises(UsageError) as caught:
        LLM(model="m", base_url=fake_openai.base_url, prompt="x", **option)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_a_price_table_in_the_config_prices_the_model(fake_openai: FakeOpenAI) -> None:
    fake_openai.always(answer("ok", usage=(1_000_000, 0)))
    agent = LLM(
        model="m",
        base_url=fake_openai.base_url,
        prompt="x",
        prices={"m": {"input": 0.5, "output": 1}, "other": {"input": 9, "output": 9}},
    )

    assert in_job(agent, None, "x")["cost"] == pytest.approx(0.5)


# -- what a run reports it spent -----------------------------------------------------------


def test_a_run_sums_the_cost_and_tokens_its_agents_report() -> None:
    outputs = {
        "a": {"cost": 0.25, "usage": {"input_tokens": 100, "output_tokens": 10}},
        "b": {"cost": 0.0, "cached": True, "usage": {"input_tokens": 50, "output_tokens": 5}},
        "c": {"cost": None, "usage": {"input_tokens": 7, "output_tokens": 3}},  # no price
        "d": {"label": "positive", "cost": True},  # not a cost
        "e": ["not", "a", "dict"],
    }

    assert usage_summary(outputs) == {"cost": 0.25, "input_tokens": 107, "output_tokens": 13}
    assert usage_summary({"c": outputs["c"]}) == {
        "cost": None,
        "input_tokens": 7,
        "output_tokens": 3,
    }
    assert usage_summary({"d": outputs["d"], "e": outputs["e"]}) is None


def test_a_failed_run_still_says_what_its_calls_spent(fake_openai: FakeOpenAI) -> None:
    # The judge answers; the critic never gives an answer that fits its schema.
    fake_openai.script(answer(GOOD, usage=(100, 10)))
    fake_openai.always(answer("not json", usage=(200, 20)))
    llm = {"_target_": "buttermilk.agents.llm.LLM", "model": "m", "base_url": fake_openai.base_url}
    judge = {"name": "judge", "prompt": "{{ record.content }}", "price": {"input": 1, "output": 1}}
    critic = {
        "name": "critic",
        "prompt": "{{ outputs.judge.raw }}",
        "schema": {"type": "object"},
        "schema_retries": 1,
        "price": {"input": 2, "output": 2},
    }
    flow = FlowConfig(
        name="f",
        agents=[AgentConfig.model_validate({**llm, **agent}) for agent in (judge, critic)],
    )
    runner = FlowRunner(flow)

    with pytest.raises(InvalidAnswerError) as caught:
        anyio.run(runner.run, Record(record_id="r1", content="lovely"), {})

    assert spent_by(caught.value) == {
        "cost": pytest.approx((110 * 1 + 2 * 220 * 2) / 1_000_000),
        "input_tokens": 100 + 2 * 200,
        "output_tokens": 10 + 2 * 20,
        "schema_retry_calls": 1,  # the critic asked once more, and what that cost
        "schema_retry_input_tokens": 200,
        "schema_retry_output_tokens": 20,
        "schema_retry_cost": pytest.approx(220 * 2 / 1_000_000),
    }
    assert spent_by(ValueError("spent nothing")) is None


def test_the_proxy_is_read_from_the_environment_once_per_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from buttermilk.llm.clients import proxy_for

    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert proxy_for("https://api.openai.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert proxy_for("https://api.openai.com/v1") == "http://proxy.example:3128"
    assert proxy_for("http://127.0.0.1:8000/v1") is None  # exempt, and no HTTP_PROXY
    assert proxy_for("https://localhost:8443/v1") is None
