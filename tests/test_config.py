"""Every shipped config composes, validates and builds; bad values give one-line errors.

Configs are composed with Hydra's compose API from the installed package
(``buttermilk.conf``), the way the CLI finds them, so a broken YAML fails here.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import pytest
from fake_openai import FakeOpenAI, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_object
from omegaconf import OmegaConf
from pydantic import ValidationError

from buttermilk.batch.grid import plan_batch
from buttermilk.batch.planner import plan_records
from buttermilk.domain import BatchRequest
from buttermilk.errors import UsageError
from buttermilk.flows.agents import JobContext, set_current_job
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner
from buttermilk.flows.sources import check_sources
from buttermilk.queue import open_queue
from buttermilk.runner.hydra_flows import register_resolvers
from buttermilk.runner.settings import (
    AppSettings,
    describe_validation_error,
    settings_from_config,
)
from buttermilk.store import open_store

TESTS_CONF = Path(__file__).parent / "conf"
CONF = files("buttermilk.conf")


def options(group: str) -> list[str]:
    """Every option of a config group, as shipped in the package."""
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in CONF.joinpath(group).iterdir()
        if entry.name.endswith(".yaml")
    )


def flows_for_tests() -> list[str]:
    """The flows of ``tests/conf`` that the end-to-end tests use."""
    return sorted(p.stem for p in (TESTS_CONF / "flows").glob("*.yaml"))


SWAPPABLE_GROUPS = ("queue", "store")


@pytest.fixture
def hydra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hydra initialised on the package configs, with a private state folder."""
    monkeypatch.setenv("BUTTERMILK_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BUTTERMILK_DATA", raising=False)
    monkeypatch.delenv("BUTTERMILK_API_TOKEN", raising=False)
    register_resolvers()
    with initialize_config_module("buttermilk.conf", version_base=None):
        yield


def targets(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, target) for every ``_target_`` anywhere in a config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                yield path or "<root>", value
            else:
                yield from targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from targets(value, f"{path}[{index}]")


def flow_from(cfg: Any, name: str) -> FlowConfig:
    data: Any = OmegaConf.to_container(cfg.flows, resolve=True)
    data["name"] = name
    return FlowConfig.model_validate(data)


# -- the package's configs -------------------------------------------------------------


def test_the_package_ships_the_expected_groups_and_defaults() -> None:
    assert "local" in options("queue")
    assert "sqlite" in options("store")
    assert options("run") == ["api", "batch"]
    assert options("flows"), "no flow is shipped"


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize("group", [*SWAPPABLE_GROUPS, "flows", "run"])
def test_hydra_finds_exactly_the_options_shipped_in_the_package(group: str) -> None:
    loader = GlobalHydra.instance().config_loader()
    assert sorted(loader.get_group_options(group)) == options(group)


@pytest.mark.usefixtures("hydra")
def test_the_default_config_composes_into_settings_with_the_documented_defaults(
    tmp_path: Path,
) -> None:
    settings = settings_from_config(compose("config"))

    assert isinstance(settings, AppSettings)
    assert settings.ui == "batch"
    assert settings.state_dir == tmp_path / "home"
    assert settings.batch.command is None
    assert settings.batch.wait is False
    assert settings.batch.idle_timeout == 10
    assert settings.api.host == "127.0.0.1"
    request = settings.batch.to_request("sentiment")
    assert request == BatchRequest(flow="sentiment")
    assert (
        request.shuffle,
        request.max_records,
        request.concurrency,
        request.error_policy,
        request.interactive,
        request.parameters,
        request.max_attempts,
    ) == (True, None, 5, "continue", False, {}, 3)


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in SWAPPABLE_GROUPS for o in options(g)]
)
def test_every_queue_and_store_option_composes_and_opens(
    tmp_path: Path, group: str, option: str, request: pytest.FixtureRequest
) -> None:
    overrides = [f"{group}={option}"]
    if option == "pubsub":
        overrides.append("queue.project=config-test")  # required: ??? in the yaml
    if option == "postgres":
        overrides.append(f"store.url={request.getfixturevalue('postgres_url')}")
    cfg = compose("config", overrides=overrides)
    container: Any = OmegaConf.to_container(cfg, resolve=True)
    for where, target in targets(container):
        assert callable(get_object(target)), f"{where}: {target}"

    settings = settings_from_config(cfg)

    if group == "queue":
        assert settings.queue.type == option
        queue = open_queue(settings.queue)
        assert queue.name == option
        if option == "local":
            assert Path(queue.path).is_relative_to(tmp_path)  # type: ignore[attr-defined]
        anyio.run(queue.aclose)
    else:
        store = open_store(settings.store)
        assert store.url.startswith(option)
        if option == "sqlite":
            assert str(tmp_path) in store.url
        assert store.list_batches() == []
        store.close()


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize("ui", ["batch", "api"])
def test_both_entry_modes_compose(ui: str) -> None:
    settings = settings_from_config(compose("config", overrides=[f"ui={ui}"]))
    assert settings.ui == ui


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize("name", options("flows"))
def test_every_shipped_flow_composes_builds_every_agent_and_runs_one_record(
    name: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flows that call an LLM talk to the fake OpenAI server, with an answer fit for them.
    monkeypatch.setenv("BUTTERMILK_LLM_BASE_URL", fake_openai.base_url)
    fake_openai.always(answer('{"label": "neutral", "confidence": 0.5}'))
    cfg = compose("config", overrides=[f"+flows={name}"])
    container: Any = OmegaConf.to_container(cfg, resolve=True)
    for where, target in targets(container):
        assert get_object(target) is not None, f"{where}: {target}"

    flow = flow_from(cfg, name)
    runner = FlowRunner(flow)
    assert [a.name for a in runner.agents] == [a.name for a in flow.agents]

    # The shipped flow's data ships too, so it plans and runs offline.
    check_sources(flow)
    plan = plan_records(flow, shuffle=True, max_records=3, seed=1)
    assert len(plan.records) == 3

    def run_one() -> dict[str, Any]:
        set_current_job(JobContext("b", plan.records[0].record_id, 1, 3, interactive=False))
        return anyio.run(runner.run, plan.records[0], flow.parameters)

    result = contextvars.copy_context().run(run_one)  # the job context stays in this test
    assert list(result["outputs"]) == [a.name for a in flow.agents]


@pytest.mark.usefixtures("hydra")
def test_the_sentiment_example_plans_one_job_per_record_and_sentiment_thresholds_two() -> None:
    plain = flow_from(compose("config", overrides=["+flows=sentiment"]), "sentiment")
    name = "sentiment_thresholds"
    compared = flow_from(compose("config", overrides=[f"+flows={name}"]), name)

    jobs: dict[str, tuple[list[str], int]] = {}
    for flow in (plain, compared):
        grid, plan = plan_batch(flow, BatchRequest(flow=flow.name, max_records=50, seed=1))
        jobs[flow.name] = (grid.keys, len(plan.records) * grid.jobs_per_record)

    # batch.max_records=50 of the plain example is 50 jobs; the comparison doubles them.
    assert jobs == {"sentiment": (["default"], 50), name: (["0.05", "0.3"], 100)}
    # The comparison is the example itself under one axis: same data, agents and scoring.
    same = {"data", "agents", "parameters", "repeats", "evaluate"}
    assert compared.model_dump(include=same) == plain.model_dump(include=same)
    assert plain.evaluate is not None and plain.evaluate.label == "vader.label"


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize("name", flows_for_tests())
def test_every_test_flow_composes_from_a_search_path_and_builds_every_agent(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUTTERMILK_DATA", str(tmp_path))
    cfg = compose("config", overrides=[f"hydra.searchpath=[file://{TESTS_CONF}]", f"+flows={name}"])
    flow = flow_from(cfg, name)
    runner = FlowRunner(flow)
    assert len(runner.agents) == len(flow.agents) >= 1
    assert all(src.path.startswith(str(tmp_path)) for src in flow.data.values())


# -- bad values ------------------------------------------------------------------------


BAD_REQUESTS = [
    ("batch.concurrency=0", "batch.concurrency=0 is not allowed", "greater than or equal to 1"),
    ("batch.max_records=-1", "batch.max_records=-1 is not allowed", "greater than or equal to 1"),
    ("batch.error_policy=maybe", "batch.error_policy='maybe' is not allowed", "'continue'"),
    ("batch.max_attempts=0", "batch.max_attempts=0 is not allowed", "greater than or equal"),
    (
        "batch.parameters={x: {_target_: os.system}}",
        "batch.parameters=",
        "_target_ is not allowed in parameters (found at parameters.x._target_)",
    ),
    (
        "batch.parameters={a: [1, {b: {_target_: os.system}}]}",
        "batch.parameters=",
        "found at parameters.a[1].b._target_",
    ),
]


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize(("override", "names", "allowed"), BAD_REQUESTS)
def test_a_bad_batch_option_gives_one_line_naming_the_key_value_and_what_is_allowed(
    override: str, names: str, allowed: str
) -> None:
    settings = settings_from_config(compose("config", overrides=[override]))

    with pytest.raises(UsageError) as caught:
        settings.batch.to_request("sentiment")

    message = str(caught.value)
    assert message.startswith(names), message
    assert allowed in message, message
    assert "\n" not in message
    assert "more problem" not in message


BAD_SETTINGS = [
    ("batch.limit=0", "batch.limit=0 is not allowed"),
    ("batch.format=xml", "batch.format='xml' is not allowed"),
    ("batch.command=explode", "batch.command='explode' is not allowed"),
    ("queue.lease_seconds=0", "queue.lease_seconds=0 is not allowed"),
    ("ui=cli", "ui='cli' is not allowed"),
    ("+batch.bogus=1", "batch.bogus is not a known option"),
    (
        "batch=null",
        "batch=None is not allowed: batch is a section of options, set each on its own "
        "(e.g. batch.concurrency=...)",
    ),
    (
        "~batch",
        "batch cannot be removed: batch is a section of options, set each on its own "
        "(e.g. batch.concurrency=...)",
    ),
    (
        "api=5",
        "api=5 is not allowed: api is a section of options, set each on its own "
        "(e.g. api.port=...)",
    ),
    (
        "log_level=LOUD",
        "log_level='LOUD' is not allowed: input should be 'DEBUG', 'INFO', 'WARNING', 'ERROR' "
        "or 'CRITICAL'",
    ),
]


@pytest.mark.usefixtures("hydra")
@pytest.mark.parametrize(("override", "expected"), BAD_SETTINGS)
def test_a_bad_setting_fails_in_settings_from_config_with_one_line(
    override: str, expected: str
) -> None:
    cfg = compose("config", overrides=[override])

    with pytest.raises(UsageError) as caught:
        settings_from_config(cfg)

    assert str(caught.value).startswith(expected), str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("hydra")
def test_a_log_level_may_be_given_in_any_case() -> None:
    assert settings_from_config(compose("config", overrides=["log_level=debug"])).log_level == (
        "DEBUG"
    )


@pytest.mark.usefixtures("hydra")
def test_an_unresolvable_interpolation_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BM_TEST_SURELY_UNSET", raising=False)
    cfg = compose("config", overrides=["state_dir=${oc.env:BM_TEST_SURELY_UNSET}"])
    with pytest.raises(UsageError, match="cannot resolve the config"):
        settings_from_config(cfg)


@pytest.mark.usefixtures("hydra")
def test_flow_and_batch_flow_must_agree() -> None:
    agree = settings_from_config(compose("config", overrides=["flow=a", "batch.flow=a"]))
    assert agree.flow_name == "a"
    assert settings_from_config(compose("config", overrides=["batch.flow=b"])).flow_name == "b"
    disagree = settings_from_config(compose("config", overrides=["flow=a", "batch.flow=b"]))
    with pytest.raises(UsageError, match="disagree"):
        _ = disagree.flow_name


def test_describe_validation_error_says_what_is_missing_unknown_or_wrong() -> None:
    def described(data: dict[str, Any]) -> str:
        with pytest.raises(ValidationError) as caught:
            BatchRequest.model_validate(data)
        return describe_validation_error(caught.value, "batch.")

    assert described({}) == "batch.flow is required"
    assert described({"flow": "f", "colour": "red"}) == "batch.colour is not a known option"
    assert described({"flow": "f", "concurrency": 0, "max_attempts": 0}).endswith(
        "(and 1 more problem(s))"
    )
    assert described({"flow": "f", "shuffle": "perhaps"}).startswith(
        "batch.shuffle='perhaps' is not allowed: input should be a valid boolean"
    )


def test_batch_request_refuses_target_keys_anywhere_in_parameters() -> None:
    with pytest.raises(ValidationError, match=r"parameters\.deep\[0\]\._target_"):
        BatchRequest(flow="f", parameters={"deep": [{"_target_": "os.system"}]})
    ok = BatchRequest(flow="f", parameters={"target": "x", "nested": {"_target": 1}})
    assert ok.parameters["target"] == "x"
    assert BatchRequest.model_validate({"flow": "f", "parameters": None}).parameters == {}
