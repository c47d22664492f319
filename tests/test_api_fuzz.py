"""Generated requests against the API, in-process over a real SQLite store and local queue.

- schemathesis sends requests generated from the API's own OpenAPI spec (valid and
  invalid ones, with real batch and record ids mixed in): none may answer 500.
- Hypothesis generates record ids: each job stored under one is fetched back by its
  percent-encoded id, and by the ``job?record_id=`` route. (tests/test_api.py does the
  same through a real server for a fixed set of odd ids.)
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import anyio
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.python.asgi import ASGIClient

from buttermilk.api.app import create_app
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.store.store import Store

MAX_BODY = 4096  # bytes: generated bodies past it must get 413, not 500
# Generated requests per operation; FUZZ_EXAMPLES=300 for a deeper run by hand (~2 min).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
# Record ids a path mangles unless each is percent-encoded whole.
ODD_IDS = ["plain", "a/b", "a b", "100%", "q?x=1", "h#1", "line\nbreak", "end\n", "é漢"]
FAIL_ON = ["a/b"]
FLOW = "sentiment"  # the flow the spec's examples name: their creates reach the store


def flow(data: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": FLOW,
            "data": {"records": {"type": "file", "path": str(data)}},
            "agents": [{"name": "check", "_target_": "buttermilk.agents.testing.FailOn"}],
        }
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchService]:
    """Three batches of ODD_IDS: one run by a worker (one job failed), one cancelled, one
    pending."""
    root = tmp_path_factory.mktemp("api-fuzz")
    data = root / "records.jsonl"
    data.write_text("".join(json.dumps({"id": rid, "text": rid}) + "\n" for rid in ODD_IDS))
    store = Store(f"sqlite:///{root}/batches.db")
    queue = LocalQueue(root / "queue.db", lease_seconds=5)
    service = BatchService(store, queue, StaticFlowCatalog({FLOW: flow(data)}))

    async def prepare() -> None:
        ran = await service.create(
            BatchRequest(flow=FLOW, max_attempts=1, parameters={"fail_on": FAIL_ON})
        )
        await Worker(store, queue, WorkerOptions(idle_timeout=0.2, batch_id=ran.batch.id)).run()
        cancelled = await service.create(BatchRequest(flow=FLOW))
        await service.cancel(cancelled.batch.id)
        await service.create(BatchRequest(flow=FLOW, max_records=3))

    anyio.run(prepare)
    yield service
    store.close()
    anyio.run(queue.aclose)


# Ids of the stored batches, filled in by the `service` fixture: generated requests use
# them in place of random ids now and then (random ids only ever find nothing: 404).
REAL_BATCH_IDS: list[str] = []

# schemathesis reads the spec at import to make one test per operation; the service
# behind the app is set by the `app` fixture (the spec does not depend on it).
APP = create_app(cast(BatchService, None), max_body_bytes=MAX_BODY)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def app(service: BatchService) -> FastAPI:
    APP.state.service = service
    REAL_BATCH_IDS[:] = [b.id for b in service.store.list_batches()]
    REAL_BATCH_IDS.append(REAL_BATCH_IDS[0][:4])  # a prefix
    return APP


# Integers past what the store binds (SQLite and PostgreSQL: 64 bits; PostgreSQL INTEGER:
# 32): drawn rarely on their own, so put in now and then for any generated integer.
EXTREME_INTS = [2**31, 2**63, 2**64, 10**30, -(2**63) - 1]


def _extreme(value: Any) -> st.SearchStrategy[Any]:
    """The value, or (now and then) the same with its integers pushed to the extremes."""
    if isinstance(value, dict):
        return st.fixed_dictionaries({key: _extreme(item) for key, item in value.items()})
    if isinstance(value, list):
        return st.tuples(*(_extreme(item) for item in value)).map(list)
    if isinstance(value, int) and not isinstance(value, bool):
        return st.one_of(st.just(value), st.sampled_from(EXTREME_INTS))
    return st.just(value)


def _mixed(values: Any, real: dict[str, Any]) -> Any:
    """The generated values, each id sometimes swapped for a real one."""
    if not isinstance(values, dict):  # an invalid request may lack them
        return st.just(values)
    return st.fixed_dictionaries(
        {
            key: st.one_of(st.just(value), real[key]()) if key in real else _extreme(value)
            for key, value in values.items()
        }
    )


def _real_batch() -> st.SearchStrategy[str]:
    return st.sampled_from(REAL_BATCH_IDS)


def _real_record() -> st.SearchStrategy[str]:
    return st.sampled_from(ODD_IDS)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: Any) -> Any:
    return _mixed(path_parameters, {"batch_id": _real_batch, "record_id": _real_record})


@schema.hook
def flatmap_query(context: Any, query: Any) -> Any:
    return _mixed(query, {"record_id": _real_record})


@schema.hook
def flatmap_body(context: Any, body: Any) -> Any:
    return _mixed(body, {"flow_name": lambda: st.just(FLOW)})  # else creates stop at 422


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
def test_no_generated_request_gets_a_server_error(case: Case, app: FastAPI) -> None:
    case.call_and_validate(checks=[not_a_server_error])


NEXT_BATCH = itertools.count()
# Any text the store can hold: no surrogates (not UTF-8), no empty id.
record_ids = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)


@pytest.mark.slow
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(record_ids)
def test_a_job_stored_under_any_record_id_is_fetched_by_that_id(
    app: FastAPI, service: BatchService, record_id: str
) -> None:
    batch_id = f"h{next(NEXT_BATCH):011d}"
    service.store.create_batch(
        batch_id=batch_id,
        request=BatchRequest(flow=FLOW),
        flow_snapshot={},
        seed=1,
        records=[Record(record_id=record_id, content="x")],
    )
    with ASGIClient(app) as client:
        by_query = client.get(f"/api/batches/{batch_id}/job", params={"record_id": record_id})
        assert by_query.status_code == 200 and by_query.json()["record_id"] == record_id
        if record_id not in (".", ".."):  # a client rewrites these path segments
            by_path = client.get(f"/api/batches/{batch_id}/jobs/{quote(record_id, safe='')}")
            assert by_path.status_code == 200, by_path.text
            assert by_path.json()["record_id"] == record_id
