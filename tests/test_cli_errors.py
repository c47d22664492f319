"""Bad input: a one-line error naming the value and what is allowed, exit code 2, and
nothing half-created."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import get_args

import pytest
from conftest import Env, write_records

from buttermilk.domain import BatchRequest
from buttermilk.errors import InvalidOptionError
from buttermilk.records import Record
from buttermilk.runner.commands import check_batch_id_use, check_output_use, check_variant_use
from buttermilk.runner.settings import BatchSettings, Command

BAD_CREATES = [
    pytest.param(["flow=nope"], ["unknown flow 'nope'", "sentiment", "t_work"], id="unknown-flow"),
    pytest.param(
        ["flow=t_work", "batch.concurrency=0"],
        ["batch.concurrency=0", "greater than or equal to 1"],
        id="concurrency-0",
    ),
    pytest.param(
        ["flow=t_work", "batch.max_records=-1"],
        ["batch.max_records=-1", "greater than or equal to 1"],
        id="max-records--1",
    ),
    pytest.param(
        ["flow=t_work", "batch.error_policy=maybe"],
        ["batch.error_policy='maybe'", "'continue' or 'stop'"],
        id="error-policy-maybe",
    ),
    pytest.param(
        ["flow=t_missing"], ["file not found", "no-such-file.jsonl"], id="missing-data-file"
    ),
    pytest.param(
        ["flow=t_work", "batch.parameters={model:{_target_:os.system}}"],
        ["_target_ is not allowed in parameters", "parameters.model._target_"],
        id="target-in-parameters",
    ),
    pytest.param(
        ["flow=t_work", "batch.max_attempts=0"], ["batch.max_attempts=0"], id="max-attempts-0"
    ),
    pytest.param(["batch.command=create"], ["no flow given", "t_work"], id="no-flow"),
    pytest.param(
        ["flow=t_work", "batch.retry_delay=inf"],
        ["batch.retry_delay=inf is not allowed: input should be a finite number"],
        id="retry-delay-inf",
    ),
    pytest.param(
        ["flow=t_work", "batch.job_timeout=nan"],
        ["batch.job_timeout=nan is not allowed: input should be a finite number"],
        id="job-timeout-nan",
    ),
    pytest.param(
        ["flow=t_work", "batch.max_cost=inf"],
        ["batch.max_cost=inf is not allowed: input should be a finite number"],
        id="max-cost-inf",
    ),
    pytest.param(
        ["flow=t_work", "batch.max_records=true"],
        ["batch.max_records=True is not allowed: input should be a number, not true or false"],
        id="max-records-true",
    ),
    pytest.param(
        ["flow=t_work", "batch.flow=sentiment"],
        ["flow='t_work'", "batch.flow='sentiment'"],
        id="two-flows",
    ),
    pytest.param(
        ["flow=t_work", "batch.output=out.jsonl"],
        [
            "batch.output='out.jsonl' is not allowed: batch.command=create writes it only with "
            "batch.wait=true"
        ],
        id="output-without-wait",
    ),
    pytest.param(
        ["flow=t_work", "batch.output=out.xlsx", "batch.wait=true"],
        ["batch.output='out.xlsx'", ".jsonl, .csv or .parquet"],
        id="bad-output-extension",
    ),
]


def assert_one_line_error(env: Env, args: list[str], expected: list[str]) -> None:
    result = env.cli(*args)
    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], str(result)
    for part in expected:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"


def assert_nothing_created(env: Env) -> None:
    assert env.store().list_batches() == []
    assert env.queue_depth() == 0


# Refusals happen before the queue or the store is touched, alike on every backend: these
# also run on Pub/Sub + PostgreSQL, one of each kind (a flow, its data, a value, code).
ON_EVERY_BACKEND = {"unknown-flow", "missing-data-file", "retry-delay-inf", "target-in-parameters"}


@pytest.mark.backends("local")
@pytest.mark.parametrize(("args", "expected"), BAD_CREATES)
def test_a_bad_create_exits_2_with_one_line_and_creates_nothing(
    env: Env, args: list[str], expected: list[str]
) -> None:
    write_records(env.data / "records.jsonl", 5)

    assert_one_line_error(env, args, expected)

    assert_nothing_created(env)


@pytest.mark.backends("pubsub")
@pytest.mark.parametrize(("args", "expected"), [p for p in BAD_CREATES if p.id in ON_EVERY_BACKEND])
def test_a_bad_create_on_pub_sub_and_postgresql_creates_nothing_either(
    env: Env, args: list[str], expected: list[str]
) -> None:
    write_records(env.data / "records.jsonl", 5)

    assert_one_line_error(env, args, expected)

    assert_nothing_created(env)


def test_an_output_that_cannot_be_written_is_refused_before_anything_is_created(env: Env) -> None:
    write_records(env.data / "records.jsonl", 5)
    inside_a_file = env.data / "records.jsonl" / "out.jsonl"

    assert_one_line_error(
        env,
        ["flow=t_work", "batch.wait=true", f"batch.output={inside_a_file}"],
        ["batch.output=", "cannot create its folder"],
    )

    assert_nothing_created(env)


def test_a_store_that_cannot_be_opened_is_a_one_line_error_with_exit_1(env: Env) -> None:
    blocker = env.data / "a-file"
    blocker.write_text("")

    result = env.cli("batch.command=list", f"store.url=sqlite:///{blocker}/batches.db")

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        line for line in result.stderr.strip().splitlines() if line.startswith("error: ")
    ]
    assert "cannot open the batch store" in result.stderr


def test_duplicate_record_ids_are_refused_naming_them(env: Env) -> None:
    (env.data / "records.jsonl").write_text(
        '{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n{"id": "a", "text": "three"}\n'
    )

    assert_one_line_error(env, ["flow=t_work"], ["duplicate record ids", "'a'", "records.jsonl:3"])

    assert_nothing_created(env)


@pytest.mark.backends("local")  # decided before the queue or store is used
@pytest.mark.parametrize("command", ["status", "cancel", "retry", "export", "report"])
def test_an_unknown_batch_id_exits_2_naming_it(env: Env, command: str) -> None:
    output = ["batch.output=x.jsonl"] if command == "export" else []
    assert_one_line_error(
        env,
        [f"batch.command={command}", "batch.batch_id=zz404", *output],
        ["unknown batch id 'zz404'"],
    )


@pytest.mark.parametrize("command", [c for c in get_args(Command) if c not in ("export", "report")])
@pytest.mark.parametrize("wait", [False, True])
def test_an_output_is_refused_by_every_command_that_would_not_write_it(
    command: Command, wait: bool
) -> None:
    batch = BatchSettings(output=Path("x.jsonl"), wait=wait)
    if wait and command in ("create", "retry"):
        check_output_use(command, batch)  # written once the batch ends
        return

    with pytest.raises(InvalidOptionError) as caught:
        check_output_use(command, batch)

    assert str(caught.value).startswith("batch.output='x.jsonl' is not allowed: ")
    if command in ("create", "retry"):
        assert f"batch.command={command} writes it only with batch.wait=true" in str(caught.value)
    else:
        assert f"batch.command={command} writes no file" in str(caught.value)


@pytest.mark.parametrize("command", [c for c in get_args(Command) if c != "retry"])
def test_a_variant_is_refused_by_every_command_but_retry(command: Command) -> None:
    batch = BatchSettings(variant="strict+0.1")
    check_variant_use("retry", batch)

    with pytest.raises(InvalidOptionError) as caught:
        check_variant_use(command, batch)

    assert str(caught.value).startswith("batch.variant='strict+0.1' is not allowed: ")
    assert f"batch.command={command} works on every combination" in str(caught.value)


@pytest.mark.parametrize("command", ["create", "run", "list", "estimate"])
def test_a_batch_id_is_refused_by_every_command_that_would_ignore_it(command: Command) -> None:
    batch = BatchSettings(batch_id="k3f9")
    for taking in ("status", "cancel", "retry", "export", "report"):
        check_batch_id_use(taking, batch)  # type: ignore[arg-type]

    with pytest.raises(InvalidOptionError) as caught:
        check_batch_id_use(command, batch)

    assert str(caught.value).startswith("batch.batch_id='k3f9' is not allowed: ")
    assert f"batch.command={command} does not work on one given batch" in str(caught.value)


@pytest.mark.backends("local")  # decided before the queue or store is used
def test_a_worker_given_a_batch_id_is_refused_in_one_line_not_left_to_run_every_batch(
    env: Env,
) -> None:
    assert_one_line_error(
        env,
        ["batch.command=run", "batch.batch_id=k3f9"],
        ["batch.batch_id='k3f9'", "batch.command=run", "batch.wait=true"],
    )


@pytest.mark.parametrize("command", ["export", "report"])
def test_export_and_report_take_an_output_whether_waiting_or_not(command: Command) -> None:
    for wait in (False, True):
        check_output_use(command, BatchSettings(output=Path("x.jsonl"), wait=wait))


@pytest.mark.backends("local")  # decided before the queue or store is used
@pytest.mark.parametrize("command", ["cancel", "retry", "export"])
def test_commands_on_one_batch_need_its_id(env: Env, command: str) -> None:
    assert_one_line_error(
        env, [f"batch.command={command}"], [f"batch.command={command} needs batch.batch_id"]
    )


@pytest.mark.backends("local")  # decided before the queue or store is used
def test_an_unknown_command_is_refused_with_the_allowed_ones(env: Env) -> None:
    assert_one_line_error(
        env, ["batch.command=frobnicate"], ["batch.command='frobnicate'", "'create'", "'export'"]
    )


@pytest.mark.backends("local")  # decided before the queue or store is used
def test_an_unknown_option_is_refused_by_hydra_with_exit_code_2(env: Env) -> None:
    result = env.cli("batch.colour=blue")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: batch.colour is not a known option"]


@pytest.mark.backends("local")
def test_an_output_that_is_a_directory_is_refused_before_anything_is_created(env: Env) -> None:
    write_records(env.data / "records.jsonl", 5)
    folder = env.data / "out.jsonl"
    folder.mkdir()

    assert_one_line_error(
        env,
        ["flow=t_work", "batch.wait=true", f"batch.output={folder}"],
        [f"batch.output='{folder}' is not allowed: {folder} is a directory"],
    )

    assert_nothing_created(env)
    assert_one_line_error(
        env,
        ["batch.command=export", "batch.batch_id=zz404", f"batch.output={folder}"],
        ["unknown batch id 'zz404'"],
    )


@pytest.mark.backends("local")
def test_a_refused_create_leaves_no_folder_of_its_output_behind(env: Env) -> None:
    out = env.data / "new" / "deep" / "out.jsonl"

    assert_one_line_error(
        env, ["flow=nope", "batch.wait=true", f"batch.output={out}"], ["unknown flow 'nope'"]
    )

    assert not (env.data / "new").exists()


@pytest.mark.backends("local")
def test_export_makes_the_missing_folders_of_its_output(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)
    batch_id = env.create("t_work")
    out = env.data / "new" / "deep" / "out.csv"

    env.ok("batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={out}")

    assert len(out.read_text().splitlines()) == 1 + 3


def test_an_ambiguous_batch_id_prefix_lists_the_matches(env: Env) -> None:
    store = env.store()
    for batch_id in ("kab123", "kab456"):
        store.create_batch(
            batch_id=batch_id,
            request=BatchRequest(flow="t_work"),
            flow_snapshot={},
            seed=1,
            records=[Record(record_id="r1", content="x")],
        )

    assert_one_line_error(
        env,
        ["batch.command=status", "batch.batch_id=kab"],
        ["batch id prefix 'kab' matches several batches", "kab123", "kab456"],
    )
    assert "kab456" in env.ok("batch.command=status", "batch.batch_id=kab4").stdout


@pytest.mark.backends("local")
def test_a_corrupt_queue_file_blocks_only_the_commands_that_use_the_queue(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)
    batch_id = env.create("t_work")
    for leftover in env.home.glob("queue.db*"):
        leftover.unlink()
    (env.home / "queue.db").write_bytes(b"this is not a database" * 10)
    out = env.data / "out.jsonl"

    listed = env.ok("batch.command=list", "batch.format=json").json()
    shown = env.ok("batch.command=status", f"batch.batch_id={batch_id}", "batch.format=json")
    env.ok("batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={out}")
    worker = env.cli("batch.command=run")

    assert [b["batch_id"] for b in listed] == [batch_id]
    assert shown.json()["total"] == 3
    assert len(out.read_text().splitlines()) == 3
    assert worker.returncode == 1, str(worker)
    assert worker.stderr.strip().splitlines()[-1] == (
        f"error: cannot open the local queue at {env.home / 'queue.db'}: file is not a database"
    )


@pytest.mark.backends("local")
def test_output_into_a_pipe_its_reader_closed_ends_quietly_with_141(env: Env) -> None:
    """``bm ... | head`` that stopped reading (here ``true``, which reads nothing): no
    ``error:`` line for the broken pipe, exit 128 + SIGPIPE as a shell expects."""
    command = " ".join(
        shlex.quote(arg) for arg in env.args("batch.command=list", "batch.format=json")
    )
    proc = subprocess.run(
        ["bash", "-c", f'{command} | true; echo "exit ${{PIPESTATUS[0]}}" >&2'],
        env=env.environ,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.stderr.strip().splitlines()[-1] == "exit 141", proc.stderr
    assert "error:" not in proc.stderr and "Traceback" not in proc.stderr
