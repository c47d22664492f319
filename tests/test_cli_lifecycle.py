"""A batch's whole life through real CLI processes: create, run, wait, status, export,
cancel, retry, and both error policies."""

from __future__ import annotations

import csv
import json
import shutil
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import Env, stop_process, wait_until, write_records

from buttermilk.domain import JobStatus
from buttermilk.runner.hydra_flows import examples_dir


def test_example_flow_is_created_run_reported_and_exported(env: Env, tmp_path: Path) -> None:
    shutil.copy(Path(examples_dir()) / "reviews.jsonl", env.data)  # the flow reads $BUTTERMILK_DATA
    batch_id = env.create("sentiment", "batch.max_records=20", "batch.concurrency=4")
    assert env.batch_status(batch_id) == "pending"

    run = env.ok("batch.command=run", "batch.idle_timeout=0.5", "batch.format=json").json()

    # The plain example compares nothing: one job per record.
    assert run["completed"] == 20 and run["failed"] == 0
    status = env.status(batch_id)
    assert status["status"] == "completed"
    assert status["counts"] == {
        "pending": 0,
        "running": 0,
        "completed": 20,
        "failed": 0,
        "cancelled": 0,
    }
    table = env.ok("batch.command=status", f"batch.batch_id={batch_id[:5]}").stdout
    assert batch_id in table and "completed" in table

    out = tmp_path / "results.jsonl"
    env.ok("batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={out}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 20
    assert {r["batch_id"] for r in rows} == {batch_id}
    assert len({r["record_id"] for r in rows}) == 20
    assert {(r["variant"], r["repeat"], r["axes"]) for r in rows} == {("default", 0, None)}
    first = rows[0]
    assert first["outputs"]["vader"]["label"] in {"positive", "negative", "neutral"}
    assert set(first["outputs"]["topics"]["counts"]) == {"price", "quality", "delivery", "service"}
    assert first["ground_truth"] in {"positive", "negative", "neutral"}


def test_export_writes_csv_and_parquet_with_flattened_outputs(env: Env, tmp_path: Path) -> None:
    write_records(env.data / "records.jsonl", 6)
    batch_id = env.create("t_work")
    env.ok("batch.command=run", "batch.idle_timeout=0.5")

    env.ok(
        "batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={tmp_path / 'r.csv'}"
    )
    env.ok(
        "batch.command=export",
        f"batch.batch_id={batch_id}",
        f"batch.output={tmp_path / 'r.parquet'}",
    )

    with (tmp_path / "r.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    assert {"batch_id", "record_id", "outputs.wait.slept", "outputs.check.failed"} <= set(rows[0])
    table = pq.read_table(tmp_path / "r.parquet").to_pylist()
    assert sorted(r["record_id"] for r in table) == sorted(r["record_id"] for r in rows)
    assert all(r["batch_id"] == batch_id for r in table)


def test_without_a_command_the_cli_creates_when_a_flow_is_named_and_runs_otherwise(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 3)

    created = env.ok("flow=t_work")
    ran = env.ok("batch.idle_timeout=0.5")

    assert "created batch" in created.stderr and "3 jobs of flow t_work" in created.stderr
    assert "taking jobs from the" in ran.stderr
    assert "3 completed" in ran.stdout


def test_wait_blocks_until_a_worker_in_another_process_finishes_the_batch(env: Env) -> None:
    write_records(env.data / "records.jsonl", 30)
    with env.worker("batch.worker_concurrency=10"):
        waited = env.cli(
            "flow=t_work",
            "batch.wait=true",
            "batch.concurrency=5",
            "batch.parameters={sleep:0.05}",
            "batch.format=json",
        )
    assert waited.returncode == 0, str(waited)
    summary = waited.json()
    assert summary["status"] == "completed"
    assert summary["counts"]["completed"] == 30
    log = (env.home / "worker.log").read_text()
    assert "completed" in log


def test_wait_on_the_embedded_queue_works_the_batch_itself(env: Env, tmp_path: Path) -> None:
    write_records(env.data / "records.jsonl", 12)
    out = tmp_path / "out.jsonl"

    waited = env.ok("flow=t_work", "batch.wait=true", f"batch.output={out}")

    assert "completed" in waited.stdout
    assert waited.stderr.strip().splitlines()[-1].endswith("completed: 12 of 12 jobs completed")
    assert len(out.read_text().splitlines()) == 12


def test_cancel_mid_run_stops_running_jobs_within_seconds(env: Env) -> None:
    write_records(env.data / "records.jsonl", 40)
    batch_id = env.create("t_work", "batch.concurrency=4", "batch.parameters={sleep:30}")
    with env.worker("batch.grace_period=2"):
        wait_until(lambda: env.counts(batch_id)["running"] == 4, 30, "4 jobs running")

        cancelled = env.ok(
            "batch.command=cancel", f"batch.batch_id={batch_id}", "batch.format=json"
        ).json()
        assert cancelled["status"] == "cancelled"

        wait_until(lambda: env.counts(batch_id)["running"] == 0, 10, "running jobs cancelled")
        final = env.counts(batch_id)
        assert final["cancelled"] == 40 and final["completed"] == 0
        again = env.ok("batch.command=cancel", f"batch.batch_id={batch_id}")
        assert "already cancelled" in again.stderr


def test_continue_policy_finishes_the_batch_with_the_failed_record_counted(env: Env) -> None:
    write_records(env.data / "records.jsonl", 10)
    batch_id = env.create(
        "t_work",
        "batch.parameters={fail_on:[r00003]}",
        "batch.max_attempts=2",
        "batch.retry_delay=0.1",
    )

    env.ok("batch.command=run", "batch.idle_timeout=1")

    status = env.status(batch_id)
    assert status["status"] == "completed"
    assert status["counts"]["completed"] == 9 and status["counts"]["failed"] == 1
    [error] = status["common_errors"]
    assert error["error_type"] == "AgentError" and "r00003" in error["error_message"]
    job = env.store().get_job(batch_id, "r00003")
    assert job.status == JobStatus.FAILED and job.attempts == 2
    assert job.traceback and "agents/testing.py" in job.traceback


def test_stop_policy_fails_the_batch_and_starts_no_further_job(env: Env) -> None:
    write_records(env.data / "records.jsonl", 50)
    batch_id = env.create(
        "t_work",
        "batch.shuffle=false",
        "batch.error_policy=stop",
        "batch.max_attempts=1",
        "batch.concurrency=1",
        "batch.parameters={fail_on:[r00002]}",
    )

    env.ok("batch.command=run", "batch.idle_timeout=0.5")

    status = env.status(batch_id)
    assert status["status"] == "failed"
    assert "r00002" in status["error"]
    counts = status["counts"]
    assert counts["failed"] == 1
    assert counts["completed"] + counts["cancelled"] == 49 and counts["cancelled"] > 0
    jobs = {job.record_id: job for job in env.store().iter_jobs(batch_id)}
    failed_at = jobs["r00002"].finished_at
    assert failed_at is not None
    started = [j.started_at for j in jobs.values() if j.status == JobStatus.COMPLETED]
    assert all(t is not None and t < failed_at for t in started), "a job started after the stop"
    if env.backend.name == "local":  # a FIFO queue: exactly the two planned before it ran
        assert counts["completed"] == 2
    assert (
        env.ok("batch.command=run", "batch.idle_timeout=0.5", "batch.format=json").json()[
            "completed"
        ]
        == 0
    )


def test_retry_requeues_failed_jobs_and_they_complete_once_fixed(env: Env) -> None:
    write_records(env.data / "records.jsonl", 8)
    switch = env.data / "broken"
    switch.touch()
    batch_id = env.create(
        "t_work",
        "batch.max_attempts=1",
        f"batch.parameters={{fail_on:[r00001,r00005],fail_while:'{switch}'}}",
    )
    env.ok("batch.command=run", "batch.idle_timeout=0.5")
    assert env.counts(batch_id)["failed"] == 2

    switch.unlink()
    retried = env.ok(
        "batch.command=retry", f"batch.batch_id={batch_id}", "batch.wait=true", "batch.format=json"
    )

    assert "requeued 2 jobs" in retried.stderr
    summary = retried.json()
    assert summary["status"] == "completed"
    assert summary["counts"]["completed"] == 8 and summary["counts"]["failed"] == 0
    nothing = env.cli("batch.command=retry", f"batch.batch_id={batch_id}")
    assert nothing.returncode == 2 and "nothing to retry" in nothing.stderr


def test_list_shows_batches_newest_first_with_their_progress(env: Env) -> None:
    write_records(env.data / "records.jsonl", 4)
    first = env.create("t_work")
    second = env.create("t_work", "batch.max_records=2")

    listed = env.ok("batch.command=list", "batch.format=json").json()
    table = env.ok("batch.command=list").stdout

    assert [b["batch_id"] for b in listed] == [second, first]
    assert [b["total"] for b in listed] == [2, 4]
    assert first in table and second in table and "pending" in table


@pytest.mark.slow
def test_a_worker_stops_gracefully_on_sigterm_and_releases_unfinished_jobs(env: Env) -> None:
    write_records(env.data / "records.jsonl", 6)
    batch_id = env.create("t_work", "batch.concurrency=2", "batch.parameters={sleep:60}")
    worker = env.popen(
        "batch.command=run", "batch.grace_period=1", "batch.idle_timeout=null", log_name="w1"
    )
    try:
        wait_until(lambda: env.counts(batch_id)["running"] == 2, 30, "2 jobs running")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        stop_process(worker)

    after = env.counts(batch_id)
    assert after["running"] == 0 and after["pending"] == 6
    jobs = list(env.store().iter_jobs(batch_id))
    assert all(job.attempts == 0 for job in jobs), "a release must not spend an attempt"
    # Released at once: another worker takes them now, not when the 30 s lease would end.
    second = env.popen(
        "batch.command=run", "batch.grace_period=0", "batch.idle_timeout=null", log_name="w2"
    )
    try:
        wait_until(lambda: env.counts(batch_id)["running"] == 2, 10, "released jobs running again")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0


def test_on_sigterm_running_jobs_finish_within_the_grace_period(env: Env) -> None:
    write_records(env.data / "records.jsonl", 2)
    batch_id = env.create("t_work", "batch.concurrency=2", "batch.parameters={sleep:2}")
    worker = env.popen(
        "batch.command=run", "batch.grace_period=20", "batch.idle_timeout=null", log_name="w"
    )
    try:
        wait_until(lambda: env.counts(batch_id)["running"] == 2, 30, "2 jobs running")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        stop_process(worker)
    assert env.counts(batch_id)["completed"] == 2
    assert env.batch_status(batch_id) == "completed"


def test_a_job_over_its_time_limit_fails_with_a_timeout_error(env: Env) -> None:
    write_records(env.data / "records.jsonl", 1)
    batch_id = env.create(
        "t_work", "batch.job_timeout=0.5", "batch.max_attempts=1", "batch.parameters={sleep:30}"
    )

    env.ok("batch.command=run", "batch.idle_timeout=0.5")

    job = env.store().get_job(batch_id, "r00000")
    assert job.status == JobStatus.FAILED and job.error_type == "JobTimeoutError"
    assert job.duration is not None and job.duration < 5


def test_users_add_flows_and_agents_from_their_own_config_dir(env: Env, tmp_path: Path) -> None:
    write_records(env.data / "records.jsonl", 3)
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "agents.py").write_text(
        "def shout(record, outputs, parameters, suffix='!'):\n"
        "    return {'text': str(record.content).upper() + suffix * parameters['times']}\n"
    )
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True)
    (flows / "loud.yaml").write_text(
        "description: Upper-case every record.\n"
        "data:\n"
        "  things: {type: file, path: '${oc.env:BUTTERMILK_DATA}/records.jsonl'}\n"
        "agents:\n"
        "  - {name: shout, _target_: userpkg.agents.shout, suffix: '?'}\n"
        "parameters: {times: 1}\n"
    )
    env.extra["PYTHONPATH"] = str(tmp_path)
    env.base_args = ["--config-dir", str(tmp_path / "myconf")]

    done = env.ok(
        "flow=loud", "batch.wait=true", "batch.parameters={times:2}", "batch.format=json"
    ).json()

    assert done["status"] == "completed" and done["flow"] == "loud"
    job = env.store().get_job(done["batch_id"], "r00001")
    assert job.result is not None
    assert job.result["outputs"]["shout"]["text"] == "RECORD R00001: LOVE IT, GREAT VALUE??"
    unknown = env.cli("flow=quiet")
    assert unknown.returncode == 2 and "loud" in unknown.stderr and "sentiment" in unknown.stderr
