"""``batch.command=report`` end to end: the real CLI on real batches of the sentiment flow
(embedded queue and SQLite store; the report reads the store only, so one backend is
enough). Its JSON equals the service's Report (through the notebook API, the same
service), its figures what scikit-learn computes from the exported rows, its CSV those
figures; bad input is one ``error:`` line and exit 2."""

from __future__ import annotations

import csv
import json
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
    env.ok("flow=sentiment", f"batch.max_records={RECORDS}", "batch.seed=5", *args)
    return env.store().list_batches(limit=1)[0].id


def service_report(env: Env, monkeypatch: pytest.MonkeyPatch, ids: list[str]) -> Report:
    """The same report from BatchService, in this process (the notebook API's path)."""
    monkeypatch.setenv("BUTTERMILK_HOME", str(env.home))
    monkeypatch.delenv("BUTTERMILK_DATA", raising=False)
    batches.configure()
    return batches.report(ids)


def without_time(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "generated_at"}


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

    as_json = tmp_path / "report.json"
    env.ok("batch.command=report", f"batch.output={as_json}")
    assert without_time(json.loads(as_json.read_text())) == without_time(found)


def test_a_running_batch_is_scored_over_the_jobs_done_so_far(env: Env) -> None:
    batch_id = sentiment_batch(env, "batch.command=create")
    env.ok("batch.command=run", "batch.max_jobs=10", "batch.worker_concurrency=1")

    found = env.ok("batch.command=report", "batch.format=json").json()
    table = env.ok("batch.command=report", f"batch.batch_id={batch_id}").stdout

    assert found["live"] is True
    assert found["jobs"] == 2 * RECORDS and found["finished"] == 10
    assert found["overall"]["scored"] == 10
    assert found["overall"]["missing"]["not_finished"] == 2 * RECORDS - 10
    assert f"live: 10 of {2 * RECORDS} jobs finished" in " ".join(table.split())


def test_several_batches_of_a_flow_are_lined_up(env: Env) -> None:
    first = sentiment_batch(env, "batch.wait=true")
    second = sentiment_batch(env, "batch.wait=true", "batch.variants={vader.threshold: [0.5]}")

    found = env.ok(
        "batch.command=report", f"batch.batch_ids=[{second[:6]},{first}]", "batch.format=json"
    ).json()
    table = env.ok("batch.command=report", f"batch.batch_ids=[{first},{second}]").stdout

    assert found["batch_ids"] == [second, first]
    assert [(s["batch_id"], s["variant"]) for s in found["combinations"]] == [
        (second, "0.5"),
        (first, "0.05"),
        (first, "0.3"),
    ]
    assert found["overall"]["jobs"] == 3 * RECORDS
    assert "batches" in table and first in table and second in table


def test_bad_report_requests_are_one_error_line_and_exit_2(env: Env, tmp_path: Path) -> None:
    write_records(env.data / "records.jsonl", 4)
    plain = env.create("t_work")
    scored = sentiment_batch(env, "batch.command=create")

    error = one_line_error(env, "batch.command=report", f"batch.batch_id={plain}")
    assert f"batch {plain} declares nothing to score" in error
    error = one_line_error(
        env, "batch.command=report", f"batch.batch_id={scored}", "batch.evaluate={label: nope.x}"
    )
    assert "batch.evaluate.label='nope.x'" in error or "'nope'" in error
    assert "vader" in error  # the flow's agents
    error = one_line_error(env, "batch.command=report", "batch.evaluate={lable: vader.label}")
    assert "batch.evaluate.lable is not a known option (did you mean batch.evaluate.label?)" in (
        error
    )
    error = one_line_error(env, "batch.command=report", f"batch.batch_ids=[{plain},{scored}]")
    assert "different flows" in error
    error = one_line_error(env, "batch.command=report", "batch.batch_ids=[zz404]")
    assert "zz404" in error
    error = one_line_error(env, "batch.command=report", f"batch.output={tmp_path / 'r.txt'}")
    assert "the file must end in .json, .csv or .html" in error
    error = one_line_error(env, "batch.command=status", f"batch.batch_ids=[{plain}]")
    assert "batch.batch_ids is for report" in error
    assert not (tmp_path / "r.txt").exists()
