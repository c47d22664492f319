"""The LLM agent against a real local HTTP server speaking the OpenAI chat protocol.

The server (``tests/fake_openai.py``) is scripted per test: answers, delays, 429 with
Retry-After, 5xx, 401, answers that are not valid JSON. Waits are measured between the
arrival times the server records.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from conftest import Env, wait_until, write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer, error
from fake_openai import fake_openai as fake_openai  # the fixture
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from pydantic import BaseModel, Field

from buttermilk.agents.llm import LLM
from buttermilk.batch.planner import plan_records
from buttermilk.domain.variants import combinations
from buttermilk.errors import AgentError, PermanentError, UsageError
from buttermilk.flows.agents import JobContext, build_agent, set_current_job
from buttermilk.flows.models import AgentConfig, FlowConfig
from buttermilk.flows.runner import FlowRunner
from buttermilk.flows.variants import flow_for
from buttermilk.llm.limits import MemoryCache, TokenBucketLimiter, cache_key
from buttermilk.llm.prompts import PromptError
from buttermilk.llm.retry import LLMRefusedError, LLMUnavailableError, backoff, parse_retry_after
from buttermilk.llm.schema import AnswerProblem, InvalidAnswerError, JSONSchema, extract_json
from buttermilk.llm.usage import Price, count_tokens
from buttermilk.records import Record
from buttermilk.runner.hydra_flows import register_resolvers

SECRET = "sk-test-9f8e7d6c5b4a-do-not-leak"
SENTIMENT = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
GOOD = '{"label": "positive", "confidence": 0.9}'


class Verdict(BaseModel):
    """An answer model for ``schema_model`` (imported by path: ``test_llm.Verdict``)."""

    label: Literal["positive", "negative"]
    reasons: list[str] = Field(default_factory=list)


def make_llm(fake: FakeOpenAI, **options: Any) -> LLM:
    defaults: dict[str, Any] = {
        "model": "test-model",
        "base_url": fake.base_url,
        "prompt": "Classify: {{ record.content }}",
        "backoff": 0.01,
    }
    return LLM(**{**defaults, **options})


def ask(
    agent: LLM,
    content: Any = "great product",
    *,
    record_id: str = "r1",
    metadata: dict[str, Any] | None = None,
    outputs: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the agent on one record in a fresh event loop, as a worker's job would."""
    record = Record(record_id=record_id, content=content, metadata=metadata or {})
    result: dict[str, Any] = anyio.run(agent, record, outputs or {}, parameters or {})
    return result


# -- answers -----------------------------------------------------------------------------


def test_a_plain_prompt_returns_the_text_with_model_usage_latency_and_attempts(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(answer("It is positive.", model="served-model-v2", usage=(12, 3)))

    out = ask(make_llm(fake_openai))

    assert out["answer"] == out["raw"] == "It is positive."
    assert out["model"] == "served-model-v2"
    assert out["usage"] == {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}
    assert out["attempts"] == 1
    assert out["cached"] is False
    assert out["cost"] is None
    assert 0 < out["latency"] < 5
    [seen] = fake_openai.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.body["model"] == "test-model"
    assert seen.messages == [{"role": "user", "content": "Classify: great product"}]
    assert "response_format" not in seen.body and "temperature" not in seen.body
    assert seen.headers["authorization"] == "Bearer unused"  # no api_key_env: a placeholder
    json.dumps(out)  # JSON-ready


def test_templates_see_the_record_earlier_outputs_and_parameters(fake_openai: FakeOpenAI) -> None:
    agent = make_llm(
        fake_openai,
        system="You judge {{ parameters.lang }} reviews.",
        prompt=(
            "{{ record.record_id }} | {{ record.metadata.title }} | {{ record.content }} | "
            "{{ outputs.vader.label }} | {{ outputs.vader | json }} | "
            "{% for t in parameters.tags %}#{{ t }}{% endfor %}"
        ),
    )

    ask(
        agent,
        "broke after a day",
        record_id="rev-7",
        metadata={"title": "Bad kettle"},
        outputs={"vader": {"label": "negative"}},
        parameters={"lang": "English", "tags": ["a", "b"]},
    )

    [seen] = fake_openai.requests
    assert seen.messages == [
        {"role": "system", "content": "You judge English reviews."},
        {
            "role": "user",
            "content": "rev-7 | Bad kettle | broke after a day | negative | "
            '{"label": "negative"} | #a#b',
        },
    ]


def test_sampling_options_and_extra_fields_reach_the_request_body(
    fake_openai: FakeOpenAI,
) -> None:
    agent = make_llm(
        fake_openai, temperature=0, max_tokens=50, top_p=0.9, seed=7, extra={"top_k": 5}
    )

    ask(agent)

    body = fake_openai.requests[0].body
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (0, 50, 0.9, 7)
    assert body["top_k"] == 5


def test_a_schema_answer_is_parsed_from_a_json_fence_and_validated(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(answer(f"Here you go:\n```json\n{GOOD}\n```"))

    out = ask(make_llm(fake_openai, schema=SENTIMENT))

    assert out["answer"] == {"label": "positive", "confidence": 0.9}
    assert out["raw"].startswith("Here you go:")
    assert out["response_mode"] == "json_schema"
    [seen] = fake_openai.requests
    assert seen.body["response_format"] == {  # constrained to the schema, strictly
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SENTIMENT, "strict": True},
    }
    system = seen.text("system")
    assert "JSON Schema" in system and '"confidence"' in system


def test_a_schema_model_validates_and_normalises_the_answer(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(answer('{"label": "negative"}'))

    out = ask(make_llm(fake_openai, schema_model="test_llm.Verdict", json_mode=False))

    assert out["answer"] == {"label": "negative", "reasons": []}
    assert out["response_mode"] == "instructions"
    assert "response_format" not in fake_openai.requests[0].body


def test_an_invalid_answer_is_asked_again_with_what_was_wrong_then_accepted(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(
        answer("positive!", usage=(10, 2)),
        answer('{"label": "maybe", "confidence": 0.5}', usage=(20, 8)),
        answer(GOOD, usage=(30, 8)),
    )

    out = ask(make_llm(fake_openai, schema=SENTIMENT))

    assert out["answer"] == {"label": "positive", "confidence": 0.9}
    assert out["attempts"] == 3
    assert out["usage"] == {
        "input_tokens": 60,
        "output_tokens": 18,
        "total_tokens": 78,
        "schema_retry_calls": 2,  # the calls that asked again, and what they spent
        "schema_retry_input_tokens": 50,
        "schema_retry_output_tokens": 16,
    }
    first, second, third = fake_openai.requests
    assert len(first.messages) == 2
    assert second.messages[:2] == first.messages
    assert second.messages[2] == {"role": "assistant", "content": "positive!"}
    assert "not valid JSON" in second.text("user")
    assert "$.label: 'maybe' is not one of" in third.text("user")


def test_an_answer_cut_off_at_max_tokens_is_asked_again_saying_so(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(answer('{"label": "posi', finish_reason="length"), answer(GOOD))

    out = ask(make_llm(fake_openai, schema=SENTIMENT, max_tokens=5))

    assert out["attempts"] == 2
    assert "cut off at max_tokens" in fake_openai.requests[1].text("user")


def test_answers_that_stay_invalid_fail_the_job_for_good_quoting_the_raw_answer(
    fake_openai: FakeOpenAI,
) -> None:
    rambling = "I would say it is positive overall. " + "blah " * 600
    fake_openai.always(answer(rambling))

    with pytest.raises(InvalidAnswerError) as caught:
        ask(make_llm(fake_openai, schema=SENTIMENT, schema_retries=1))

    assert isinstance(caught.value, PermanentError)
    message = str(caught.value)
    assert "I would say it is positive overall." in message
    assert "not valid JSON" in message
    assert 1000 < len(message) < 1400  # the raw answer is cut at 1000 characters
    assert len(fake_openai.requests) == 2


# -- prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("{{ recrod.content }}", "unknown name(s) ['recrod']"),
        ("{{ record.contnet }}", "record has no field 'contnet'"),
        ("{{ record.content ", "template syntax error on line 1"),
    ],
)
def test_a_typo_in_a_template_is_a_usage_error_when_the_agent_is_built(
    fake_openai: FakeOpenAI, prompt: str, expected: str
) -> None:
    config = AgentConfig.model_validate(
        {
            "name": "judge",
            "_target_": "buttermilk.agents.llm.LLM",
            "model": "m",
            "base_url": fake_openai.base_url,
            "prompt": prompt,
        }
    )

    with pytest.raises(UsageError) as caught:
        build_agent(config)

    assert expected in str(caught.value)
    assert "agent 'judge'" in str(caught.value)


def test_a_key_missing_from_one_record_fails_that_job_for_good_without_a_call(
    fake_openai: FakeOpenAI,
) -> None:
    agent = make_llm(fake_openai, prompt="{{ record.metadata.title }}: {{ record.content }}")

    with pytest.raises(PromptError) as caught:
        ask(agent, record_id="no-title")

    assert isinstance(caught.value, PermanentError)
    assert "'title'" in str(caught.value) and "record no-title" in str(caught.value)
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"prompt": None}, "exactly one of prompt and prompt_file"),
        ({"prompt_file": "/no/such/prompt.txt"}, "exactly one of prompt and prompt_file"),
        ({"temprature": 0.2}, "temprature is not a known option"),
        ({"base_url": "localhost:11434"}, "base_url must start with http"),
        ({"schema": {"type": "object"}, "schema_model": "x.Y"}, "either schema or"),
        ({"schema": {"type": "objec"}}, "schema at $.type: 'objec' is not valid"),
        ({"schema": {"$ref": "#/$defs/x"}}, "schema at $: $ref '#/$defs/x' cannot be resolved"),
        ({"schema": {"$ref": "https://example.com/s.json"}}, "cannot be resolved"),
        ({"schema_model": "test_llm.make_llm"}, "is not a pydantic model"),
        ({"price": {"input": 1}}, "price.output is required"),
    ],
)
def test_bad_options_are_refused_with_one_line(
    fake_openai: FakeOpenAI, options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(UsageError) as caught:
        make_llm(fake_openai, **options)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_prompt_file_is_read_when_the_agent_is_built(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "prompt.j2"
    path.write_text("From a file: {{ record.content }}")
    agent = make_llm(fake_openai, prompt=None, prompt_file=str(path))
    path.unlink()

    ask(agent, "nice")

    assert fake_openai.requests[0].text("user") == "From a file: nice"


# -- transient and permanent errors --------------------------------------------------------


def gap(requests: list[Seen], n: int) -> float:
    """Seconds between the arrival of request n-1 and request n."""
    return requests[n].at - requests[n - 1].at


def test_429_waits_as_long_as_retry_after_says(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(error(429, "slow down", headers={"Retry-After": "1"}), answer("ok"))

    out = ask(make_llm(fake_openai))

    assert out["attempts"] == 2
    assert 1.0 <= gap(fake_openai.requests, 1) < 2.0  # backoff alone would wait ~0.01 s


def test_retry_after_ms_wins_and_every_wait_is_capped_by_max_backoff(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(
        error(429, headers={"retry-after-ms": "300", "Retry-After": "5"}),
        error(503, headers={"Retry-After": "3600"}),
        answer("ok"),
    )

    out = ask(make_llm(fake_openai, max_backoff=0.5))

    requests = fake_openai.requests
    assert out["attempts"] == len(requests) == 3
    assert 0.3 <= gap(requests, 1) < 0.9
    assert 0.5 <= gap(requests, 2) < 1.1


def test_server_errors_are_retried_with_growing_backoff_until_one_succeeds(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(error(500), error(502), error(500), answer("fine"))

    out = ask(make_llm(fake_openai, backoff=0.1))

    requests = fake_openai.requests
    assert out["answer"] == "fine" and out["attempts"] == len(requests) == 4
    assert 0.05 <= gap(requests, 1) < 0.5  # 0.1 s, with jitter down to half
    assert 0.2 <= gap(requests, 3) < 0.8  # 0.4 s, with jitter down to half


def test_server_errors_that_persist_raise_a_retryable_error_naming_model_and_endpoint(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.always(error(500, "the GPU caught fire"))

    with pytest.raises(LLMUnavailableError) as caught:
        ask(make_llm(fake_openai, max_retries=2))

    assert isinstance(caught.value, AgentError)
    assert not isinstance(caught.value, PermanentError)
    message = str(caught.value)
    assert message.startswith(f"LLM test-model at {fake_openai.base_url}: HTTP 500")
    assert "the GPU caught fire" in message and "gave up after 3 calls" in message
    assert len(fake_openai.requests) == 3


def test_401_fails_at_once_after_one_request_and_never_shows_the_key(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("T_LLM_SECRET", SECRET)
    fake_openai.always(error(401, f"Incorrect API key provided: {SECRET}."))

    with pytest.raises(LLMRefusedError) as caught:
        ask(make_llm(fake_openai, api_key_env="T_LLM_SECRET"))

    assert isinstance(caught.value, PermanentError)
    [seen] = fake_openai.requests
    assert seen.headers["authorization"] == f"Bearer {SECRET}"  # the key was sent...
    message = str(caught.value)
    assert SECRET not in message  # ...but is in no message
    assert SECRET not in caplog.text
    assert f"LLM test-model at {fake_openai.base_url}: HTTP 401" in message
    assert "Incorrect API key provided: ***" in message
    assert "$T_LLM_SECRET, which is set" in message


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_refusals_fail_at_once_after_one_request(
    fake_openai: FakeOpenAI, status: int
) -> None:
    fake_openai.always(error(status, "no such thing"))

    with pytest.raises(LLMRefusedError, match=f"HTTP {status}: no such thing"):
        ask(make_llm(fake_openai))

    assert len(fake_openai.requests) == 1


def test_a_slow_answer_times_out_and_is_retried_then_gives_up(fake_openai: FakeOpenAI) -> None:
    fake_openai.always(Reply(content="too late", delay=5))
    started = time.monotonic()

    with pytest.raises(LLMUnavailableError, match="timed out"):
        ask(make_llm(fake_openai, timeout=0.3, max_retries=1))

    assert time.monotonic() - started < 2.5
    assert len(fake_openai.wait_for_requests(2)) == 2


def test_an_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    agent = LLM(
        model="m", base_url="http://127.0.0.1:9/v1", prompt="hi", max_retries=1, backoff=0.01
    )

    with pytest.raises(LLMUnavailableError, match="connection failed"):
        ask(agent)


# -- cost, cache, rate limits ----------------------------------------------------------


def test_cost_comes_from_the_reported_usage_and_the_configured_price(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(answer("a", usage=(1000, 500)), answer("b", usage=(1000, 500), model="v2"))

    priced = ask(make_llm(fake_openai, price={"input": 2.0, "output": 10.0}))
    by_table = ask(make_llm(fake_openai, model="alias"), "x")  # no price for alias or v2

    assert priced["cost"] == pytest.approx((1000 * 2.0 + 500 * 10.0) / 1_000_000)
    assert by_table["cost"] is None


def test_a_price_table_seam_prices_the_model_the_server_reports(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(answer("a", usage=(2_000_000, 0), model="gpt-x-2025"))
    agent = LLM(
        model="gpt-x",
        base_url=fake_openai.base_url,
        prompt="{{ record.content }}",
        prices={"gpt-x-2025": Price(input=0.5, output=1.0)},
    )

    assert ask(agent)["cost"] == pytest.approx(1.0)


def test_a_cache_hit_answers_without_a_request_and_says_so(fake_openai: FakeOpenAI) -> None:
    cache = MemoryCache()
    agent = make_llm(
        fake_openai,
        schema=SENTIMENT,
        cache=True,
        price={"input": 1.0, "output": 1.0},
        response_cache=cache,
    )
    fake_openai.always(answer(GOOD, usage=(100, 10)))

    first = ask(agent, "lovely")
    again = ask(agent, "lovely")
    other = ask(agent, "awful")

    assert first["cached"] is False and again["cached"] is True
    assert again["answer"] == first["answer"] and again["usage"] == first["usage"]
    assert (again["attempts"], again["cost"]) == (0, 0.0)
    assert first["cost"] == pytest.approx(110 / 1_000_000)
    assert other["cached"] is False
    assert [r.text("user") for r in fake_openai.requests] == ["Classify: lovely", "Classify: awful"]
    assert len(cache) == 2


def test_the_cache_key_changes_with_each_part_of_the_request() -> None:
    messages = [{"role": "user", "content": "hi"}]
    at = "http://a/v1"
    base = cache_key("m", messages, {"temperature": 0}, None, endpoint=at)

    assert base == cache_key("m", [dict(messages[0])], {"temperature": 0}, None, endpoint=at)
    keys = {
        base,
        cache_key("m2", messages, {"temperature": 0}, None, endpoint=at),
        cache_key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0}, None, endpoint=at),
        cache_key("m", messages, {"temperature": 0.5}, None, endpoint=at),
        cache_key("m", messages, {"temperature": 0}, {"type": "object"}, endpoint=at),
        cache_key("m", messages, {"temperature": 0}, None, endpoint="http://b/v1"),
    }
    assert len(keys) == 6


class RecordingLimiter:
    """A RateLimiter that only writes down how it is used."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def acquire(self, model: str, tokens: int) -> None:
        self.calls.append(("acquire", model, tokens))

    async def report(self, model: str, estimated: int, actual: int) -> None:
        self.calls.append(("report", model, estimated, actual))


def test_the_rate_limiter_is_asked_before_each_call_and_told_the_tokens_after(
    fake_openai: FakeOpenAI,
) -> None:
    limiter = RecordingLimiter()
    agent = make_llm(fake_openai, max_tokens=20, rate_limiter=limiter)
    fake_openai.script(error(500), answer("ok", usage=(40, 10)))

    ask(agent, "hello")

    estimate = count_tokens([{"role": "user", "content": "Classify: hello"}]) + 20
    assert limiter.calls == [
        ("acquire", "test-model", estimate),
        ("report", "test-model", estimate, 0),
        ("acquire", "test-model", estimate),
        ("report", "test-model", estimate, 50),
    ]


def test_the_token_bucket_lets_a_minute_through_then_paces_and_takes_back_unused_tokens() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(
        requests_per_minute=120, tokens_per_minute=600, clock=lambda: now[0]
    )

    assert limiter.reserve("m", 600) == 0  # a full minute's budget at once
    assert limiter.reserve("m", 10) == pytest.approx(1.0)  # then 10 tokens per second
    assert limiter.reserve("other", 600) == 0  # each model has its own budget
    anyio.run(limiter.report, "m", 600, 300)  # the first call used only half
    assert limiter.reserve("m", 100) == 0
    now[0] += 60
    assert limiter.reserve("m", 600) == 0  # refilled, up to one minute's worth


def test_count_tokens_is_about_four_characters_per_token_plus_framing() -> None:
    assert count_tokens([]) == 3
    assert count_tokens([{"role": "user", "content": "x" * 400}]) == 3 + 4 + 100
    two = [{"role": "system", "content": "abc"}, {"role": "user", "content": "abcde"}]
    assert count_tokens(two) == 3 + (4 + 1) + (4 + 2)


# -- clients, loops, threads -------------------------------------------------------------


def test_one_agent_serves_concurrent_records_in_several_threads_and_event_loops(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.always(Reply(content="ok", delay=0.3))
    agent = make_llm(fake_openai)
    results: list[dict[str, Any]] = []
    failures: list[BaseException] = []

    async def eight_records() -> None:
        async def one(n: int) -> None:
            results.append(await agent(Record(record_id=f"r{n}", content=n), {}, {}))

        async with anyio.create_task_group() as tg:
            for n in range(8):
                tg.start_soon(one, n)

    def in_a_thread() -> None:
        try:
            anyio.run(eight_records)
        except BaseException as exc:  # reported by the test below
            failures.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=in_a_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert failures == []
    assert len(results) == len(fake_openai.requests) == 16
    assert time.monotonic() - started < 2.0  # one call after another would take 4.8 s


def test_connections_close_with_their_event_loop_and_on_aclose(fake_openai: FakeOpenAI) -> None:
    agent = make_llm(fake_openai)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ask(agent)
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    wait_until(lambda: fake_openai.open_connections == 0, 5, "the loop's connection closed")

    async def call_then_close() -> int:
        await agent(Record(record_id="r2", content="x"), {}, {})
        before = fake_openai.open_connections
        await agent.aclose()
        return before

    assert anyio.run(call_then_close) == 1
    wait_until(lambda: fake_openai.open_connections == 0, 5, "aclose closed the connection")


# -- small parts ---------------------------------------------------------------------------


def test_retry_after_takes_milliseconds_seconds_or_an_http_date() -> None:
    now = 1_700_000_000.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 7))

    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, now) == 0.25
    assert parse_retry_after({"retry-after": "2.5"}, now) == 2.5
    assert parse_retry_after({"retry-after": date}, now) == pytest.approx(7)
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None
    assert backoff(1, base=1, cap=60, retry_after=120) == 60
    assert all(2 <= backoff(3, base=1, cap=60) <= 4 for _ in range(50))
    assert backoff(10, base=1, cap=5) <= 5


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('```\n["x"]\n```', ["x"]),
        ('Sure! {"a": {"b": null}} Hope that helps.', {"a": {"b": None}}),
    ],
)
def test_extract_json_tolerates_fences_and_words_around(text: str, value: Any) -> None:
    assert extract_json(text) == value


def test_extract_json_says_why_text_is_not_json() -> None:
    with pytest.raises(AnswerProblem, match="not valid JSON"):
        extract_json("positive")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({"label": "neutral", "confidence": 0}, None),
        ({"label": "neutral", "confidence": 1.5}, "$.confidence: 1.5 is greater than the max"),
        ({"label": "neutral", "confidence": True}, "$.confidence: True is not of type 'number'"),
        ({"label": "meh", "confidence": 0.5}, "$.label: 'meh' is not one of"),
        ({"label": "neutral"}, "$: 'confidence' is a required property"),
        ({"label": "neutral", "confidence": 0.1, "why": "x"}, "$: Additional properties"),
        ([1], "$: [1] is not of type 'object'"),
    ],
)
def test_a_json_schema_names_the_path_of_the_bad_value(value: Any, problem: str | None) -> None:
    schema = JSONSchema(SENTIMENT)
    if problem is None:
        assert schema.validate(value) == value
    else:
        with pytest.raises(AnswerProblem) as caught:
            schema.validate(value)
        assert str(caught.value).startswith(problem)


def test_a_json_schema_checks_arrays_strings_integers_and_any_of() -> None:
    schema = JSONSchema(
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "anyOf": [
                    {"type": "integer", "exclusiveMinimum": 0},
                    {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                ]
            },
        }
    )
    assert schema.validate([1, 2.0, "abc"]) == [1, 2.0, "abc"]
    for bad, where in [
        ([], "$: [] should be non-empty"),
        ([0], "$[0]"),
        (["ABC"], "$[0]"),
        ([1.5], "$[0]"),
    ]:
        with pytest.raises(AnswerProblem, match=f"^{re.escape(where)}"):
            schema.validate(bad)


# -- flows ------------------------------------------------------------------------------


@pytest.fixture
def hydra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BUTTERMILK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BUTTERMILK_DATA", raising=False)
    for name in ("BUTTERMILK_LLM_BASE_URL", "BUTTERMILK_LLM_MODELS", "BUTTERMILK_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    register_resolvers()
    with initialize_config_module("buttermilk.conf", version_base=None):
        yield


def compose_flow(name: str) -> FlowConfig:
    cfg = compose("config", overrides=[f"+flows={name}"])
    data: Any = OmegaConf.to_container(cfg.flows, resolve=True)
    return FlowConfig.model_validate({**data, "name": name})


@pytest.mark.usefixtures("hydra")
def test_the_shipped_llm_flow_defaults_to_a_local_ollama_comparing_two_models() -> None:
    flow = compose_flow("llm_sentiment")
    [agent] = flow.agents
    assert flow.variants == {"llm.model": ["llama3.2", "gemma3"]}
    assert agent.kwargs["base_url"] == "http://localhost:11434/v1"
    assert agent.kwargs["model"] == "llama3.2"
    assert agent.kwargs["api_key_env"] == "BUTTERMILK_LLM_API_KEY"


@pytest.mark.usefixtures("hydra")
def test_the_shipped_llm_flow_labels_example_reviews_through_the_configured_endpoint(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUTTERMILK_LLM_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("BUTTERMILK_LLM_MODELS", "[fake-llama, fake-gemma]")
    fake_openai.always(answer('{"label": "neutral", "confidence": 0.75}'))
    flow = compose_flow("llm_sentiment")
    assert flow.variants == {"llm.model": ["fake-llama", "fake-gemma"]}
    runner = FlowRunner(flow_for(flow, combinations(flow.variants)[1]))
    plan = plan_records(flow, shuffle=False, max_records=2, seed=1)

    async def run_all() -> list[dict[str, Any]]:
        found = []
        for record in plan.records:
            set_current_job(JobContext("b", record.record_id, 1, 3, interactive=False))
            found.append(await runner.run(record, flow.parameters))
        return found

    results = anyio.run(run_all)

    assert [r["outputs"]["llm"]["answer"] for r in results] == [
        {"label": "neutral", "confidence": 0.75}
    ] * 2
    first = fake_openai.requests[0]
    assert first.body["model"] == "fake-gemma"
    assert first.body["response_format"]["type"] == "json_schema"
    assert first.body["response_format"]["json_schema"]["strict"] is True
    assert first.text("user") == f"Review: {plan.records[0].content}"


def test_the_cli_runs_an_llm_flow_to_the_end_and_stores_no_key(
    env: Env, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    write_records(env.data / "records.jsonl", 6)  # odd records love it, even ones broke

    def label(seen: Seen) -> Reply:
        mood = "positive" if "love it" in seen.text("user") else "negative"
        return answer(json.dumps({"label": mood}), usage=(30, 5))

    fake_openai.always(label)
    env.extra.update(T_LLM_BASE_URL=fake_openai.base_url, T_LLM_API_KEY=SECRET)
    out = tmp_path / "out.jsonl"

    result = env.ok("flow=t_llm", "batch.wait=true", f"batch.output={out}", "batch.format=json")

    assert result.json()["counts"]["completed"] == 6
    rows = {row["record_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert len(rows) == 6
    for n, record_id in enumerate(sorted(rows)):
        judge = rows[record_id]["outputs"]["judge"]
        assert judge["answer"] == {"label": "positive" if n % 2 else "negative"}
        assert (judge["attempts"], judge["cached"], judge["model"]) == (1, False, "t-model")
        assert judge["cost"] == pytest.approx((30 * 1.0 + 5 * 2.0) / 1_000_000)
    requests = fake_openai.requests
    assert len(requests) == 6
    assert {r.headers["authorization"] for r in requests} == {f"Bearer {SECRET}"}
    prompts = {r.text("user") for r in requests}
    assert "Review r00001 (n=1): record r00001: love it, great value" in prompts
    stored = b"".join(p.read_bytes() for p in env.home.glob("batches.db*"))
    assert SECRET.encode() not in stored
    assert SECRET not in result.stdout + result.stderr + out.read_text()


def test_the_cli_fails_each_refused_record_after_one_call_not_max_attempts(
    env: Env, fake_openai: FakeOpenAI
) -> None:
    write_records(env.data / "records.jsonl", 3)
    fake_openai.always(error(401, "bad key"))
    env.extra.update(T_LLM_BASE_URL=fake_openai.base_url, T_LLM_API_KEY=SECRET)

    result = env.cli("flow=t_llm", "batch.wait=true", "batch.max_attempts=3", "batch.format=json")

    assert result.json()["counts"]["failed"] == 3, str(result)
    assert len(fake_openai.requests) == 3
    assert SECRET not in result.stdout + result.stderr


# -- the HTTP client (found by review) -----------------------------------------------------


def test_integer_keys_of_extra_fields_are_sent_as_text(fake_openai: FakeOpenAI) -> None:
    ask(make_llm(fake_openai, extra={"logit_bias": {50256: -100}}))

    assert fake_openai.requests[0].body["logit_bias"] == {"50256": -100}


def test_the_key_and_openais_organization_headers_are_read_for_each_request(
    fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("T_REVIEW_KEY", raising=False)
    agent = make_llm(fake_openai, api_key_env="T_REVIEW_KEY")

    async def twice() -> None:  # one event loop: one shared session for both calls
        record = Record(record_id="r1", content="x")
        await agent(record, {}, {})
        monkeypatch.setenv("T_REVIEW_KEY", "sk-later\r")  # as a CRLF .env file leaves it
        monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
        await agent(record, {}, {})

    anyio.run(twice)

    first, second = (seen.headers for seen in fake_openai.requests)
    assert first["authorization"] == "Bearer unused" and "openai-organization" not in first
    assert second["authorization"] == "Bearer sk-later"
    assert second["openai-organization"] == "org-1"


def test_one_agents_aclose_leaves_the_shared_session_to_the_others(
    fake_openai: FakeOpenAI,
) -> None:
    a, b = make_llm(fake_openai), make_llm(fake_openai)

    async def both() -> dict[str, Any]:
        await b.aclose()
        out: dict[str, Any] = await a(Record(record_id="r1", content="x"), {}, {})
        return out

    assert anyio.run(both)["attempts"] == 1 and len(fake_openai.requests) == 1


def test_a_template_with_a_random_filter_is_rendered_for_each_record() -> None:
    from buttermilk.llm.prompts import PromptTemplate

    template = PromptTemplate("{{ range(1000) | list | random }}", "system")
    assert template.fixed is None
    with pytest.raises(UsageError, match="system: cannot render the template"):
        PromptTemplate("{{ 1 // 0 }}", "system")


def test_the_output_keeps_the_messages_sent_unless_told_not_to(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(answer("yes"), answer("yes"))

    kept = ask(make_llm(fake_openai), content="the record's text")
    left_out = ask(make_llm(fake_openai, keep_messages=False), content="the record's text")

    assert kept["messages"] == fake_openai.requests[0].body["messages"]
    assert any("the record's text" in m["content"] for m in kept["messages"])
    assert "messages" not in left_out
