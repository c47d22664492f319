"""The dashboard's results page in headless Chromium, against a server (in this process,
on a real port) over a real SQLite store whose batch a real worker ran: every chart drawn,
the accuracy on the page equal to the API's, the job filters, and a job's drawer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from conftest import wait_until
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from test_api import free_port
from test_dashboard import ARTIFACTS, browser, read  # noqa: F401 (the fixture)
from test_report_api import DISAGREES, SCRIPT, SPEC, flow

from buttermilk.api.app import create_app
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.domain.evaluation import Missing
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store

# A 1x1 PNG: the drawer shows a record's image (here a data: URI in its metadata).
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk"
    "YAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@dataclass
class Served:
    url: str
    batch_id: str
    client: httpx.Client


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    data = tmp_path / "records.jsonl"
    with data.open("w") as fh:
        for rid, (truth, answers) in SCRIPT.items():
            row = {"id": rid, "text": f"text of {rid}", "truth": truth, "answers": answers}
            if rid == "r1":
                row["image"] = PIXEL
            fh.write(json.dumps(row) + "\n")
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    service = BatchService(store, None, StaticFlowCatalog({"scored": flow(data, "scored", SPEC)}))  # type: ignore[arg-type]

    async def run() -> str:
        async with LocalQueue(tmp_path / "queue.db", lease_seconds=10) as queue:
            service.queue = queue
            request = BatchRequest(
                flow="scored", variants={"model": ["a", "b"]}, repeats=2, max_attempts=1
            )
            batch_id = (await service.create(request)).batch.id
            with anyio.fail_after(60):
                await Worker(store, queue, WorkerOptions(idle_timeout=0.2)).run()
            return batch_id

    batch_id = anyio.run(run)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 15, "the API server to start")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as client:
            yield Served(url, batch_id, client)
    finally:
        server.should_exit = True
        thread.join(15)
        store.close()


CHARTS_DRAWN = """
return [...document.querySelectorAll("#charts [data-chart]")]
  .map((div) => [div.dataset.chart, div.querySelector("svg.main-svg") !== null]);
"""
SCORE_FIGURES = """
return [...document.querySelectorAll("#score-rows tr")].map((row) =>
  [row.dataset.variant, JSON.parse(row.querySelector("td.figure").dataset.value),
   row.querySelector("td.figure").textContent]);
"""
PLOTTED = "return document.getElementById('chart-accuracy').data[0].y;"
MISSING = """
return [...document.querySelectorAll("#score-rows td.missing")].map((td) => td.textContent);
"""
# At each width of the drawer's "Run" list, whether every name sits on its value's row,
# left of it (the grid lays them out in pairs, never a name at a row's end).
RUN_ALIGNED = """
const dl = document.querySelector("#job-drawer .run dl");
const found = [];
for (let width = 300; width <= 1100; width += 40) {
  dl.style.width = `${width}px`;
  for (const dt of dl.querySelectorAll("dt")) {
    const a = dt.getBoundingClientRect();
    const b = dt.nextElementSibling.getBoundingClientRect();
    const sameRow = a.top < b.bottom && b.top < a.bottom;
    if (!sameRow || a.right > b.left) found.push([width, dt.textContent, a.top, b.top]);
  }
}
dl.style.width = "";
return found;
"""
# A running batch with nothing to score: the report's 422 is shown once and not asked for
# again as its jobs end (microtasks only: the page's own polling cannot interleave).
NO_SCORES_ASKED = """
const done = arguments[arguments.length - 1];
const real = api;
let calls = 0;
api = async () => {
  calls += 1;
  const error = new Error("batch zz declares nothing to score");
  error.status = 422;
  throw error;
};
(async () => {
  const counts = { completed: 1, failed: 0, cancelled: 0 };
  const batch = { batch_id: "zz", status: "running", counts };
  for (let ended = 1; ended <= 3; ended += 1) {
    batch.counts.completed = ended;
    results.at = 0;  // past the 5 s between two reports of a running batch
    await refreshResults(batch);
  }
})().finally(() => {
  api = real;
  done([calls, document.getElementById("results-note").textContent]);
});
"""
JOB_ROWS = """
return [...document.querySelectorAll("#job-rows tr")].map((r) => r.dataset.record);
"""
CLICK_JOB = """
const [record, variant, repeat] = arguments;
const link = [...document.querySelectorAll("a.job-link")].find((a) => {
  const row = a.closest("tr").dataset;
  return row.record === record && row.variant === variant && row.repeat === String(repeat);
});
if (link) link.click();
return Boolean(link);
"""


def drawer_text(driver: WebDriver, css: str, attribute: str | None = None) -> str | None:
    return read(driver, f"#job-drawer {css}", attribute)


@pytest.mark.slow
def test_the_results_page_draws_each_chart_the_api_figures_and_a_job_drawer(
    served: Served,
    browser: WebDriver,  # noqa: F811
) -> None:
    charts = served.client.get(f"/api/batches/{served.batch_id}/report/charts").json()
    report = served.client.get(f"/api/batches/{served.batch_id}/report").json()
    expected_charts = [[c["id"], True] for c in charts["charts"]]
    assert len(expected_charts) == 6  # accuracy, labels, stability, timeline, 2 confusions

    browser.get(f"{served.url}/batches/{served.batch_id}")

    wait_until(lambda: browser.execute_script(CHARTS_DRAWN) == expected_charts, 20, "charts")
    scores = [*report["combinations"], report["overall"], report["agreement"]["majority"]]
    expected = [
        [
            s["variant"],
            s["accuracy"]["estimate"],
            f"{s['accuracy']['estimate']:.3f} [{s['accuracy']['low']:.3f}, "
            f"{s['accuracy']['high']:.3f}]",
        ]
        for s in scores
    ]
    assert browser.execute_script(SCORE_FIGURES) == expected
    assert browser.execute_script(PLOTTED) == [s["accuracy"]["estimate"] for s in scores[:2]]
    # Missing jobs by reason, as the CLI shows them: b's failed job.
    assert browser.execute_script(MISSING) == [
        Missing.model_validate(s["missing"]).text() for s in scores
    ]
    assert browser.execute_script(MISSING)[1] == "1 (1 failed)"
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name)"
    )
    assert f"{served.url}/vendor/plotly.min.js" in fetched
    assert all(name.startswith(served.url) for name in fetched)  # nothing from elsewhere
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("document.getElementById('results').scrollIntoView()")
    browser.save_screenshot(str(ARTIFACTS / "dashboard-results.png"))

    # Filters: "disagrees with truth" lists the jobs of exactly those records.
    browser.find_element(By.ID, "job-disagrees").click()
    wait_until(
        lambda: (
            set(browser.execute_script(JOB_ROWS)) == DISAGREES
            and len(browser.execute_script(JOB_ROWS)) == 12
        ),
        10,
        "the jobs of the records that disagree with their truth",
    )
    browser.find_element(By.ID, "job-disagrees").click()

    # The drawer: record (with its image), every agent's output, the run.
    wait_until(lambda: browser.execute_script(CLICK_JOB, "r1", "b", 1), 10, "r1's job link")
    wait_until(lambda: drawer_text(browser, ".record .content") == "text of r1", 10, "record")
    assert drawer_text(browser, ".record img", "src") == PIXEL
    assert json.loads(drawer_text(browser, '[data-agent="judge"] .output') or "") == {
        "label": "pos"
    }
    assert "neg" in (drawer_text(browser, ".record dl") or "")  # the ground truth
    browser.save_screenshot(str(ARTIFACTS / "dashboard-drawer.png"))
    browser.find_element(By.ID, "job-close").click()

    # A failed job's drawer shows its error and traceback.
    wait_until(lambda: browser.execute_script(CLICK_JOB, "r4", "b", 0), 10, "r4's job link")
    wait_until(
        lambda: "PermanentError" in (drawer_text(browser, ".traceback") or ""), 10, "traceback"
    )
    assert browser.execute_script(RUN_ALIGNED) == []
    browser.find_element(By.ID, "job-close").click()
    calls, note = browser.execute_async_script(NO_SCORES_ASKED)
    assert (calls, note) == (1, "No scores: batch zz declares nothing to score")
