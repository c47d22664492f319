"""Generated requests against the API, in-process over a real SQLite store and local queue.

- schemathesis sends requests generated from the API's own OpenAPI spec (valid and
  invalid ones, with real batch and record ids mixed in): none may answer 500.
- Hypothesis generates record ids: each job stored under one is fetched back by its
  percent-encoded id, and by the ``job?record_id=`` route.
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
from buttermilk.batch.models import BatchRequest
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.records import Record
from buttermilk.store.store import Store

# Record ids a path mangles unless each is percent-encoded whole.
MAX_BODY = 4096
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ODD_IDS = ["plain", "a/b", "a b", "100%", "q?x=1", "h#1", "line\nbreak", "end\n", "é漢"]
FAIL_ON = ["a/b"]


def flow(data: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
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
    service = BatchService(store, queue, StaticFlowCatalog({"f": flow(data)}))

    async def prepare() -> None:
        ran = await service.create(
            BatchRequest(flow="f", max_attempts=1, parameters={"fail_on": FAIL_ON})
        )
        await Worker(store, queue, WorkerOptions(idle_timeout=0.2, batch_id=ran.batch.id)).run()
        cancelled = await service.create(BatchRequest(flow="f"))
        await service.cancel(cancelled.batch.id)
        await service.create(BatchRequest(flow="f", max_records=3))

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


def _mixed(values: Any, real: dict[str, Any]) -> Any:
    """The generated values, each id sometimes swapped for a real one."""
    if not isinstance(values, dict):  # an invalid request may lack them
        return st.just(values)
    return st.fixed_dictionaries(
        {
            key: st.one_of(st.just(value), real[key]()) if key in real else st.just(value)
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


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
def test_no_generated_request_gets_a_server_error(case: Case, app: FastAPI) -> None:
    case.call_and_validate(checks=[not_a_server_error])


def test_every_listed_job_is_fetched_by_its_percent_encoded_record_id(
    app: FastAPI, service: BatchService
) -> None:
    [batch] = service.store.list_batches(limit=1)  # the newest: 3 of ODD_IDS, pending
    [ran] = [b for b in service.store.list_batches() if b.status == "completed"]
    with ASGIClient(app) as client:
        listed = client.get(f"/api/batches/{ran.id}/jobs").json()["items"]
        assert sorted(job["record_id"] for job in listed) == sorted(ODD_IDS)
        for job in listed:
            rid = job["record_id"]
            by_path = client.get(f"/api/batches/{ran.id}/jobs/{quote(rid, safe='')}")
            by_query = client.get(f"/api/batches/{ran.id}/job", params={"record_id": rid})
            assert by_path.status_code == by_query.status_code == 200, (rid, by_path.text)
            assert by_path.json()["record_id"] == by_query.json()["record_id"] == rid
            assert by_path.json()["record"]["content"] == rid
        # "end\n" is its own job, not "end" with the newline dropped by the route's pattern.
        assert client.get(f"/api/batches/{ran.id}/jobs/end").status_code == 404
        assert batch.total == 3


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
        request=BatchRequest(flow="f"),
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
