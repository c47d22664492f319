"""Property: a value given for a typed option is either accepted and reads back exactly,
or refused with one line naming the option, and then nothing is created.

Most examples go through the functions the CLI and the API call in-process
(``settings_from_config``, ``BatchSettings.to_request``, the API's create route over a
real store and queue); a few real CLI subprocesses check the whole path, Hydra's parsing
of the override included.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args

import anyio
import httpx
import orjson
import pytest
from conftest import Env, write_records
from fastapi import FastAPI
from hydra import compose, initialize_config_module
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel

from buttermilk.api.app import create_app
from buttermilk.batch import worker
from buttermilk.batch.service import BatchService
from buttermilk.domain import MAX_RETRY_DELAY, BatchRequest
from buttermilk.errors import UsageError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.option_types import INT32_MAX, INT64_MAX, INT64_MIN
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.runner.hydra_flows import register_resolvers
from buttermilk.runner.settings import AppSettings, BatchSettings, settings_from_config
from buttermilk.store.engine import dumps as _dumps
from buttermilk.store.store import Store


@dataclass(frozen=True)
class Spec:
    """What an option allows, written out independently of the models under test."""

    kind: type[int] | type[float]
    low: float
    high: float = math.inf
    low_open: bool = False  # True: the value must be more than ``low``
    optional: bool = False

    def number(self, value: Any) -> float | int | None:
        """The number a well-typed input stands for (None: not a number of this kind)."""
        if isinstance(value, str):  # numeric text (an env interpolation) parses
            try:
                value = int(value) if self.kind is int else float(value)
            except ValueError:
                return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if self.kind is int:
            return int(value) if float(value).is_integer() else None
        return float(value)

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.optional
        number = self.number(value)
        if number is None:
            return False
        above = number > self.low if self.low_open else number >= self.low
        return above and number <= self.high


REQUEST_OPTIONS = {
    "max_records": Spec(int, 1, INT32_MAX, optional=True),
    "concurrency": Spec(int, 1, INT32_MAX),
    "max_attempts": Spec(int, 1, INT32_MAX),
    "seed": Spec(int, INT64_MIN, INT64_MAX, optional=True),
    "retry_delay": Spec(float, 0, 300),
    "job_timeout": Spec(float, 0, 7 * 24 * 3600, low_open=True, optional=True),
    "max_cost": Spec(float, 0, low_open=True, optional=True),
    "repeats": Spec(int, 1, 1_000, optional=True),
}
WORKER_OPTIONS = {
    "limit": Spec(int, 1, INT32_MAX),
    "max_jobs": Spec(int, 1, INT32_MAX, optional=True),
    "worker_concurrency": Spec(int, 1, INT32_MAX),
    "idle_timeout": Spec(float, 0, optional=True),
    "grace_period": Spec(float, 0),
}
QUEUE_OPTIONS = {
    "lease_seconds": Spec(float, 0, low_open=True),
    "poll_interval": Spec(float, 0, low_open=True),
}

NON_FINITE = [math.inf, -math.inf, math.nan]
values = st.one_of(
    st.sampled_from(NON_FINITE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [0, 1, -1, 300, 301, INT32_MAX, INT32_MAX + 1, INT64_MAX, INT64_MAX + 1, INT64_MIN - 1]
    ),
    st.sampled_from([0.5, 300.0, 300.0000001, 604800.0, 1e-300, 5e-324, 1e308, -0.0]),
    st.booleans(),
    st.none(),
    st.text(alphabet="abcxyz", max_size=5),
)


def with_examples(test: Any) -> Any:
    """Values every run tries, whatever else it draws: the edges of every option."""
    for value in [*NON_FINITE, True, False, None, 0, -1, 2**31, 2**63, 1e308, "1.5", "x"]:
        test = example(value=value)(test)
    return test


EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def base_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DictConfig]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUTTERMILK_HOME", str(home))
        register_resolvers()
        with initialize_config_module("buttermilk.conf", version_base=None):
            yield compose("config")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path_factory.mktemp('store')}/batches.db")
    yield s
    s.close()


def with_option(base: DictConfig, key: str, value: Any) -> DictConfig:
    cfg = base.copy()
    OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def assert_refused_naming(exc: UsageError, key: str) -> None:
    message = str(exc)
    assert "\n" not in message
    assert message.startswith((f"{key}=", f"{key} is required")), message


def read_back(store: Store, batch_id: str, request: BatchRequest) -> BatchRequest:
    """The request as a create stores it and list/status read it."""
    store.create_batch(
        batch_id=batch_id,
        request=request,
        flow_snapshot={},
        seed=1,
        records=[Record(record_id="r1", content="x")],
    )
    stored = store.get_batch(batch_id)
    assert stored.request_error is None
    return stored.request


_ids = iter(range(10**9))


@pytest.mark.parametrize("name", sorted(REQUEST_OPTIONS))
@EXAMPLES
@with_examples
@given(value=values)
def test_a_batch_option_is_stored_and_read_back_exactly_or_refused_naming_it(
    base_config: DictConfig, store: Store, name: str, value: Any
) -> None:
    spec = REQUEST_OPTIONS[name]
    cfg = with_option(base_config, f"batch.{name}", value)

    try:
        request = settings_from_config(cfg).batch.to_request("t_work")
    except UsageError as exc:
        assert not spec.allows(value) or isinstance(value, str), (value, str(exc))
        assert_refused_naming(exc, f"batch.{name}")
        return

    assert spec.allows(value), (name, value, request)
    got = getattr(request, name)
    assert got == spec.number(value) if value is not None else got is None
    assert type(got) is (spec.kind if value is not None else type(None))
    batch_id = f"kp{next(_ids):010d}"
    assert getattr(read_back(store, batch_id, request), name) == got
    json_request = orjson.loads(_dumps(request.model_dump(mode="json")))
    assert BatchRequest.from_stored(json_request, "t_work") == (request, None)


@pytest.mark.parametrize(
    ("section", "name"),
    [("batch", name) for name in sorted(WORKER_OPTIONS)]
    + [("queue", name) for name in sorted(QUEUE_OPTIONS)],
)
@EXAMPLES
@with_examples
@given(value=values)
def test_a_worker_or_queue_option_is_taken_exactly_or_refused_naming_it(
    base_config: DictConfig, section: str, name: str, value: Any
) -> None:
    spec = (WORKER_OPTIONS if section == "batch" else QUEUE_OPTIONS)[name]

    try:
        app: AppSettings = settings_from_config(
            with_option(base_config, f"{section}.{name}", value)
        )
    except UsageError as exc:
        assert not spec.allows(value) or isinstance(value, str), (value, str(exc))
        assert_refused_naming(exc, f"{section}.{name}")
        return

    assert spec.allows(value), (name, value)
    got = getattr(app.batch if section == "batch" else app.queue, name)
    assert got == spec.number(value) if value is not None else got is None


# -- the API's create body ----------------------------------------------------------------

API_OPTIONS = {
    "max_records": REQUEST_OPTIONS["max_records"],
    "concurrency": REQUEST_OPTIONS["concurrency"],
    "max_cost": REQUEST_OPTIONS["max_cost"],
}


@dataclass
class Api:
    app: FastAPI
    store: Store

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request to the app in this process (Python's JSON writes inf and nan as
        Infinity and NaN, which the server's reader takes back)."""

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                content = None if body is None else json.dumps(body)
                headers = {"content-type": "application/json"}
                return await client.request(method, path, content=content, headers=headers)

        return anyio.run(go)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("api")
    write_records(folder / "records.jsonl", 2)
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(folder / "records.jsonl")}},
            "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
        }
    )
    store = Store(f"sqlite:///{folder}/batches.db")
    queue = LocalQueue(folder / "queue.db", lease_seconds=5)
    service = BatchService(store, queue, StaticFlowCatalog({"f": flow}))
    yield Api(create_app(service), store)
    anyio.run(queue.aclose)
    store.close()


@pytest.mark.parametrize("name", sorted(API_OPTIONS))
@settings(max_examples=40, deadline=None)
@with_examples
@given(value=values)
def test_an_api_create_field_is_stored_exactly_or_refused_with_422_and_nothing_created(
    api: Api, name: str, value: Any
) -> None:
    spec = API_OPTIONS[name]
    before = api.store.count_batches()

    answer = api.call("POST", "/api/batches", {"flow_name": "f", name: value})

    if answer.status_code == 422:
        assert not spec.allows(value) or isinstance(value, str), (value, answer.json())
        assert answer.json()["error"]["field"] == name, answer.json()
        assert api.store.count_batches() == before
        return
    assert answer.status_code == 201, answer.text
    assert spec.allows(value), (name, value)
    batch_id = answer.json()["batch_id"]
    shown = api.call("GET", f"/api/batches/{batch_id}").json()["request"][name]
    assert shown == (spec.number(value) if value is not None else None)


# -- a few real command lines ------------------------------------------------------------

CLI_EXAMPLES = [
    pytest.param("batch.retry_delay=1e400", "batch.retry_delay=inf is not allowed", id="1e400"),
    pytest.param("batch.seed=9223372036854775808", "batch.seed=9223372036854775808", id="seed"),
    pytest.param("batch.concurrency=abc", "batch.concurrency='abc' is not allowed", id="text"),
]


@pytest.mark.backends("local")
@pytest.mark.parametrize(("override", "expected"), CLI_EXAMPLES)
def test_a_bad_option_on_the_command_line_is_one_line_exit_2_and_nothing_stored(
    env: Env, override: str, expected: str
) -> None:
    write_records(env.data / "records.jsonl", 2)

    result = env.cli("flow=t_work", override)

    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], str(result)
    assert "Traceback" not in result.stderr
    assert env.store().count_batches() == 0


@pytest.mark.slow
@pytest.mark.backends("local")
def test_extreme_but_allowed_options_are_stored_and_shown_exactly(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)
    given_options = {
        "seed": INT64_MIN,
        "retry_delay": 300.0,
        "job_timeout": 604800.0,
        "max_cost": 1e-300,
        "max_attempts": INT32_MAX,
        "concurrency": INT32_MAX,
    }

    batch_id = env.create("t_work", *(f"batch.{k}={v!r}" for k, v in given_options.items()))

    shown = env.status(batch_id)["request"]
    assert {k: shown[k] for k in given_options} == given_options
    listed = env.ok("batch.command=list", "batch.format=json").json()
    assert {k: listed[0]["request"][k] for k in given_options} == given_options


def is_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    return any(is_number(arg) for arg in get_args(annotation))


@pytest.mark.parametrize(
    ("model", "specs"),
    [(BatchRequest, REQUEST_OPTIONS), (BatchSettings, WORKER_OPTIONS)],
)
def test_every_numeric_option_has_a_spec_here(
    model: type[BaseModel], specs: dict[str, Spec]
) -> None:
    numeric = {name for name, f in model.model_fields.items() if is_number(f.annotation)}
    numeric.discard("strata")  # records per group, set by create: not an option
    assert numeric == set(specs)


def test_the_largest_retry_delay_is_the_workers_backoff_cap() -> None:
    # A larger retry_delay would be cut to the cap without a word: it is refused instead.
    assert REQUEST_OPTIONS["retry_delay"].high == MAX_RETRY_DELAY == worker.MAX_RETRY_DELAY
