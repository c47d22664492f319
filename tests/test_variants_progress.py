"""Progress per combination through the CLI: ``status`` and ``list`` (table and JSON), and
``retry`` limited to one combination, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Env, write_records

from buttermilk.domain import JobStatus

# Two axes: an agent option (check.message) and a flow parameter (fail_on). The
# combinations that fail on r00001 fail it in both repeats.
VARIANTS = "batch.variants={check.message: [alpha, beta], fail_on: [[], [r00001]]}"
KEYS = ["alpha+[]", 'alpha+["r00001"]', "beta+[]", 'beta+["r00001"]']
NO_RETRIES = ("batch.max_attempts=1", "batch.retry_delay=0", "batch.shuffle=false")


def counts(completed: int = 0, failed: int = 0, pending: int = 0) -> dict[str, int]:
    return {
        "pending": pending,
        "running": 0,
        "completed": completed,
        "failed": failed,
        "cancelled": 0,
    }


def by_variant(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["variant"]: c for c in summary["combinations"]}


@pytest.mark.backends("local")  # per-combination counts on PostgreSQL: test_variants.py
def test_status_and_list_show_each_combination_with_its_values_and_counts(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)

    created = env.cli(
        "flow=t_work", VARIANTS, "batch.repeats=2", *NO_RETRIES, "batch.wait=true",
        "batch.format=json",
    )  # fmt: skip

    assert created.returncode == 3, str(created)  # completed, with failed jobs
    summary = created.json()
    assert summary["total"] == 3 * 4 * 2
    assert summary["variants"] == {"check.message": ["alpha", "beta"], "fail_on": [[], ["r00001"]]}
    assert summary["repeats"] == 2 and summary["combination_count"] == 4
    assert [c["variant"] for c in summary["combinations"]] == KEYS  # planned order
    found = by_variant(summary)
    assert found['beta+["r00001"]']["values"] == {"check.message": "beta", "fail_on": ["r00001"]}
    for key in KEYS:
        failing = key.endswith('["r00001"]')
        expected = counts(completed=4, failed=2) if failing else counts(completed=6)
        assert found[key]["counts"] == expected, key
        assert (found[key]["total"], found[key]["done"], found[key]["progress"]) == (6, 6, 1)

    plain = env.create("t_work", *NO_RETRIES)  # no axes, no repeats: one combination
    listed = env.ok("batch.command=list", "batch.format=json").json()
    table = env.ok("batch.command=status", f"batch.batch_id={summary['batch_id']}").stdout

    assert [b["batch_id"] for b in listed] == [plain, summary["batch_id"]]
    assert [(b["combination_count"], b["repeats"]) for b in listed] == [(1, 1), (4, 2)]
    assert all(b["combinations"] is None for b in listed)  # list reads no job twice
    rows = {line.split()[0]: line.split() for line in table.splitlines() if "+" in line}
    assert set(rows) == set(KEYS), table
    assert rows['alpha+["r00001"]'][1:5] == ["alpha", '["r00001"]', "6/6", "100%"], table
    assert 'check.message: alpha, beta; fail_on: [], ["r00001"]' in table


@pytest.mark.backends("local")  # per-combination counts on PostgreSQL: test_variants.py
def test_retry_of_one_combination_requeues_only_its_jobs(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)
    broken = env.data / "broken"
    broken.touch()  # r00001 fails while this file exists
    batch_id = env.create(
        "t_work",
        "batch.variants={check.message: [alpha, beta]}",
        f"batch.parameters={{fail_on: [r00001], fail_while: '{broken}'}}",
        *NO_RETRIES,
    )
    ran = env.cli("batch.command=run", "batch.idle_timeout=0.5")
    assert ran.returncode == 0, str(ran)
    failed = {k: c.get(JobStatus.FAILED) for k, c in env.store().variant_counts(batch_id).items()}
    assert failed == {"alpha": 1, "beta": 1}
    broken.unlink()

    unknown = env.cli("batch.command=retry", f"batch.batch_id={batch_id}", "batch.variant=gamma")
    retried = env.cli(
        "batch.command=retry", f"batch.batch_id={batch_id}", "batch.variant=alpha",
        "batch.wait=true", "batch.format=json",
    )  # fmt: skip

    assert unknown.returncode == 2, str(unknown)
    assert unknown.stderr.strip().splitlines() == [
        f"error: batch.variant='gamma': batch {batch_id} has no such combination "
        "(its combinations: alpha, beta)"
    ]
    assert retried.returncode == 3, str(retried)  # beta's failure stays
    assert "requeued 1 jobs" in retried.stderr
    found = by_variant(retried.json())
    assert found["alpha"]["counts"] == counts(completed=3)
    assert found["beta"]["counts"] == counts(completed=2, failed=1)  # left as it was
    job = env.store().get_job(batch_id, "r00001", "beta", 0)
    assert job.attempts == 1 and job.error_type == "AgentError"
