"""File sources at fsspec URLs (file://, memory://, http:// from a local server), the
kinds' union, and a source's ``where``."""

from __future__ import annotations

import functools
import http.server
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import Env
from http_serving import serving
from pydantic import ValidationError

from buttermilk.batch.service import BatchService
from buttermilk.domain import BatchRequest
from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.locations import Location
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.readers import iter_jsonl
from buttermilk.flows.source_models import FileSource
from buttermilk.flows.sources import check_sources, iter_source
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store

ROWS = [
    {"id": "a1", "text": "first", "lang": "en", "meta": {"kind": "post"}},
    {"id": "a2", "text": "second", "lang": "fr", "meta": {"kind": "reply"}},
    {"id": "a3", "text": "third", "lang": "de", "meta": {"kind": "post"}},
]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def flow_over(**sources: dict[str, Any]) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": sources,
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )


def ids(name: str, source: dict[str, Any]) -> list[str]:
    flow = flow_over(s=source)
    return [row.record_id for row in iter_source(name, flow.data["s"])]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a folder: (its base URL, the folder)."""
    folder = tmp_path / "site"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    with serving(handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


def test_a_file_url_and_its_glob_read_as_the_local_path_does(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.jsonl").write_text(jsonl(ROWS[:2]))
    (tmp_path / "sub" / "b.jsonl").write_text(jsonl(ROWS[2:]))

    assert ids("s", {"path": f"file://{tmp_path}/a.jsonl"}) == ["a1", "a2"]
    assert ids("s", {"path": f"file://{tmp_path}/**/*.jsonl"}) == ["a1", "a2", "a3"]
    assert ids("s", {"path": f"{tmp_path}/**/*.jsonl"}) == ["a1", "a2", "a3"]
    flow = flow_over(s={"path": f"file://{tmp_path}/*.jsonl"})
    located = [row.location for row in iter_source("s", flow.data["s"])]
    assert located == [f"file://{tmp_path}/a.jsonl:1", f"file://{tmp_path}/a.jsonl:2"]
    with pytest.raises(DataSourceError, match=r"data source 's': no file matches 'file://"):
        check_sources(flow_over(s={"path": f"file://{tmp_path}/*.csv"}))


def test_memory_urls_through_the_service_make_a_batch(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/bm-test/posts/one.jsonl", jsonl(ROWS[:2]).encode())
    fs.pipe("/bm-test/posts/two.csv", b"id,text,lang\nc1,csv text,en\n")
    flow = flow_over(
        posts={"path": "memory://bm-test/posts/*.jsonl"},
        more={"path": "memory://bm-test/posts/two.csv"},
    )
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    service = BatchService(store, LocalQueue(tmp_path / "q.db"), StaticFlowCatalog({"f": flow}))
    try:
        created = anyio.run(service.create, BatchRequest(flow="f", shuffle=False))
        jobs = list(store.iter_jobs(created.batch.id))
        assert [(j.record_id, j.record.content if j.record else None) for j in jobs] == [
            ("a1", "first"),
            ("a2", "second"),
            ("c1", "csv text"),
        ]
        assert jobs[0].record is not None and jobs[0].record.metadata["meta"] == {"kind": "post"}

        missing = flow_over(s={"path": "memory://bm-test/none/*.jsonl"})
        service.flows = StaticFlowCatalog({"f": missing})
        with pytest.raises(DataSourceError, match="no file matches 'memory://bm-test/none"):
            anyio.run(service.create, BatchRequest(flow="f"))
        assert len(store.list_batches()) == 1  # nothing created for the bad source
    finally:
        fs.rm("/bm-test", recursive=True)
        store.close()


def test_http_urls_from_a_local_server(served: tuple[str, Path]) -> None:
    base, folder = served
    (folder / "posts.jsonl").write_text(jsonl(ROWS))
    (folder / "bad.jsonl").write_bytes(b'{"id": "x", "text": "ok"}\n{"id": \xff}\n')

    assert ids("s", {"path": f"{base}/posts.jsonl"}) == ["a1", "a2", "a3"]
    with pytest.raises(DataSourceError) as bad:
        ids("s", {"path": f"{base}/bad.jsonl"})
    assert str(bad.value).startswith(
        f"data source 's': {base}/bad.jsonl:2: not valid UTF-8 (byte 0xff)"
    )
    with pytest.raises(DataSourceError, match=f"data source 's': {base}/gone.jsonl: file not"):
        check_sources(flow_over(s={"path": f"{base}/gone.jsonl"}))


def test_an_unreachable_host_is_a_service_error_and_a_missing_protocol_names_its_extra() -> None:
    with pytest.raises(SourceUnavailableError, match="cannot reach its host"):
        check_sources(flow_over(s={"path": "http://127.0.0.1:1/posts.jsonl"}))
    with pytest.raises(MissingPackageError) as missing:
        check_sources(flow_over(s={"path": "gs://my-bucket/posts/*.jsonl"}))
    assert str(missing.value) == (
        "data source 's': gs://my-bucket/posts/*.jsonl needs a package that is not installed: "
        "pip install 'buttermilk-batch[gcs]'"
    )
    with pytest.raises(DataSourceError, match="Protocol not known: nope"):
        check_sources(flow_over(s={"path": "nope://x/y.jsonl"}))


@pytest.mark.slow
@pytest.mark.backends("local")
def test_the_cli_reads_a_url_and_refuses_bad_ones_in_one_line(
    env: Env, tmp_path: Path, served: tuple[str, Path]
) -> None:
    base, folder = served
    (folder / "posts.jsonl").write_text(jsonl(ROWS))
    env.extra["T_ECHO_DATA"] = f"{base}/posts.jsonl"
    done = env.ok("flow=t_echo", "batch.wait=true", "batch.format=json", "batch.shuffle=false")
    assert done.json()["counts"]["completed"] == 3

    env.extra["T_ECHO_DATA"] = "http://127.0.0.1:1/posts.jsonl"
    unreachable = env.cli("flow=t_echo")
    assert unreachable.returncode == 1, str(unreachable)
    last = unreachable.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data source 'records': http://127.0.0.1:1/posts.jsonl: cannot")
    assert len(env.store().list_batches()) == 1


def test_where_keeps_rows_by_equality_inclusion_and_nested_paths(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(jsonl([*ROWS, {"id": "a4", "text": "fourth", "flag": True}]))

    assert ids("s", {"path": str(path), "where": {"lang": "en"}}) == ["a1"]
    assert ids("s", {"path": str(path), "where": {"lang": ["en", "de"]}}) == ["a1", "a3"]
    assert ids("s", {"path": str(path), "where": {"meta.kind": "post"}}) == ["a1", "a3"]
    assert ids("s", {"path": str(path), "where": {"flag": True}}) == ["a4"]
    with pytest.raises(DataSourceError) as none_kept:  # True is not 1
        ids("s", {"path": str(path), "where": {"flag": 1}})
    assert str(none_kept.value) == (
        "data source 's': where {'flag': 1} kept none of its 4 rows (values are compared with "
        "their type: the text '1' is not the number 1, and a CSV field is text)"
    )
    with pytest.raises(DataSourceError) as missing:
        ids("s", {"path": str(path), "where": {"langauge": "en"}})
    assert str(missing.value) == (
        "data source 's': where: no row has the field 'langauge' "
        "(a field name, or NAME.KEY into an object)"
    )


def test_source_types_are_told_apart_and_unknown_ones_named() -> None:
    flow = flow_over(a={"path": "x.jsonl"}, b={"type": "text", "path": "c/*.txt"})
    assert isinstance(flow.data["a"], FileSource)
    assert type(flow.data["b"]).__name__ == "TextSource"
    with pytest.raises(
        ValidationError,
        match=re.escape("unknown source type: use type: file|text|sql|huggingface|batch"),
    ):
        flow_over(a={"type": "ftp", "path": "x"})
    with pytest.raises(ValidationError, match=r"where\.lang: give a value or a list"):
        flow_over(a={"path": "x.jsonl", "where": {"lang": {"in": ["en"]}}})


def test_a_stream_that_cannot_seek_is_read_through_a_spooled_copy(
    served: tuple[str, Path],
) -> None:
    import fsspec

    base, folder = served
    (folder / "bad.jsonl").write_bytes(b'{"id": "x", "text": "ok"}\n{"id": \xff}\n')
    streaming = fsspec.filesystem("http", block_size=0)  # no seeking: HTTP read as it comes
    url = f"{base}/bad.jsonl"
    with streaming.open(url) as raw, pytest.raises(ValueError, match="Cannot seek"):
        raw.read(1)
        raw.seek(0)
    location = Location(name=url, relative="bad.jsonl", fs=streaming, path=url)
    with location.open() as fh, pytest.raises(DataSourceError) as bad:
        list(iter_jsonl(fh, url))
    assert str(bad.value).startswith(f"{url}:2: not valid UTF-8 (byte 0xff)")
