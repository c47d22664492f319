"""``type: sql``: SQLite and PostgreSQL queries, streamed; errors in one line."""

from __future__ import annotations

import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Env

from buttermilk.batch.planner import plan_records
from buttermilk.errors import DataSourceError, DuplicateRecordIdError, SourceUnavailableError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import iter_source

ENDLESS_SQLITE = (
    "with recursive n(i) as (select 1 union all select i + 1 from n) "
    "select i as id, 'text ' || i as text from n"
)


def flow_over(url: str, query: str, **options: Any) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"db": {"type": "sql", "url": url, "query": query, **options}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )


def posts_sqlite(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        conn.execute("create table posts (id integer, body text, label text, lang text)")
        conn.executemany(
            "insert into posts values (?, ?, ?, ?)",
            [(1, "hello", "ok", "en"), (2, "bonjour", "ok", "fr"), (3, "go away", "toxic", "en")],
        )
    conn.close()
    return f"sqlite:///{path}"


def test_a_query_maps_to_records_and_where_filters_its_rows(tmp_path: Path) -> None:
    url = posts_sqlite(tmp_path / "posts.db")
    flow = flow_over(
        url,
        "select id, body, label, lang from posts where lang = 'en' order by id",
        columns={"record_id": "id", "content": "body", "ground_truth": "label"},
    )
    found = [row.to_record() for row in iter_source("db", flow.data["db"])]

    assert [(r.record_id, r.content, r.ground_truth, r.metadata) for r in found] == [
        ("1", "hello", "ok", {"lang": "en"}),
        ("3", "go away", "toxic", {"lang": "en"}),
    ]
    kept = flow_over(url, "select id, body as text, label from posts", where={"label": "toxic"})
    assert [row.record_id for row in iter_source("db", kept.data["db"])] == ["3"]


def test_duplicate_ids_of_a_query_are_named_by_row(tmp_path: Path) -> None:
    url = posts_sqlite(tmp_path / "posts.db")
    flow = flow_over(url, "select label as id, body as text from posts order by id")
    with pytest.raises(DuplicateRecordIdError) as twice:
        plan_records(flow, shuffle=True, max_records=None, seed=1)
    assert str(twice.value).startswith(
        f"duplicate record ids: data source 'db' ({url}) row 1 and data source 'db' ({url}) "
        "row 2 share the record id 'ok'"
    )


def test_an_endless_query_is_streamed_not_fetched_whole(tmp_path: Path) -> None:
    flow = flow_over("sqlite://", ENDLESS_SQLITE)  # in memory: a missing file is refused
    started = time.monotonic()
    plan = plan_records(flow, shuffle=False, max_records=5, seed=1)
    assert [r.record_id for r in plan.records] == ["1", "2", "3", "4", "5"]
    assert time.monotonic() - started < 10


def test_postgresql_streams_with_a_server_side_cursor_and_keeps_values(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table posts (id bigint, body text, score numeric(5, 2))"))
        conn.execute(sa.text("insert into posts values (1, 'a', 1.50), (2, 'b', null)"))
    engine.dispose()
    flow = flow_over(postgres_url, "select id, body as text, score from posts order by id")
    found = [row.to_record() for row in iter_source("db", flow.data["db"])]
    assert [(r.record_id, r.content, r.metadata) for r in found] == [
        ("1", "a", {"score": Decimal("1.50")}),
        ("2", "b", {"score": None}),
    ]
    # 10^8 rows: only a server-side cursor lets the first five arrive in seconds.
    # In the select list, PostgreSQL yields the series row by row (in FROM it would
    # materialize it first).
    endless = flow_over(postgres_url, "select generate_series(1, 100000000) as id, 'x' as text")
    started = time.monotonic()
    plan = plan_records(endless, shuffle=False, max_records=5, seed=1)
    assert [r.record_id for r in plan.records] == ["1", "2", "3", "4", "5"]
    assert time.monotonic() - started < 10


def test_bad_queries_and_urls_are_one_line_without_the_password(
    tmp_path: Path, postgres_url: str
) -> None:
    secret_url = sa.make_url(postgres_url).set(password="s3cret-pw")
    url = secret_url.render_as_string(hide_password=False)
    flow = flow_over(url, "select * from no_such_table")
    with pytest.raises(DataSourceError) as bad:
        list(iter_source("db", flow.data["db"]))
    message = str(bad.value)
    assert message.startswith("data source 'db' (postgresql+psycopg://") and "***@" in message
    assert 'the query failed: relation "no_such_table" does not exist' in message
    assert "s3cret-pw" not in message and "\n" not in message
    assert "s3cret-pw" not in str(flow.snapshot())  # a batch's snapshot keeps no password

    local = flow_over(posts_sqlite(tmp_path / "p.db"), "selec id from posts")
    with pytest.raises(DataSourceError, match=r'the query failed: near "selec": syntax error'):
        list(iter_source("db", local.data["db"]))
    twice = flow_over(posts_sqlite(tmp_path / "q.db"), "select 1 as id, 2 as id")
    with pytest.raises(DataSourceError, match=r"query names column\(s\) \['id'\] twice"):
        list(iter_source("db", twice.data["db"]))
    down = flow_over("postgresql+psycopg://nobody@127.0.0.1:1/x", "select 1")
    with pytest.raises(SourceUnavailableError, match=r"data source 'db' .*: cannot connect"):
        list(iter_source("db", down.data["db"]))
    with pytest.raises(DataSourceError, match="no SQLAlchemy dialect 'bigquery' is installed: pip"):
        list(iter_source("db", flow_over("bigquery://proj/ds", "select 1").data["db"]))


@pytest.mark.slow
@pytest.mark.backends("local")
def test_a_sql_source_from_an_environment_url_end_to_end(env: Env, tmp_path: Path) -> None:
    url = posts_sqlite(tmp_path / "posts.db")
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True)
    (flows / "db.yaml").write_text(
        "name: db\n"
        "data:\n"
        "  db: {type: sql, url: '${oc.env:POSTS_DB_URL}', query: 'select id, body, label "
        "from posts where lang = ''en''', columns: {record_id: id, content: body, "
        "ground_truth: label}}\n"
        "agents:\n"
        "  - {name: echo, _target_: buttermilk.agents.testing.echo}\n"
    )
    env.base_args = ["--config-dir", str(tmp_path / "myconf")]
    env.extra["POSTS_DB_URL"] = url

    done = env.ok("flow=db", "batch.wait=true", "batch.format=json")
    assert done.json()["counts"]["completed"] == 2
    job = env.store().get_job(done.json()["batch_id"], "3")
    assert job.record is not None and job.record.ground_truth == "toxic"
