"""A store the user did not break: one line and exit 1, never a traceback or the values of
an SQL statement. A stored batch this version refuses: it still lists and shows, and no
worker runs it as if it were what was asked. A store URL that names no usable database:
one line and exit 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Env, write_records
from sqlalchemy import event, select, update

from buttermilk.domain import BatchRequest
from buttermilk.errors import InvalidOptionError, StoreError, StoreValueError, UsageError
from buttermilk.records import Record
from buttermilk.store.schema import batches
from buttermilk.store.store import Store
from buttermilk.store.url import check_url, hide_password

SECRET_TEXT = "lorem ipsum private record text"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        url = str(request.getfixturevalue("postgres_url"))
    else:
        url = f"sqlite:///{tmp_path}/batches.db"
    s = Store(url)
    yield s
    s.close()


def records(count: int, text: str = SECRET_TEXT) -> list[Record]:
    return [Record(record_id=f"r{i:05d}", content=f"{text} {i}") for i in range(count)]


def create(store: Store, batch_id: str, count: int = 3, **request: Any) -> None:
    store.create_batch(
        batch_id=batch_id,
        request=BatchRequest(flow="t_work", **request),
        flow_snapshot={},
        seed=1,
        records=records(count),
    )


def assert_one_error_line(stderr: str, *parts: str) -> str:
    """One ``error:`` line, last, after nothing but log lines: no traceback."""
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], stderr
    assert "Traceback" not in stderr, stderr
    for part in parts:
        assert part in errors[0], errors[0]
    return errors[0]


# -- failures of the database ----------------------------------------------------------


def test_a_failed_statement_says_the_drivers_message_and_never_its_values(store: Store) -> None:
    create(store, "kdup00000000")

    with pytest.raises(StoreError) as caught:
        create(store, "kdup00000000", count=50)

    message = str(caught.value)
    assert message.startswith("cannot store the new batch (50 jobs): ")
    assert "unique" in message.lower() or "duplicate" in message.lower(), message
    assert SECRET_TEXT not in message and "INSERT" not in message and "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert [b.id for b in store.list_batches()] == ["kdup00000000"]  # the first is intact


def test_a_full_disk_while_storing_is_one_line_and_leaves_no_batch(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    # SQLite's own "database or disk is full", as on a full disk, once the file would grow.
    event.listen(
        store.engine,
        "connect",
        lambda conn, _record: conn.execute("PRAGMA max_page_count=40"),
    )
    store.engine.dispose()

    with pytest.raises(StoreError) as caught:
        create(store, "kfull0000000", count=2_000)

    assert str(caught.value) == "cannot store the new batch (2,000 jobs): database or disk is full"
    assert store.list_batches() == []
    store.close()


def test_a_value_postgresql_cannot_hold_is_the_users_to_change(postgres_url: str) -> None:
    store = Store(postgres_url)
    # Text columns hold no NUL character (values keep NUL inside JSON, not in an id): the
    # job streams to PostgreSQL with COPY, whose errors come from the driver itself.
    bad = [Record(record_id="r1 \x00 end", content=SECRET_TEXT)]

    with pytest.raises(StoreValueError) as caught:
        store.create_batch(
            batch_id="knul00000000",
            request=BatchRequest(flow="t_work"),
            flow_snapshot={},
            seed=1,
            records=bad,
        )

    assert isinstance(caught.value, UsageError)
    assert str(caught.value).startswith("cannot store the new batch (1 jobs): ")
    assert SECRET_TEXT not in str(caught.value) and "\n" not in str(caught.value)
    assert store.list_batches() == []
    store.close()


@pytest.mark.backends("local")
def test_a_store_file_sqlite_cannot_read_is_one_line_and_exit_1_for_every_command(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 5)
    env.create("t_work")
    db = env.home / "batches.db"
    with db.open("r+b") as fh:
        fh.truncate(1000)
    for extra in ("batches.db-wal", "batches.db-shm"):
        (env.home / extra).unlink(missing_ok=True)

    for command in (
        ["batch.command=list"],
        ["batch.command=status"],
        ["batch.command=run", "batch.idle_timeout=1"],
        ["flow=t_work"],
    ):
        result = env.cli(*command)

        assert result.returncode == 1, str(result)
        assert_one_error_line(
            result.stderr, f"error: cannot open the batch store at sqlite:///{db}: "
        )


# -- stored batches this version refuses -------------------------------------------------


def damage(env: Env, batch_id: str, **values: Any) -> None:
    """Write a request as an older or faulty version could have (no validation)."""
    store = env.store()
    with store.engine.begin() as conn:
        stored = conn.execute(select(batches.c.request).where(batches.c.id == batch_id)).scalar()
        conn.execute(
            update(batches).where(batches.c.id == batch_id).values(request={**stored, **values})
        )


@pytest.mark.backends("local")  # the same code on every backend
def test_a_stored_request_this_version_refuses_still_lists_and_no_worker_runs_it(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 4)
    healthy = env.create("t_work")
    damaged = env.create("t_work")
    cancelled = env.create("t_work")
    damage(env, damaged, retry_delay=None)  # what inf became, stored by an older version
    damage(env, cancelled, concurrency="x", max_attempts=0)

    listed = {b["batch_id"]: b for b in env.ok("batch.command=list", "batch.format=json").json()}
    assert set(listed) == {healthy, damaged, cancelled}
    assert listed[healthy]["request_error"] is None and listed[healthy]["error"] is None
    problem = "its stored request cannot be used: retry_delay=None (input should be a valid number"
    assert listed[damaged]["request_error"].startswith(problem)
    assert listed[damaged]["error"] == listed[damaged]["request_error"]
    assert listed[damaged]["request"]["retry_delay"] is None  # shown as stored
    assert "concurrency='x'" in listed[cancelled]["error"]
    assert "max_attempts=0" in listed[cancelled]["error"]
    shown = env.ok("batch.command=status", f"batch.batch_id={damaged}").stdout
    assert "its stored request cannot be used" in " ".join(shown.split())
    env.ok("batch.command=cancel", f"batch.batch_id={cancelled}")
    assert env.batch_status(cancelled) == "cancelled"

    worker = env.ok("batch.command=run", "batch.idle_timeout=2", env.lease(5))

    assert "Traceback" not in worker.stderr and "unexpected error" not in worker.stderr
    assert env.counts(healthy)["completed"] == 4
    assert env.counts(damaged)["failed"] == 4  # failed with the reason, not run on defaults
    job = env.store().get_job(damaged, "r00000")
    assert job.error_message is not None and job.error_message.startswith(problem)
    assert env.status(damaged)["status"] == "completed"
    out = env.home / "damaged.jsonl"
    env.ok("batch.command=export", f"batch.batch_id={damaged}", f"batch.output={out}")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["failed"] * 4


def test_a_stored_request_reads_leniently_field_by_field() -> None:
    request, problem = BatchRequest.from_stored(
        {"flow": "f", "concurrency": 7, "retry_delay": None, "colour": "red"}, "f"
    )
    assert request == BatchRequest(flow="f", concurrency=7)  # the sound fields are kept
    assert problem is not None
    assert "retry_delay=None" in problem and "colour='red'" in problem

    assert BatchRequest.from_stored("not a dict", "f") == (
        BatchRequest(flow="f"),
        "its stored request cannot be used: request='not a dict' "
        "(input should be a valid dictionary or instance of BatchRequest)",
    )
    sound = BatchRequest(flow="f", seed=7, max_cost=2.5)
    assert BatchRequest.from_stored(sound.model_dump(mode="json"), "f") == (sound, None)


# -- store URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("garbage", "it is not a database URL"),
        ("mysql://u@127.0.0.1/x", "'mysql' is not a database this store supports"),
        ("postgresql+nodriver://u:s3cret@127.0.0.1/x", "driver 'nodriver' is not supported"),
        ("postgresql://u@127.0.0.1/x", "the default driver (psycopg2) is not supported"),
        ("sqlite+pysqlcipher:///x.db", "driver 'pysqlcipher' is not supported for sqlite"),
    ],
)
def test_a_store_url_that_names_no_usable_database_is_refused_naming_store_url(
    url: str, why: str
) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        check_url(url)

    message = str(caught.value)
    assert message.startswith(f"store.url={hide_password(url)!r} is not allowed: {why}")
    assert message.endswith(
        "give sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DATABASE"
    )
    assert "s3cret" not in message


def test_passwords_are_hidden_in_urls_that_do_not_parse_too() -> None:
    assert hide_password("postgresql+psycopg://u:s3cret@h/db") == "postgresql+psycopg://u:***@h/db"
    assert hide_password("bad url://u:s3cret@h:port/db") == "bad url://u:***@h:port/db"


@pytest.mark.backends("local")
@pytest.mark.parametrize("url", ["garbage", "postgresql+nodriver://u:s3cret@127.0.0.1/x"])
def test_an_unusable_store_url_is_one_line_and_exit_2(env: Env, url: str) -> None:
    result = env.cli("batch.command=list", f"store.url={url}")

    assert result.returncode == 2, str(result)
    assert_one_error_line(result.stderr, "error: store.url=", "is not allowed")
    assert "s3cret" not in result.stderr
