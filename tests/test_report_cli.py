"""``batch.command=report`` end to end: the real CLI on real batches of the
sentiment_thresholds flow (the sentiment example under two VADER thresholds; embedded
queue and SQLite store; the report reads the store only, so one backend is enough). Its
JSON equals the service's Report (through the notebook API, the same service), its
figures what scikit-learn computes from the exported rows, its CSV those figures; bad
input is one ``error:`` line and exit 2."""

from __future__ import annotations

import csv
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, write_records
from sklearn.metrics import accuracy_score, cohen_kappa_score

from buttermilk import batches
from buttermilk.domain.evaluation import Report

pytestmark = pytest.mark.backends("local")

RECORDS = 20


def one_line_error(env: Env, *args: str) -> str:
    result = env.cli(*args)
    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and sum(ln.startswith("error: ") for ln in lines) == 1
    return lines[-1]


def sentiment_batch(env: Env, *args: str) -> str:
    """A batch of the sentiment_thresholds flow (two combinations, 0.05 and 0.3) over 20
    of the bundled reviews; returns its id."""
    reviews = env.data / "reviews.jsonl"
    if not reviews.exists():
        reviews.write_bytes((files("buttermilk.examples") / "reviews.jsonl").read_bytes())
    env.ok("flow=sentiment_thresholds", f"batch.max_records={RECORDS}", "batch.seed=5", *args)
    return env.store().list_batches(limit=1)[0].id


def service_report(env: Env, monkeypatch: pytest.MonkeyPatch, ids: list[str]) -> Report:
    """The same report from BatchService, in this process (the notebook API's path)."""
    monkeypatch.setenv("BUTTERMILK_HOME", str(env.home))
    monkeypatch.delenv("BUTTERMILK_DATA", raising=False)
    batches.configure()
    return batches.report(ids)


def without_time(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "generated_at"}


@pytest.mark.slow
def test_report_as_table_json_and_csv_of_a_real_batch(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exported = tmp_path / "rows.jsonl"
    batch_id = sentiment_batch(env, "batch.wait=true", f"batch.output={exported}")

    table = env.ok("batch.command=report", f"batch.batch_id={batch_id[:6]}").stdout
    for part in ("vader.label against ground_truth", "accuracy [95% CI]", "0.05", "0.3"):
        assert part in table, table
    for part in ("overall", "per class", "Krippendorff's alpha", "McNemar"):
        assert part in table, table
    assert "live" not in table

    found = env.ok("batch.command=report", "batch.format=json").json()  # the newest batch
    assert found["batch_ids"] == [batch_id] and found["live"] is False
    expected = service_report(env, monkeypatch, [batch_id]).model_dump(mode="json")
    assert without_time(found) == without_time(expected)

    # Its figures are scikit-learn's, from the exported rows.
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    by_key = {score["variant"]: score for score in found["combinations"]}
    assert set(by_key) == {"0.05", "0.3"}
    for key, score in by_key.items():
        mine = [r for r in rows if r["variant"] == key]
        truth = [r["ground_truth"] for r in mine]
        labels = [r["outputs"]["vader"]["label"] for r in mine]
        assert score["scored"] == len(mine) == RECORDS
        assert score["accuracy"]["estimate"] == pytest.approx(accuracy_score(truth, labels))
        assert score["cohen_kappa"] == pytest.approx(cohen_kappa_score(truth, labels))
    # Paired: both thresholds scored the same records; the stricter one never labels more
    # reviews positive or negative.
    scored = {key: {r["record_id"] for r in rows if r["variant"] == key} for key in by_key}
    assert scored["0.05"] == scored["0.3"]
    assert all(r["axes"] == {"vader.threshold": float(r["variant"])} for r in rows)
    polar = {
        key: sum(r["outputs"]["vader"]["label"] != "neutral" for r in rows if r["variant"] == key)
        for key in by_key
    }
    assert polar["0.3"] <= polar["0.05"]

    out = tmp_path / "scores" / "report.csv"
    result = env.ok("batch.command=report", f"batch.batch_id={batch_id}", f"batch.output={out}")
    assert result.stdout == ""
    assert f"wrote the report to {out}" in result.stderr
    with out.open(newline="") as fh:
        written = list(csv.DictReader(fh))
    assert [r["variant"] for r in written] == ["0.05", "0.3", "overall", "majority"]
    for row in written[:2]:
        score = by_key[row["variant"]]
        assert row["axes.vader.threshold"] == row["variant"]
        assert float(row["accuracy"]) == pytest.approx(score["accuracy"]["estimate"])
        assert float(row["accuracy_low"]) == pytest.approx(score["accuracy"]["low"])
        assert int(row["scored"]) == score["scored"]
    assert float(written[2]["accuracy"]) == pytest.approx(found["overall"]["accuracy"]["estimate"])

    error = one_line_error(env, "batch.command=report", "batch.evaluate={label: nope.x}")
    assert "'nope'" in error and "vader" in error  # the flow's agents
    # estimate makes create's check of the label too (before it counts anything)
    error = one_line_error(
        env, "flow=sentiment", "batch.command=estimate", "batch.evaluate={label: nope.x}"
    )
    assert "'nope'" in error and "vader" in error

    # A label path no finished job has: a warning naming the paths they do have.
    result = env.ok("batch.command=report", "batch.evaluate={label: vader.lable}")
    warnings = [line for line in result.stderr.splitlines() if "vader.lable" in line]
    assert len(warnings) == 1, result.stderr
    assert "no finished job has an output at vader.lable; outputs have: " in warnings[0]
    assert "vader.label" in warnings[0] and "vader.compound" in warnings[0]
    assert "warn" in warnings[0].lower()


@pytest.mark.slow
def test_batches_lined_up_one_still_running_scored_over_the_jobs_done(env: Env) -> None:
    first = sentiment_batch(env, "batch.wait=true")
    second = sentiment_batch(env, "batch.command=create", "batch.variants={vader.threshold: [0.5]}")
    env.ok("batch.command=run", "batch.max_jobs=10", "batch.worker_concurrency=1")

    found = env.ok(
        "batch.command=report", f"batch.batch_ids=[{second[:6]},{first}]", "batch.format=json"
    ).json()

    assert found["batch_ids"] == [second, first]
    assert found["live"] is True  # the second batch runs on
    assert found["jobs"] == 3 * RECORDS and found["finished"] == 2 * RECORDS + 10
    assert [(s["batch_id"], s["variant"], s["scored"]) for s in found["combinations"]] == [
        (second, "0.5", 10),
        (first, "0.05", RECORDS),
        (first, "0.3", RECORDS),
    ]
    assert found["overall"]["missing"]["not_finished"] == RECORDS - 10


@pytest.mark.slow
def test_nothing_to_score_and_mixed_flows_are_one_error_line_and_exit_2(env: Env) -> None:
    write_records(env.data / "records.jsonl", 4)
    plain = env.create("t_work")
    scored = sentiment_batch(env, "batch.command=create")

    error = one_line_error(env, "batch.command=report", f"batch.batch_id={plain}")
    assert f"batch {plain} declares nothing to score" in error
    error = one_line_error(env, "batch.command=report", f"batch.batch_ids=[{plain},{scored}]")
    assert "different flows" in error
