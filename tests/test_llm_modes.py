"""Schema-constrained answers: the response mode each endpoint takes, found once and
remembered; answers checked by ``jsonschema`` ($ref allowed); what schema retries cost, in
the estimate before a batch and in ``status`` after it.

Against the fake OpenAI server (``tests/fake_openai.py``), which refuses a
``response_format`` type as OpenAI does (HTTP 400 naming it) or as llama-cpp-python 0.3's
server does (HTTP 500 "Input should be 'text' or 'json_object'"); a refused request is
recorded with the others.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import write_records
from fake_openai import (
    FakeOpenAI,
    Reply,
    Seen,
    answer,
    error,
    llama_cpp_refusal,
    openai_refusal,
)
from fake_openai import fake_openai as fake_openai  # the fixture
from rich.console import Console as RichConsole

from buttermilk.agents.llm import LLM
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.llm.estimate import estimate_batch, retry_tokens
from buttermilk.llm.limits import MemoryCache
from buttermilk.llm.response_format import MODES, Formats, strict_allowed
from buttermilk.llm.usage import count_tokens
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.runner.estimate_view import estimate_view
from buttermilk.runner.render import status_view
from buttermilk.store.store import Store

SENTIMENT = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["label", "confidence"],
    "additionalProperties": False,
}
GOOD = json.dumps({"label": "positive", "confidence": 0.9})
# Labels of several sentences, each label a $ref to one definition.
LABELS = {
    "$defs": {"label": {"enum": ["positive", "negative"]}},
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"label": {"$ref": "#/$defs/label"}},
                "required": ["label"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
    "additionalProperties": False,
}


def make_llm(fake: FakeOpenAI, **options: Any) -> LLM:
    defaults: dict[str, Any] = {
        "model": "small-model",
        "base_url": fake.base_url,
        "prompt": "Label: {{ record.content }}",
        "schema": SENTIMENT,
        "backoff": 0.01,
    }
    return LLM(**{**defaults, **options})


def ask_all(agents: list[LLM], records: int) -> list[dict[str, Any]]:
    """Every agent on ``records`` records at once, in one event loop (as a worker runs jobs)."""
    found: list[dict[str, Any]] = []

    async def run() -> None:
        async def one(agent: LLM, n: int) -> None:
            found.append(await agent(Record(record_id=f"r{n}", content=f"text {n}"), {}, {}))

        async with anyio.create_task_group() as tg:
            for agent in agents:
                for n in range(records):
                    tg.start_soon(one, agent, n)

    anyio.run(run)
    return found


def sent_formats(fake: FakeOpenAI) -> list[Any]:
    return [seen.body.get("response_format") for seen in fake.requests]


# -- the mode an endpoint takes --------------------------------------------------------------


def test_an_endpoint_that_takes_json_schema_is_asked_strictly_the_first_call_alone(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.always(answer(GOOD, delay=0.2))

    results = ask_all([make_llm(fake_openai)], 5)

    assert [r["response_mode"] for r in results] == ["json_schema"] * 5
    expected = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SENTIMENT, "strict": True},
    }
    assert sent_formats(fake_openai) == [expected] * 5
    first, *others = fake_openai.requests  # the others waited for its answer
    assert min(seen.at for seen in others) >= first.at + 0.2


def test_a_400_naming_response_format_falls_back_to_json_object_once_per_endpoint(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.refuse("json_schema", openai_refusal)
    fake_openai.always(answer(GOOD))
    agents = [make_llm(fake_openai), make_llm(fake_openai, prompt="Again: {{ record.content }}")]

    results = ask_all(agents, 6)

    # 12 calls at once by two agents of one endpoint: one refusal, of the first call,
    # sent again at once (its second attempt) while the others waited.
    assert len(fake_openai.refusals()) == 1
    assert [r["response_mode"] for r in results] == ["json_object"] * 12
    assert sorted(r["attempts"] for r in results) == [1] * 11 + [2]
    # llama-cpp-python's form: json_object with the schema beside it.
    refused, *asked = sent_formats(fake_openai)
    assert refused["type"] == "json_schema"
    assert asked == [{"type": "json_object", "schema": SENTIMENT}] * 12


def test_llama_cpps_500_naming_response_format_is_a_refusal_not_a_server_error_to_retry(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.refuse("json_schema", llama_cpp_refusal)
    fake_openai.always(answer(GOOD))
    agent = make_llm(fake_openai, backoff=30)  # a retried 500 would wait 15 s or more

    [result] = ask_all([agent], 1)

    assert result["response_mode"] == "json_object"
    assert [f["type"] for f in sent_formats(fake_openai)] == ["json_schema", "json_object"]


def test_an_endpoint_refusing_both_json_modes_is_asked_with_instructions_only(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.refuse("json_schema")
    fake_openai.refuse("json_object")
    fake_openai.always(answer(f"Sure: {GOOD}"))

    results = ask_all([make_llm(fake_openai)], 3)

    assert [r["response_mode"] for r in results] == ["instructions"] * 3
    assert [r["answer"] for r in results] == [json.loads(GOOD)] * 3  # still checked
    assert "JSON Schema" in fake_openai.requests[-1].text("system")  # the schema is told
    assert len(fake_openai.refusals()) == 2  # one per mode, both of the first call
    assert sent_formats(fake_openai)[2:] == [None] * 3


def test_a_refusal_of_a_real_call_falls_back_at_once_and_is_remembered(
    fake_openai: FakeOpenAI,
) -> None:
    # json_schema answered once, then a call is refused (a schema this endpoint cannot
    # compile, say): sent again at once in the next mode; later calls start there.
    fake_openai.script(answer(GOOD), openai_refusal("json_schema"))
    fake_openai.always(answer(GOOD))
    agent = make_llm(fake_openai)

    [first] = ask_all([agent], 1)
    [refused] = ask_all([agent], 1)
    [later] = ask_all([agent], 1)

    modes = [r["response_mode"] for r in (first, refused, later)]
    assert modes == ["json_schema", "json_object", "json_object"]
    assert refused["attempts"] == 2  # the refused call and the answered one
    types = [f["type"] for f in sent_formats(fake_openai)]
    assert types == ["json_schema", "json_schema", "json_object", "json_object"]


def test_each_model_of_a_base_url_is_its_own_endpoint(fake_openai: FakeOpenAI) -> None:
    fake_openai.refuse("json_schema", llama_cpp_refusal)
    fake_openai.always(answer(GOOD))

    ask_all([make_llm(fake_openai, model="a"), make_llm(fake_openai, model="b")], 2)

    refused = sorted(seen.body["model"] for seen in fake_openai.refusals())
    assert refused == ["a", "b"]


def test_the_calls_found_the_mode_with_are_on_the_bill_and_refusals_cost_nothing(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.refuse("json_schema", llama_cpp_refusal)
    fake_openai.always(answer(GOOD, usage=(30, 5)))
    agent = make_llm(fake_openai, price={"input": 1.0, "output": 2.0})

    results = ask_all([agent], 4)

    assert [r["usage"]["input_tokens"] for r in results] == [30] * 4
    assert [r["cost"] for r in results] == [pytest.approx((30 + 2 * 5) / 1e6)] * 4
    assert len(fake_openai.requests) == 5  # 4 answered (each on its record's bill), 1 refused


def test_a_first_call_that_fails_otherwise_lets_the_calls_go_and_learn_from_refusals(
    fake_openai: FakeOpenAI,
) -> None:
    # The first call is answered 503 (a transient error, retried): it teaches nothing,
    # so the calls that waited go ahead in the best mode and fall back themselves.
    fake_openai.script(error(503, "overloaded"))
    fake_openai.refuse("json_schema")
    fake_openai.always(answer(GOOD))

    results = ask_all([make_llm(fake_openai)], 3)

    assert [r["response_mode"] for r in results] == ["json_object"] * 3
    assert [r["answer"] for r in results] == [json.loads(GOOD)] * 3


def test_json_mode_without_a_schema_asks_for_json_object_and_a_plain_prompt_for_text(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.always(answer('{"a": 1}'))

    [json_only] = ask_all([make_llm(fake_openai, schema=None, json_mode=True)], 1)
    [plain] = ask_all([make_llm(fake_openai, schema=None, model="other")], 1)

    assert (json_only["response_mode"], json_only["answer"]) == ("json_object", {"a": 1})
    assert (plain["response_mode"], plain["answer"]) == ("text", '{"a": 1}')
    assert sent_formats(fake_openai) == [{"type": "json_object"}, None]


def test_a_response_format_given_in_extra_is_sent_as_it_is(fake_openai: FakeOpenAI) -> None:
    fixed = {"type": "json_object"}
    fake_openai.always(answer(GOOD))

    [result] = ask_all([make_llm(fake_openai, extra={"response_format": fixed})], 1)

    assert result["response_mode"] == "extra"
    assert sent_formats(fake_openai) == [fixed]


# -- strict mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "strict"),
    [
        ({}, True),
        ({"additionalProperties": True}, False),
        ({"required": ["label"]}, False),  # an optional property
        ({"properties": {"label": {"type": "string", "default": "x"}}}, False),
        ({"type": "array"}, False),  # the root must be an object
    ],
)
def test_strict_only_where_the_schema_keeps_openais_rules(
    change: dict[str, Any], strict: bool
) -> None:
    schema = {**SENTIMENT, **change}
    if "properties" in change:
        schema["required"] = list(change["properties"])
    assert strict_allowed(schema) is strict
    assert strict_allowed(LABELS) is True  # $defs and $ref are allowed
    spec = Formats.of(schema, True, {}).body("json_schema")
    assert spec is not None and spec["json_schema"]["strict"] is strict


def test_a_schemas_title_names_it_as_openai_allows() -> None:
    formats = Formats.of({**SENTIMENT, "title": "Review verdict!"}, True, {})
    assert formats.name == "Review_verdict"


# -- answers checked with jsonschema ------------------------------------------------------


def test_answers_are_checked_against_a_schema_with_refs_naming_the_bad_value(
    fake_openai: FakeOpenAI,
) -> None:
    bad = {"items": [{"label": "positive"}, {"label": "meh"}]}
    good = {"items": [{"label": "positive"}, {"label": "negative"}]}
    fake_openai.script(answer(json.dumps(bad)), answer(json.dumps(good)))

    [result] = ask_all([make_llm(fake_openai, schema=LABELS)], 1)

    assert result["answer"] == good
    assert result["usage"]["schema_retry_calls"] == 1
    told = fake_openai.requests[1].text("user")
    assert "$.items[1].label: 'meh' is not one of ['positive', 'negative']" in told


# -- the response cache ---------------------------------------------------------------------


def test_the_cache_key_carries_the_mode_and_a_new_process_finds_answers_of_any_mode(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.refuse("json_schema")
    fake_openai.always(answer(GOOD))
    cache = MemoryCache()
    agent = make_llm(fake_openai, cache=True, response_cache=cache)
    sent = agent.render_messages(Record(record_id="r0", content="text 0"), {}, {})
    assert len({agent.cache_key(sent, m) for m in ("json_schema", "json_object")}) == 2

    [asked] = ask_all([agent], 1)
    MODES.forget()  # as a new process knows nothing of the endpoint
    [again] = ask_all([agent], 1)

    assert (asked["cached"], again["cached"]) == (False, True)
    assert again["response_mode"] == "json_object" and again["answer"] == asked["answer"]
    assert len(fake_openai.requests) == 2 and len(fake_openai.refusals()) == 1


# -- what schema retries cost ------------------------------------------------------------------


def flow_of(data: Path, base_url: str, **judge: Any) -> FlowConfig:
    agent = {
        "name": "judge",
        "_target_": "buttermilk.agents.llm.LLM",
        "model": "small-model",
        "base_url": base_url,
        "prompt": "Review {{ record.record_id }}: {{ record.content }}",
        "schema": SENTIMENT,
        "max_tokens": 40,
        "price": {"input": 1.0, "output": 2.0},
        "backoff": 0.01,
        **judge,
    }
    return FlowConfig.model_validate(
        {
            "name": "modes",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [agent],
        }
    )


def wrong_first(seen: Seen) -> Reply:
    """An unusable answer to each record's first call (50 + 10 tokens); asked again (a
    longer prompt: 80 + 12 tokens), a good one for a record that loves it, else unusable
    again."""
    if "cannot be used" not in seen.text("user"):
        return answer("positive, I think", usage=(50, 10))
    loves_it = "love it" in seen.messages[-3]["content"]  # the record's prompt
    return answer(GOOD if loves_it else "still no", usage=(80, 12))


def test_the_estimate_shows_a_range_up_to_every_schema_retry_and_covers_real_retries(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    write_records(tmp_path / "records.jsonl", 5)
    flow = flow_of(tmp_path, fake_openai.base_url, schema_retries=2)

    found = estimate_batch(StaticFlowCatalog({"modes": flow}), BatchRequest(flow="modes"))

    [row] = found.agents()
    assert (row["calls"], row["max_calls"], row["max_output_tokens"]) == (5, 15, 15 * 40)
    assert row["max_input_tokens"] > 3 * row["input_tokens"]
    assert row["max_cost"] == pytest.approx((row["max_input_tokens"] * 1.0 + 15 * 40 * 2.0) / 1e6)
    shown = io.StringIO()
    RichConsole(file=shown, width=200).print(estimate_view(found))
    text = shown.getvalue()
    assert "5-15" in text and f"{row['input_tokens']:,}-{row['max_input_tokens']:,}" in text
    assert "up to schema_retries + 1" in text
    # A real retry's prompt stays under the bound: the first prompt plus retry_tokens.
    agent = LLM(**flow.agents[0].kwargs)
    fake_openai.always(
        lambda seen: answer("x" * 4 * 40) if len(fake_openai.requests) < 3 else answer(GOOD)
    )
    ask_all([agent], 1)
    first, *retries = fake_openai.requests
    assert retries and all(
        count_tokens(r.messages) <= count_tokens(first.messages) + retry_tokens(agent)
        for r in retries
    )


def test_the_estimate_of_an_agent_without_max_tokens_shows_no_output_bound(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    write_records(tmp_path / "records.jsonl", 5)
    flow = flow_of(tmp_path, fake_openai.base_url, max_tokens=None)

    found = estimate_batch(StaticFlowCatalog({"modes": flow}), BatchRequest(flow="modes"))

    [row] = found.agents()
    total = found.total()
    assert (row["max_output_tokens"], row["max_cost"]) == (None, None)
    assert (total["max_output_tokens"], total["max_cost"]) == (None, None)
    shown = io.StringIO()
    RichConsole(file=shown, width=200).print(estimate_view(found))
    [agent_line] = [line for line in shown.getvalue().splitlines() if "judge" in line]
    assert agent_line.split()[-3:] == ["-", "-", "0"]  # max output tokens, max cost, unrenderable


def test_a_batch_counts_what_schema_retries_cost_also_of_failed_jobs_and_status_shows_it(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.refuse("json_schema", llama_cpp_refusal)
    fake_openai.always(wrong_first)
    write_records(tmp_path / "records.jsonl", 6)  # every other record loves it
    flow = flow_of(tmp_path, fake_openai.base_url, schema_retries=2)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    service = BatchService(store, queue, StaticFlowCatalog({"modes": flow}))
    created = anyio.run(service.create, BatchRequest(flow="modes", concurrency=3))
    anyio.run(Worker(store, queue, WorkerOptions(idle_timeout=0.5)).run)

    summary = anyio.run(service.summary, created.batch.id)
    batch = summary.batch
    assert summary.counts == {JobStatus.COMPLETED: 3, JobStatus.FAILED: 3}
    # Each record's first call: 50 + 10 tokens; each retry: 80 + 12; at $1 and $2 per 1M
    # input and output tokens. 3 records fit on their one retry, 3 fail after two: 9 retries.
    assert batch.schema_retry_calls == 9
    assert (batch.input_tokens, batch.output_tokens) == (6 * 50 + 9 * 80, 6 * 10 + 9 * 12)
    assert (batch.schema_retry_input_tokens, batch.schema_retry_output_tokens) == (720, 108)
    assert batch.cost == pytest.approx(6 * 70e-6 + 9 * 104e-6)
    assert batch.schema_retry_cost == pytest.approx(9 * 104e-6)
    jobs = {j.record_id: j for j in store.iter_jobs(batch.id)}
    for rid, job in jobs.items():
        retries = 1 if job.status == JobStatus.COMPLETED else 2
        assert job.error_type in (None, "InvalidAnswerError"), rid
        usage = job.result["usage"]
        assert usage["schema_retry_calls"] == retries, rid
        assert usage["schema_retry_input_tokens"] == 80 * retries
        assert usage["schema_retry_output_tokens"] == 12 * retries
        assert usage["schema_retry_cost"] == pytest.approx(104e-6 * retries)
    done = jobs["r00001"].result["outputs"]["judge"]
    assert (done["response_mode"], done["schema_retry_cost"]) == ("json_object", 104e-6)
    assert len(fake_openai.refusals()) == 1  # the first call's, not every call's
    shown = io.StringIO()
    RichConsole(file=shown, width=200).print(status_view(summary))
    assert (
        "schema retries  9 calls asked again for an answer that fits the schema: "
        "720 of 1,020 input and 108 of 168 output tokens, cost $0.000936 of $0.00136"
    ) in shown.getvalue()
    as_json = summary.as_json()
    assert (as_json["schema_retry_calls"], as_json["schema_retry_input_tokens"]) == (9, 720)
    assert as_json["schema_retry_output_tokens"] == 108
    assert as_json["schema_retry_cost"] == pytest.approx(9 * 104e-6)


def test_an_answer_from_the_cache_cost_nothing_including_its_schema_retries(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.script(answer("positive, I think"))  # unusable: asked again
    fake_openai.always(answer(GOOD))
    price = {"input": 1.0, "output": 2.0}
    agent = make_llm(fake_openai, cache=True, response_cache=MemoryCache(), price=price)

    [asked] = ask_all([agent], 1)
    [again] = ask_all([agent], 1)

    assert asked["schema_retry_cost"] > 0 and asked["cost"] > asked["schema_retry_cost"]
    assert (again["cached"], again["cost"], again["schema_retry_cost"]) == (True, 0.0, 0.0)
