"""The shipped agents, how agents are built from config, and how a flow runs them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from buttermilk.agents.lexicon import Lexicon
from buttermilk.agents.review import ConsoleReview
from buttermilk.agents.sentiment import Vader
from buttermilk.agents.testing import FailOn, Sleep, noop
from buttermilk.errors import AgentError, PermanentError, UsageError
from buttermilk.flows.agents import JobContext, build_agent, current_job, set_current_job
from buttermilk.flows.models import AgentConfig, FlowConfig
from buttermilk.flows.runner import FlowRunner, merge_parameters
from buttermilk.records import Record

NO_PARAMS: Mapping[str, Any] = {}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rec(content: Any, record_id: str = "r1") -> Record:
    return Record(record_id=record_id, content=content)


def job_context(
    record_id: str = "r1", *, attempt: int = 1, interactive: bool = False, console: Any = None
) -> JobContext:
    return JobContext(
        batch_id="b1",
        record_id=record_id,
        attempt=attempt,
        max_attempts=3,
        interactive=interactive,
        console=console,
    )


def agent_config(name: str, target: str, **kwargs: Any) -> AgentConfig:
    return AgentConfig.model_validate({"name": name, "_target_": target, **kwargs})


# Targets for build_agent, importable by this module's name.
def tag_record(
    record: Record,
    outputs: Mapping[str, Any],
    parameters: Mapping[str, Any],
    *,
    tag: str,
    upper: bool = False,
) -> dict[str, Any]:
    text = f"{tag}:{record.record_id}"
    return {"tag": text.upper() if upper else text, "seen": sorted(outputs)}


WAITING = threading.Event()


def wait_for_the_loop(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """A sync agent that only finishes if the event loop stays free to set WAITING."""
    released = WAITING.wait(timeout=10)
    return {"released": released, "thread": threading.get_ident()}


async def where_am_i(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    return {"thread": threading.get_ident()}


class WhereAmI:
    """An agent class whose instances are async callables."""

    async def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {"thread": threading.get_ident()}


NOT_CALLABLE = 42


# -- Vader -----------------------------------------------------------------------------


def test_vader_labels_an_obviously_positive_sentence_positive() -> None:
    out = Vader()(rec("I love it! Wonderful, great quality, the best purchase ever."), {}, {})
    assert out["label"] == "positive"
    assert out["compound"] > 0.5
    assert out["pos"] > out["neg"]


def test_vader_labels_an_obviously_negative_sentence_negative() -> None:
    out = Vader()(rec("Awful. It broke in a day, terrible and useless, I hate it."), {}, {})
    assert out["label"] == "negative"
    assert out["compound"] < -0.5
    assert out["neg"] > out["pos"]


def test_vader_labels_a_flat_statement_neutral() -> None:
    out = Vader()(rec("The parcel contains a box."), {}, {})
    assert out["label"] == "neutral"
    assert set(out) == {"neg", "neu", "pos", "compound", "label"}


def test_vader_threshold_moves_the_label() -> None:
    text = "It is okay I guess, a bit good."
    compound = Vader()(rec(text), {}, {})["compound"]
    assert 0 < compound < 0.99
    assert Vader(threshold=compound + 0.001)(rec(text), {}, {})["label"] == "neutral"


def test_vader_refuses_non_text_content_permanently() -> None:
    with pytest.raises(PermanentError, match="r9"):
        Vader()(rec({"not": "text"}, "r9"), {}, {})


# -- Lexicon ---------------------------------------------------------------------------


def test_lexicon_counts_words_and_phrases_per_category() -> None:
    lex = Lexicon({"price": ["price", "too expensive"], "delivery": ["late", "courier"]})

    out = lex(rec("The price was too expensive. Price! And the courier came late, late."), {}, {})

    assert out["counts"] == {"price": 3, "delivery": 3}
    assert out["matches"]["price"] == ["price", "too expensive", "Price"]
    assert out["categories"] == ["price", "delivery"]


def test_lexicon_matches_whole_words_unless_told_otherwise() -> None:
    text = "A category of cats: one cat."
    whole = Lexicon({"cat": ["cat"]})(rec(text), {}, {})
    partial = Lexicon({"cat": ["cat"]}, whole_words=False)(rec(text), {}, {})
    assert whole["counts"] == {"cat": 1}
    assert partial["counts"] == {"cat": 3}


def test_lexicon_can_be_case_sensitive() -> None:
    text = "Apple apple APPLE"
    assert Lexicon({"a": ["apple"]})(rec(text), {}, {})["counts"] == {"a": 3}
    assert Lexicon({"a": ["apple"]}, case_sensitive=True)(rec(text), {}, {})["counts"] == {"a": 1}


def test_lexicon_matches_regular_expressions() -> None:
    lex = Lexicon({"money": [r"\$\d+(?:\.\d\d)?", r"\d+ (?:dollars|euros)"]}, regex=True)
    out = lex(rec("Paid $12.50, then 3 euros, then $7."), {}, {})
    assert out["matches"]["money"] == ["$12.50", "3 euros", "$7"]


def test_lexicon_takes_literal_terms_literally() -> None:
    out = Lexicon({"q": ["a.b"]}, whole_words=False)(rec("a.b axb"), {}, {})
    assert out["counts"] == {"q": 1}


def test_lexicon_reports_categories_without_matches_as_zero() -> None:
    out = Lexicon({"x": ["zebra"], "y": ["yak"]})(rec("a yak"), {}, {})
    assert out["counts"] == {"x": 0, "y": 1}
    assert out["matches"] == {"x": [], "y": ["yak"]}
    assert out["categories"] == ["y"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": {}}, "at least one category"),
        ({"categories": {"x": []}}, "'x' has no terms"),
        ({"categories": {"x": ["(unclosed"]}, "regex": True}, "bad regular expression"),
    ],
)
def test_lexicon_refuses_unusable_configs(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Lexicon(**kwargs)


def test_lexicon_refuses_non_text_content_permanently() -> None:
    with pytest.raises(PermanentError):
        Lexicon({"x": ["y"]})(rec(None), {}, {})


# -- ConsoleReview ---------------------------------------------------------------------


class ScriptedConsole:
    """A person who always gives the same answer, and remembers what they were shown."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.asked: list[tuple[str, Any, str, list[str]]] = []

    async def ask(
        self, record: Record, outputs: Mapping[str, Any], question: str, choices: list[str]
    ) -> str:
        self.asked.append((record.record_id, dict(outputs), question, choices))
        return self.answer


@pytest.mark.anyio
async def test_console_review_is_skipped_outside_interactive_batches() -> None:
    set_current_job(job_context(interactive=False))
    review = ConsoleReview("Right?", ["yes", "no"])

    out = await review(rec("text"), {"vader": {"label": "positive"}}, NO_PARAMS)

    assert out["skipped"] is True
    assert "not interactive" in out["reason"]


@pytest.mark.anyio
async def test_console_review_is_skipped_when_no_console_is_attached() -> None:
    set_current_job(job_context(interactive=True, console=None))
    out = await ConsoleReview("Right?", ["yes", "no"])(rec("text"), {}, NO_PARAMS)
    assert out["skipped"] is True


@pytest.mark.anyio
async def test_console_review_asks_the_person_and_stores_the_answer() -> None:
    console = ScriptedConsole("no")
    set_current_job(job_context("r7", interactive=True, console=console))
    review = ConsoleReview("Is the label right?", ["yes", "no", 3])  # type: ignore[list-item]

    out = await review(rec("text", "r7"), {"vader": {"label": "positive"}}, NO_PARAMS)

    assert out == {"skipped": False, "question": "Is the label right?", "answer": "no"}
    assert console.asked == [
        ("r7", {"vader": {"label": "positive"}}, "Is the label right?", ["yes", "no", "3"])
    ]


def test_console_review_needs_two_choices() -> None:
    with pytest.raises(UsageError, match="two choices"):
        ConsoleReview("Q?", ["only"])


# -- testing agents --------------------------------------------------------------------


@pytest.mark.anyio
async def test_fail_on_fails_only_the_chosen_records() -> None:
    agent = FailOn(records=["bad"])
    set_current_job(job_context("good"))
    assert await agent(rec("x", "good"), {}, NO_PARAMS) == {"failed": False}

    set_current_job(job_context("bad"))
    with pytest.raises(AgentError, match="record bad, attempt 1") as caught:
        await agent(rec("x", "bad"), {}, NO_PARAMS)
    assert not isinstance(caught.value, PermanentError)


@pytest.mark.anyio
async def test_fail_on_with_times_fails_the_first_attempts_then_succeeds() -> None:
    agent = FailOn(records=["r1"], times=2)
    for attempt in (1, 2):
        set_current_job(job_context(attempt=attempt))
        with pytest.raises(AgentError, match=f"attempt {attempt}"):
            await agent(rec("x"), {}, NO_PARAMS)
    set_current_job(job_context(attempt=3))
    assert await agent(rec("x"), {}, NO_PARAMS) == {"failed": False}


@pytest.mark.anyio
async def test_fail_on_permanent_raises_a_permanent_error_on_every_attempt() -> None:
    agent = FailOn(records=["r1"], permanent=True, message="bad input")
    for attempt in (1, 5):
        set_current_job(job_context(attempt=attempt))
        with pytest.raises(PermanentError, match="bad input"):
            await agent(rec("x"), {}, NO_PARAMS)


@pytest.mark.anyio
async def test_fail_on_takes_more_records_from_parameters(tmp_path: Path) -> None:
    agent = FailOn()
    set_current_job(job_context("r2"))
    with pytest.raises(AgentError):
        await agent(rec("x", "r2"), {}, {"fail_on": ["r2"]})
    assert await agent(rec("x", "r3"), {}, {"fail_on": ["r2"]}) == {"failed": False}

    switch = tmp_path / "still-broken"
    params = {"fail_on": ["r2"], "fail_while": str(switch)}
    assert await agent(rec("x", "r2"), {}, params) == {"failed": False}  # no file: fixed
    switch.touch()
    with pytest.raises(AgentError):
        await agent(rec("x", "r2"), {}, params)


@pytest.mark.anyio
async def test_sleep_waits_the_configured_time_or_the_parameter() -> None:
    started = anyio.current_time()
    assert await Sleep(seconds=0.2)(rec("x"), {}, NO_PARAMS) == {"slept": 0.2}
    assert anyio.current_time() - started >= 0.19
    assert await Sleep(seconds=30)(rec("x"), {}, {"sleep": 0}) == {"slept": 0.0}


@pytest.mark.anyio
async def test_noop_answers_at_once() -> None:
    assert await noop(rec("x"), {}, NO_PARAMS) == {"ok": True}


# -- build_agent -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_build_agent_instantiates_a_class_target_once_with_its_arguments() -> None:
    agent = build_agent(
        agent_config("topics", "buttermilk.agents.lexicon.Lexicon", categories={"x": ["yak"]})
    )
    assert agent.name == "topics"
    out = await agent.call(rec("a yak and a yak"), {}, NO_PARAMS)
    assert out["counts"] == {"x": 2}


@pytest.mark.anyio
async def test_build_agent_calls_a_function_target_with_its_keyword_arguments() -> None:
    agent = build_agent(agent_config("tagger", f"{__name__}.tag_record", tag="t", upper=True))
    out = await agent.call(rec("x", "r5"), {"earlier": 1}, NO_PARAMS)
    assert out == {"tag": "T:R5", "seen": ["earlier"]}


@pytest.mark.anyio
async def test_a_sync_agent_runs_in_a_worker_thread_without_blocking_the_loop() -> None:
    WAITING.clear()
    agent = build_agent(agent_config("waiter", f"{__name__}.wait_for_the_loop"))
    result: dict[str, Any] = {}

    async def run() -> None:
        result.update(await agent.call(rec("x"), {}, NO_PARAMS))

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await anyio.sleep(0.05)  # the agent is now blocked in its thread...
            WAITING.set()  # ...and the loop is still free to release it
    assert result["released"] is True
    assert result["thread"] != threading.get_ident()


@pytest.mark.anyio
@pytest.mark.parametrize("target", ["where_am_i", "WhereAmI"])
async def test_an_async_agent_runs_on_the_event_loop_itself(target: str) -> None:
    agent = build_agent(agent_config("where", f"{__name__}.{target}"))
    out = await agent.call(rec("x"), {}, NO_PARAMS)
    assert out == {"thread": threading.get_ident()}


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        ("buttermilk.agents.nowhere.Missing", {}, "cannot import _target_"),
        ("no_such_module_at_all.fn", {}, "cannot import _target_"),
        (f"{__name__}.NOT_CALLABLE", {}, "is not callable"),
        ("buttermilk.agents.llm.LLM", {"model": 5}, "bad arguments"),
        ("pathlib.PurePosixPath", {}, "instances are not callable"),
    ],
)
def test_build_agent_names_the_agent_when_its_target_cannot_be_used(
    target: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        build_agent(agent_config("broken", target, **kwargs))
    assert "'broken'" in str(caught.value)


def two_arguments(record: Record, outputs: Mapping[str, Any]) -> None:
    """Not an agent: it cannot take the parameters."""


class TakesTwo:
    def __call__(self, record: Record, outputs: Mapping[str, Any]) -> None:
        """Not an agent either."""


@pytest.mark.parametrize(
    ("target", "kwargs", "message"),
    [
        pytest.param(
            "tag_record",
            {"tag": "x", "uper": True},
            "takes no argument 'uper': it accepts tag, upper",
            id="unknown-keyword",
        ),
        pytest.param(
            "tag_record",
            {"upper": True},
            "needs its argument 'tag' set in the agent's config",
            id="missing-keyword",
        ),
        pytest.param(
            "buttermilk.agents.testing.noop",
            {"threshold": 0.5},
            "takes no argument 'threshold': it accepts no other arguments",
            id="no-keywords-at-all",
        ),
        pytest.param(
            "buttermilk.agents.sentiment.Vader",
            {"colour": "red"},
            "takes no argument 'colour': it accepts threshold",
            id="class-unknown-keyword",
        ),
        pytest.param(
            "buttermilk.agents.lexicon.Lexicon",
            {},
            "needs its argument 'categories' set in the agent's config",
            id="class-missing-keyword",
        ),
        pytest.param(
            "two_arguments",
            {},
            "cannot be called as an agent (too many positional arguments): it must take "
            "record, outputs, parameters",
            id="function-too-few-parameters",
        ),
        pytest.param(
            "TakesTwo",
            {},
            "cannot be called as an agent (too many positional arguments): it must take "
            "record, outputs, parameters",
            id="class-too-few-parameters",
        ),
    ],
)
def test_build_agent_refuses_arguments_its_target_cannot_take_naming_the_accepted_ones(
    target: str, kwargs: dict[str, Any], message: str
) -> None:
    path = target if "." in target else f"{__name__}.{target}"

    with pytest.raises(UsageError) as caught:
        build_agent(agent_config("mine", path, **kwargs))

    assert str(caught.value) == f"agent 'mine': {path} {message}"


def test_a_flow_with_an_agent_argument_its_function_does_not_take_fails_to_build() -> None:
    with pytest.raises(UsageError, match="takes no argument 'thresold'"):
        FlowRunner(
            flow({"name": "n", "_target_": "buttermilk.agents.testing.noop", "thresold": 0.5})
        )


# -- FlowRunner ------------------------------------------------------------------------


def flow(*agents: dict[str, Any], parameters: dict[str, Any] | None = None) -> FlowConfig:
    return FlowConfig.model_validate(
        {"name": "t", "agents": list(agents), "parameters": parameters or {}}
    )


@pytest.mark.anyio
async def test_a_flow_runs_its_agents_in_order_and_later_ones_see_earlier_outputs() -> None:
    runner = FlowRunner(
        flow(
            {"name": "vader", "_target_": "buttermilk.agents.sentiment.Vader"},
            {"name": "tagger", "_target_": f"{__name__}.tag_record", "tag": "x"},
        )
    )

    result = await runner.run(rec("Great, I love it."), {})

    assert list(result["outputs"]) == ["vader", "tagger"]
    assert result["outputs"]["vader"]["label"] == "positive"
    assert result["outputs"]["tagger"]["seen"] == ["vader"]
    assert set(result["timings"]) == {"vader", "tagger"}
    assert all(t >= 0 for t in result["timings"].values())


@pytest.mark.anyio
async def test_an_agent_returning_something_not_json_fails_the_record_permanently() -> None:
    runner = FlowRunner(flow({"name": "bad", "_target_": f"{__name__}.returns_a_set"}))
    with pytest.raises(PermanentError, match=r"'bad'.*not JSON-serialisable"):
        await runner.run(rec("x"), {})


def returns_a_set(record: Record, outputs: Any, parameters: Any) -> Any:
    return {"values": {object()}}


@pytest.mark.anyio
async def test_agents_see_the_job_they_run_in() -> None:
    set_current_job(job_context("r3", attempt=2))
    runner = FlowRunner(flow({"name": "who", "_target_": f"{__name__}.who_am_i"}))
    result = await runner.run(rec("x", "r3"), {})
    assert result["outputs"]["who"] == {"record": "r3", "attempt": 2}


def who_am_i(record: Record, outputs: Any, parameters: Any) -> dict[str, Any]:
    job = current_job()  # from a worker thread: the context is copied over
    return {"record": job.record_id, "attempt": job.attempt}


def test_batch_parameters_override_the_flows_own_merging_nested_dicts() -> None:
    merged = merge_parameters(
        {"sleep": 1, "model": {"name": "a", "temperature": 0.1}, "keep": True},
        {"sleep": 0, "model": {"temperature": 0.9}, "extra": [1]},
    )
    assert merged == {
        "sleep": 0,
        "model": {"name": "a", "temperature": 0.9},
        "keep": True,
        "extra": [1],
    }
