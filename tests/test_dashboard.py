"""The dashboard in headless Chromium, against a real server and a real worker.

Needs Debian's ``chromium`` and ``chromium-driver`` (``make test`` installs them); without them the
test fails rather than skips, so a missing browser is never mistaken for a pass.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, stop_process, wait_until, write_records
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select
from test_api import api_server, create

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TOKEN = "dashboard-test-token"
RECORDS = 120  # at 0.5 s each, two at a time: about 30 s of work, so that the batch is
# still running when the test cancels it on a slow, loaded machine
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.fail(
            "the dashboard test needs headless Chromium: install Debian's chromium and "
            "chromium-driver (apt-get install -y chromium chromium-driver); "
            f"found chromium={browser}, chromedriver={driver}"
        )
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def read(browser: WebDriver, css: str, attribute: str | None = None) -> str | None:
    """An element's text (or attribute) now; None while it is missing or being redrawn."""
    try:
        element = browser.find_element(By.CSS_SELECTOR, css)
        return element.get_attribute(attribute) if attribute else element.text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


@dataclass(frozen=True)
class Bar:
    ended: int  # aria-valuenow: jobs ended
    completed_width: float  # width of the completed segment, in % of the bar


BAR_SCRIPT = """
const bar = document.querySelector(arguments[0]);
if (!bar) return null;
return [bar.getAttribute("aria-valuenow"), bar.querySelector(".seg.completed").style.width];
"""


def progress_bar(browser: WebDriver, batch_id: str) -> Bar | None:
    """The batch's progress bar as drawn now (one read, so both values match)."""
    found = browser.execute_script(BAR_SCRIPT, f'.bar[data-batch="{batch_id}"]')
    if not found:
        return None
    return Bar(int(found[0]), float(str(found[1]).rstrip("%") or 0))


@pytest.mark.slow
def test_dashboard_shows_a_running_batch_progress_and_cancels_it(
    env: Env, browser: WebDriver
) -> None:
    write_records(env.data / "records.jsonl", RECORDS)
    worker = env.popen("batch.command=run", "batch.idle_timeout=null", log_name="worker")
    try:
        with api_server(env, f"api.token={TOKEN}", token=TOKEN) as api:
            batch_id = create(api, concurrency=2, flow_parameters={"sleep": 0.5})["batch_id"]

            # The server has a token: the page asks for it once, then uses it for every call.
            browser.get(f"{api.url}/")
            wait_until(
                lambda: browser.find_element(By.ID, "token-input").is_displayed(), 15, "token form"
            )
            browser.find_element(By.ID, "token-input").send_keys(TOKEN)
            browser.find_element(By.ID, "token-save").click()

            def moved_past(before: Bar) -> Bar | None:
                now = progress_bar(browser, batch_id)
                if (
                    now
                    and now.ended > before.ended
                    and now.completed_width > before.completed_width
                ):
                    return now
                return None

            first = wait_until(
                lambda: moved_past(Bar(0, 0.0)), 20, "the first jobs of the batch to end"
            )
            wait_until(lambda: moved_past(first), 15, "the progress bar to move on")
            row_status = f'tr[data-batch="{batch_id}"] .status'
            wait_until(lambda: read(browser, row_status) == "running", 5, "the row's status")
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))

            browser.find_element(
                By.CSS_SELECTOR, f'tr[data-batch="{batch_id}"] a.batch-link'
            ).click()
            wait_until(lambda: read(browser, "#batch-status") == "running", 15, "the batch page")
            assert read(browser, "#batch-id") == batch_id
            wait_until(lambda: read(browser, "#job-rows tr"), 10, "the table of jobs")
            browser.find_element(By.ID, "cancel").click()

            wait_until(
                lambda: read(browser, "#batch-status") == "cancelled", 15, "status cancelled"
            )
            browser.save_screenshot(str(ARTIFACTS / "dashboard-batch.png"))
            summary = api.client.get(f"/api/batches/{batch_id}").json()
            assert summary["status"] == "cancelled"
            assert 0 < summary["counts"]["completed"] < RECORDS
            assert not browser.find_element(By.ID, "cancel").is_displayed()
    finally:
        stop_process(worker)


ODD_IDS = ["line\nbreak", "..", "a/b?c#d", "100% é"]
CLICK_JOB = """
const link = [...document.querySelectorAll("a.job-link")]
  .find((a) => a.closest("tr").dataset.record === arguments[0]);
if (!link) return false;
link.click();
return true;
"""


def open_job(browser: WebDriver, record_id: str) -> dict[str, Any]:
    """Click the job's link in the table; the job as the dialog shows it."""
    wait_until(
        lambda: browser.execute_script(CLICK_JOB, record_id), 5, f"the link of {record_id!r}"
    )

    def shown() -> dict[str, Any] | None:
        text = read(browser, "#job-json")
        job = json.loads(text) if text else None
        return job if job and job["record_id"] == record_id else None

    found: dict[str, Any] = wait_until(shown, 10, f"the job {record_id!r} in the dialog")
    return found


@pytest.mark.slow
@pytest.mark.backends("local")  # the page is the same over any backend
def test_each_job_link_opens_its_job_whatever_its_record_id(env: Env, browser: WebDriver) -> None:
    with (env.data / "records.jsonl").open("w") as fh:
        for rid in ODD_IDS:
            fh.write(json.dumps({"id": rid, "text": f"text of {rid}"}) + "\n")
    with api_server(env) as api:
        batch_id = create(api, shuffle=False)["batch_id"]
        browser.get(f"{api.url}/batches/{batch_id}")
        wait_until(lambda: read(browser, "#batch-id") == batch_id, 15, "the batch page")
        # One combination, one repeat: no table of combinations.
        assert not browser.find_element(By.ID, "combinations").is_displayed()
        # The jobs have not started: only the planned order lists them.
        Select(browser.find_element(By.ID, "job-order")).select_by_value("planned")
        wait_until(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "a.job-link")) == len(ODD_IDS),
            15,
            "the job links",
        )
        dialog = browser.find_element(By.ID, "job-dialog")

        for rid in ODD_IDS:
            job = open_job(browser, rid)

            assert job["batch_id"] == batch_id and job["status"] == "pending"
            assert job["record"]["record_id"] == rid
            assert job["record"]["content"] == f"text of {rid}"
            if rid == ODD_IDS[0]:
                ARTIFACTS.mkdir(exist_ok=True)
                browser.save_screenshot(str(ARTIFACTS / "dashboard-job.png"))
            browser.find_element(By.ID, "job-close").click()
            wait_until(lambda: not dialog.is_displayed(), 5, "the dialog to close")


CLICK_JOB_OF = """
const [record, variant, repeat] = arguments;
const link = [...document.querySelectorAll("a.job-link")].find((a) => {
  const row = a.closest("tr").dataset;
  return row.record === record && row.variant === variant && row.repeat === String(repeat);
});
if (!link) return false;
link.click();
return true;
"""
COMBINATION_ROWS = """
return [...document.querySelectorAll("#combination-rows tr")].map((row) => [
  row.dataset.variant,
  row.querySelector('[data-axis="check.message"]').textContent,
  row.querySelector(".bar").getAttribute("aria-valuenow"),
  row.querySelector(".bar").getAttribute("aria-valuemax"),
]);
"""


def open_job_of(browser: WebDriver, key: tuple[str, str, int]) -> dict[str, Any]:
    """Click the link of the job (record, variant, repeat); the job as the dialog shows it."""
    wait_until(lambda: browser.execute_script(CLICK_JOB_OF, *key), 5, f"the link of {key}")

    def shown() -> dict[str, Any] | None:
        text = read(browser, "#job-json")
        job = json.loads(text) if text else None
        found = job and (job["record_id"], job["variant"], job["repeat"]) == key
        return job if found else None

    found: dict[str, Any] = wait_until(shown, 10, f"the job {key} in the dialog")
    return found


@pytest.mark.slow
@pytest.mark.backends("local")  # the page is the same over any backend
def test_the_batch_page_shows_each_combination_and_links_each_of_its_jobs(
    env: Env, browser: WebDriver
) -> None:
    write_records(env.data / "records.jsonl", 2)
    with api_server(env) as api:
        batch_id = create(
            api, shuffle=False, variants={"check.message": ["alpha", "beta"]}, repeats=2
        )["batch_id"]
        browser.get(f"{api.url}/batches/{batch_id}")

        def rows(ended: str) -> list[list[str]] | None:
            found = browser.execute_script(COMBINATION_ROWS)
            expected = [["alpha", "alpha", ended, "4"], ["beta", "beta", ended, "4"]]
            return found if found == expected else None

        wait_until(lambda: rows("0"), 15, "a row per combination, none of its jobs ended")
        assert browser.find_element(By.ID, "combinations").is_displayed()
        Select(browser.find_element(By.ID, "job-order")).select_by_value("planned")
        wait_until(
            lambda: len(browser.find_elements(By.CSS_SELECTOR, "a.job-link")) == 8, 15, "8 jobs"
        )
        dialog = browser.find_element(By.ID, "job-dialog")
        for key in itertools.product(("r00000", "r00001"), ("alpha", "beta"), (0, 1)):
            job = open_job_of(browser, key)

            assert job["batch_id"] == batch_id and job["record"]["record_id"] == key[0]
            browser.find_element(By.ID, "job-close").click()
            wait_until(lambda: not dialog.is_displayed(), 5, "the dialog to close")

        env.ok("batch.command=run", "batch.idle_timeout=0.5")

        wait_until(lambda: rows("4"), 15, "every combination's jobs ended")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-combinations.png"))
