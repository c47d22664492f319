"""What a new user's trial of the data sources found: timeouts, passwords in file URLs,
HTTP answers told apart, a missing SQLite file, PostgreSQL's own messages."""

from __future__ import annotations

import http.server
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from http_serving import serving

from buttermilk.errors import DataSourceError, SourceUnavailableError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import iter_source


def flow_over(**source: Any) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"s": source},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )


def read(**source: Any) -> list[str]:
    flow = flow_over(**source)
    return [row.record_id for row in iter_source("s", flow.data["s"])]


@pytest.fixture
def silent() -> Iterator[int]:
    """A port whose server accepts connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


class Answers(http.server.BaseHTTPRequestHandler):
    """``/STATUS/...`` answers STATUS; ``/ok/...`` one JSONL row; asks no password."""

    def do_GET(self) -> None:
        part = self.path.split("/")[1]
        if part == "ok":
            body = b'{"id": "a", "text": "x"}\n'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(int(part))
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def answering() -> Iterator[str]:
    with serving(Answers) as server:
        yield f"127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("kind", ["file", "text"])
def test_a_url_whose_server_never_answers_times_out(silent: int, kind: str) -> None:
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError) as error:
        read(type=kind, path=f"http://127.0.0.1:{silent}/x.jsonl", timeout=0.3)
    assert time.monotonic() - started < 10
    assert str(error.value).startswith("data source 's': http://127.0.0.1:")
    assert "no answer within 0.3 s" in str(error.value)


def test_a_database_server_that_never_answers_times_out(silent: int) -> None:
    url = f"postgresql+psycopg://u@127.0.0.1:{silent}/x?sslmode=disable&gssencmode=disable"
    started = time.monotonic()
    with pytest.raises(SourceUnavailableError, match=r"^data source 's' \(.*cannot connect"):
        read(type="sql", url=url, query="select 1", timeout=1)
    assert time.monotonic() - started < 10


def test_timeout_must_be_a_positive_number() -> None:
    with pytest.raises(ValueError, match="timeout"):
        flow_over(type="sql", url="sqlite://", query="select 1", timeout=0)


def test_a_password_in_a_file_url_is_hidden_in_errors_records_and_snapshots(
    answering: str,
) -> None:
    missing = f"http://alice:hunter2@{answering}/404/x.jsonl"
    with pytest.raises(DataSourceError) as error:
        read(path=missing)
    assert str(error.value) == (
        f"data source 's': http://alice:***@{answering}/404/x.jsonl: file not found"
    )
    for kind in ("file", "text"):
        flow = flow_over(type=kind, path=f"http://alice:hunter2@{answering}/ok/x.jsonl")
        assert "hunter2" not in str(flow.snapshot())
        rows = list(iter_source("s", flow.data["s"]))
        assert rows and all("hunter2" not in str(row.to_record()) for row in rows)
        assert all("hunter2" not in row.location for row in rows)


@pytest.mark.parametrize(
    ("status", "kind", "said"),
    [
        (404, DataSourceError, "file not found"),
        (401, DataSourceError, "access refused (HTTP 401); check the URL's credentials"),
        (403, DataSourceError, "access refused (HTTP 403); check the URL's credentials"),
        (500, SourceUnavailableError, "the server answered 500"),
        (503, SourceUnavailableError, "the server answered 503"),
    ],
)
def test_what_an_http_server_answered_is_told_apart(
    answering: str, status: int, kind: type[Exception], said: str
) -> None:
    with pytest.raises(kind) as error:
        read(path=f"http://{answering}/{status}/x.jsonl")
    assert type(error.value) is kind
    assert str(error.value) == f"data source 's': http://{answering}/{status}/x.jsonl: {said}"


def test_a_failed_tls_handshake_is_not_a_missing_file(answering: str) -> None:
    with pytest.raises(SourceUnavailableError, match=r"^data source 's': https://.*: TLS failed"):
        read(path=f"https://{answering}/ok/x.jsonl", timeout=5)


def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(DataSourceError) as error:
        read(type="sql", url=f"sqlite:///{path}", query="select 1 as id, 'x' as text")
    assert type(error.value) is DataSourceError
    assert str(error.value) == (
        f"data source 's' (sqlite:///{path}): the database file does not exist: {path}"
    )
    assert not path.exists()


def test_postgresql_errors_keep_the_databases_message_only(postgres_url: str) -> None:
    with pytest.raises(DataSourceError) as error:
        read(type="sql", url=postgres_url, query="select * from no_such_table")
    message = str(error.value)
    assert message.endswith('the query failed: relation "no_such_table" does not exist')
    assert "DECLARE" not in message and "CURSOR" not in message


def test_a_postgresql_database_that_does_not_exist_is_bad_input(postgres_url: str) -> None:
    url = sa.make_url(postgres_url).set(database="no_such_db_here")
    with pytest.raises(DataSourceError) as error:
        read(type="sql", url=url.render_as_string(hide_password=False), query="select 1")
    assert type(error.value) is DataSourceError  # the server answered: exit 2, not 1
    assert 'database "no_such_db_here" does not exist' in str(error.value)


def test_encoding_errors_of_text_and_url_sources_name_the_source(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    (tmp_path / "bad.jsonl").write_bytes(b'{"id": "a", "text": "caf\xe9"}\n')
    cases = {
        "text": (tmp_path / "bad.txt").as_uri(),
        "file": (tmp_path / "bad.jsonl").as_uri(),
    }
    for kind, url in cases.items():
        with pytest.raises(DataSourceError) as error:
            read(type=kind, path=url)
        assert str(error.value).startswith(f"data source 's': {url}"), kind
        assert "not valid" in str(error.value)
    with pytest.raises(DataSourceError, match=r"^data source 's': /.*bad.txt:1: not valid UTF-8"):
        read(type="text", path=str(tmp_path / "bad.txt"))
