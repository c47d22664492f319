"""The batch page's LLM endpoints in headless Chromium: a server (in this process, on a real
port) over a real SQLite store, a real worker calling the fake OpenAI server (a real HTTP
server) for one combination and a closed port for the other. The page shows what the API
says: the closed endpoint down (highlighted), the calls in flight allowed to the model, and
what schema retries cost."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from anyio.from_thread import start_blocking_portal
from conftest import wait_until, write_records
from fake_openai import FakeOpenAI, Reply, Seen, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from selenium.webdriver.remote.webdriver import WebDriver
from test_api import free_port
from test_dashboard import ARTIFACTS, browser  # noqa: F401 (the fixture)

from buttermilk.api.app import create_app
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store

CLOSED = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
RECORDS = 24
GOOD = json.dumps({"label": "positive"})
FAILED_RED = "rgb(207, 34, 46)"  # --failed in style.css
SHOWN = """
return [...document.querySelectorAll("#endpoint-rows li")].map((li) => [
  li.className, li.dataset.endpoint, li.dataset.model ?? null,
  li.dataset.since ? Number(li.dataset.since) : null, li.textContent,
  getComputedStyle(li).borderLeftColor,
]);
"""
RETRIES_SHOWN = """
const dt = [...document.querySelectorAll("#batch-facts dt")]
  .find((d) => d.textContent === "Schema retries");
return dt ? dt.nextElementSibling.textContent : null;
"""
LOCAL_TIME = "return new Date(arguments[0] * 1000).toLocaleString();"


def wrong_first(seen: Seen) -> Reply:
    """An answer that does not fit to a record's first call, a good one when asked again."""
    asked_again = len(seen.messages) > 2
    return answer(GOOD if asked_again else "positive!", usage=(30, 5), delay=0.15)


def flow_at(data: Path, base_url: str) -> FlowConfig:
    judge = {
        "name": "judge",
        "_target_": "buttermilk.agents.llm.LLM",
        "model": "t-model",
        "base_url": base_url,
        "prompt": "Review: {{ record.content }}",
        "schema": {"type": "object", "properties": {"label": {"type": "string"}}},
        "price": {"input": 1.0, "output": 2.0},
        "backoff": 0.01,
    }
    records = {"type": "file", "path": str(data / "records.jsonl")}
    return FlowConfig.model_validate({"name": "h", "data": {"records": records}, "agents": [judge]})


def expected_rows(page: WebDriver, batch: dict[str, Any]) -> list[list[Any]]:
    """The rows the page should show for the API's ``batch``, as :data:`SHOWN` reads them."""
    rows: list[list[Any]] = []
    for e in batch["endpoints_down"]:
        since = page.execute_script(LOCAL_TIME, e["since"])
        workers = f"{e['workers']} worker{'s' if e['workers'] != 1 else ''}"
        text = f"{e['endpoint']} down since {since} ({workers}): {e['error']}; its jobs wait"
        rows.append(["down", e["endpoint"], None, e["since"], text, FAILED_RED])
    for c in batch["concurrency"]:
        workers = f"{c['workers']} worker{'s' if c['workers'] != 1 else ''}"
        text = f"{c['model']} @ {c['endpoint']}: {c['level']:g} in flight at most "
        text += f"(of {c['ceiling']}, {workers})"
        rows.append(["level", c["endpoint"], c["model"], None, text, "rgb(45, 164, 78)"])
    return rows


def retries_text(batch: dict[str, Any]) -> str:
    calls = batch["schema_retry_calls"]
    return (
        f"{calls} call{'s' if calls != 1 else ''}: {batch['schema_retry_input_tokens']} of "
        f"{batch['input_tokens']} in, {batch['schema_retry_output_tokens']} of "
        f"{batch['output_tokens']} out tokens, ${batch['schema_retry_cost']:.4f} of "
        f"${batch['cost']:.4f}"
    )


@pytest.mark.slow
def test_the_batch_page_shows_the_down_endpoint_the_calls_in_flight_and_schema_retries_as_the_api(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    browser: WebDriver,  # noqa: F811
) -> None:
    fake_openai.always(wrong_first)
    write_records(tmp_path / "records.jsonl", RECORDS)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    flow = flow_at(tmp_path, fake_openai.base_url)
    service = BatchService(store, queue, StaticFlowCatalog({"h": flow}))
    # One combination calls the fake server, the other a closed port: the worker finds
    # that one down as it starts on the batch, and its jobs wait while the others run.
    request = BatchRequest(
        flow="h", concurrency=2, variants={"judge.base_url": [fake_openai.base_url, CLOSED]}
    )
    batch_id = anyio.run(service.create, request).batch.id
    worker = Worker(store, queue, WorkerOptions(batch_id=batch_id, idle_timeout=None))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    with start_blocking_portal() as portal, httpx.Client(base_url=url, timeout=30) as client:
        working = portal.start_task_soon(worker.run)
        try:
            wait_until(lambda: server.started, 15, "the API server to start")

            def summary() -> dict[str, Any]:
                found: dict[str, Any] = client.get(f"/api/batches/{batch_id}").json()
                return found

            def both_live() -> dict[str, Any] | None:
                s = summary()
                return s if s["endpoints_down"] and s["concurrency"] else None

            live = wait_until(both_live, 30, "a down endpoint and a level of calls in flight")
            [down] = live["endpoints_down"]
            assert (down["endpoint"], down["workers"]) == (CLOSED, 1)
            assert "connection failed" in down["error"]
            [level] = live["concurrency"]
            assert (level["endpoint"], level["model"]) == (fake_openai.base_url, "t-model")
            # Its ceiling is the batch's concurrency, where it starts; no 429 cuts it.
            assert (level["level"], level["ceiling"], level["workers"]) == (2, 2, 1)

            browser.get(f"{url}/batches/{batch_id}")

            def endpoints_as_api() -> list[Any] | None:
                shown = browser.execute_script(SHOWN)
                return shown if shown == expected_rows(browser, summary()) else None

            [shown_down, shown_level] = wait_until(endpoints_as_api, 20, "the API's endpoints")
            assert shown_down[0] == "down" and shown_down[-1] == FAILED_RED  # highlighted
            assert shown_level[0] == "level" and shown_level[-1] != FAILED_RED
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "dashboard-endpoints.png"))

            # Once the reachable combination's jobs are done, what its schema retries cost
            # stays put (the other combination's jobs still wait): the page shows it.
            def up_done() -> dict[str, Any] | None:
                s = summary()
                up = next(c for c in s["combinations"] if fake_openai.base_url in str(c["values"]))
                return s if up["counts"]["completed"] == RECORDS else None

            done = wait_until(up_done, 60, "the reachable combination's jobs to complete")
            assert done["status"] == "running" and done["endpoints_down"]
            assert (done["schema_retry_calls"], done["schema_retry_input_tokens"]) == (
                RECORDS,
                RECORDS * 30,
            )
            wait_until(
                lambda: browser.execute_script(RETRIES_SHOWN) == retries_text(summary()),
                10,
                "the page to show what schema retries cost, as the API says",
            )
            assert client.delete(f"/api/batches/{batch_id}").status_code == 200
            working.result(timeout=30)  # the batch ended: its worker stops
        finally:
            portal.call(worker.stop)
            server.should_exit = True
            thread.join(15)
            store.close()
