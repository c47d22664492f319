"""A file source whose HTTP server fails while the file is being read: the connection
cut before the announced length, or a 5xx answer to a later range request. Planning ends
with one SourceUnavailableError naming the source and the problem (the CLI: one
``error:`` line, exit 1), and nothing is created."""

from __future__ import annotations

import http.server
import io
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import Env
from http_serving import serving

from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchRequest
from buttermilk.errors import SourceUnavailableError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store

BLOCK = 5 * 2**20  # fsspec's http files fetch this many bytes a range request


def jsonl_rows(count: int, text_size: int = 40) -> bytes:
    return b"".join(
        json.dumps({"id": f"r{i}", "text": f"{i:06d}" + "x" * text_size}).encode() + b"\n"
        for i in range(count)
    )


def parquet_rows(count: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    table = pa.table({"id": [f"r{i}" for i in range(count)], "text": ["t"] * count})
    pq.write_table(table, out)
    return out.getvalue()


@dataclass
class Site:
    """What the server holds and does: files by path, how each one breaks, and the range
    requests it answered (path, first byte)."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)  # sends a third of the body, then hangs up
    late_503: set[str] = field(default_factory=set)  # 503 for a range past the first block
    ranges: list[tuple[str, int]] = field(default_factory=list)
    base: str = ""


class BreakingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_HEAD(self) -> None:
        body = self.server.site.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        site: Site = self.server.site
        body = site.files[self.path]
        first, last = 0, len(body) - 1
        asked = self.headers.get("Range")
        if asked:
            start, _, end = asked.removeprefix("bytes=").partition("-")
            first, last = int(start), min(int(end) if end else last, last)
            site.ranges.append((self.path, first))
            if self.path in site.late_503 and first >= BLOCK:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        part = body[first : last + 1]
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(part)))
        if asked:
            self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
        self.end_headers()
        if self.path in site.cut:
            self.wfile.write(part[: len(part) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(part)


@pytest.fixture
def site() -> Iterator[Site]:
    with serving(BreakingHandler) as server:
        held = Site(base=f"http://127.0.0.1:{server.server_address[1]}")
        server.site = held  # type: ignore[attr-defined]
        yield held


def service_over(tmp_path: Path, source: dict[str, Any]) -> tuple[BatchService, Store]:
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"posts": source},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    queue = LocalQueue(tmp_path / "queue.db")
    return BatchService(store, queue, StaticFlowCatalog({"f": flow})), store


def refusal(tmp_path: Path, source: dict[str, Any]) -> str:
    """What create says for ``source``, after checking that it created nothing."""
    service, store = service_over(tmp_path, source)
    try:
        with pytest.raises(SourceUnavailableError) as failed:
            anyio.run(service.create, BatchRequest(flow="f"))
        assert store.list_batches() == []
        return str(failed.value)
    finally:
        store.close()


def test_a_connection_cut_before_the_file_ends_names_the_source_for_every_format(
    tmp_path: Path, site: Site
) -> None:
    site.files.update(
        {
            "/posts.jsonl": jsonl_rows(2_000),
            "/posts.csv": b"id,text\n" + b"".join(f"r{i},t\n".encode() for i in range(5_000)),
            "/posts.json": json.dumps(
                [{"id": f"r{i}", "text": "t"} for i in range(2_000)]
            ).encode(),
            "/posts.parquet": parquet_rows(2_000),
            "/essays/one.txt": b"a long essay " * 5_000,
        }
    )
    site.cut.update(site.files)
    for path, body in site.files.items():
        source: dict[str, Any] = {"path": site.base + path}
        if path.endswith(".txt"):
            source["type"] = "text"
        said = refusal(tmp_path / path.strip("/").replace("/", "_"), source)
        assert said == (
            f"data source 'posts': {site.base}{path}: the connection broke before the whole "
            f"file arrived (received {len(body) // 3} of {len(body)} bytes)"
        )


def test_a_5xx_answer_to_a_later_range_request_names_the_source(tmp_path: Path, site: Site) -> None:
    body = jsonl_rows(90, text_size=70_000)  # 6.3 MB: two range requests
    assert len(body) > BLOCK
    site.files["/big.jsonl"] = body
    site.late_503.add("/big.jsonl")

    said = refusal(tmp_path, {"path": f"{site.base}/big.jsonl"})
    assert said == f"data source 'posts': {site.base}/big.jsonl: the server answered 503"
    assert ("/big.jsonl", 0) in site.ranges  # the first block came: rows were read
    assert any(first >= BLOCK for _, first in site.ranges)

    site.late_503.clear()  # the same file from a server that answers: every row
    service, store = service_over(tmp_path / "ok", {"path": f"{site.base}/big.jsonl"})
    try:
        created = anyio.run(service.create, BatchRequest(flow="f"))
        assert created.batch.total == 90
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.backends("local")
def test_the_cli_says_a_cut_connection_in_one_line_and_exits_1(env: Env, site: Site) -> None:
    body = jsonl_rows(3_000)
    site.files["/posts.jsonl"] = body
    site.cut.add("/posts.jsonl")
    env.extra["T_ECHO_DATA"] = f"{site.base}/posts.jsonl"

    cut = env.cli("flow=t_echo")
    assert cut.returncode == 1, str(cut)
    assert "Traceback" not in cut.stderr, str(cut)
    assert cut.stderr.strip().splitlines()[-1] == (
        f"error: data source 'records': {site.base}/posts.jsonl: the connection broke "
        f"before the whole file arrived (received {len(body) // 3} of {len(body)} bytes)"
    )
    assert env.store().list_batches() == []
