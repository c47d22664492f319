"""What issue 14's trial of the data sources found: a large file from a server without
range requests, error lines that named neither source nor URL, SQL ids and writes,
Hugging Face splits and folders, one form for a missing file."""

from __future__ import annotations

import contextlib
import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from http_serving import serving
from test_source_trial import flow_over, read

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows.locations import Location, resolve
from buttermilk.flows.source_sql import READS_ONLY

BLOCK = AbstractBufferedFile.DEFAULT_BLOCK_SIZE  # fsspec's default, 5 MB


def refusal(**source: Any) -> DataSourceError | SourceUnavailableError:
    with pytest.raises((DataSourceError, SourceUnavailableError)) as caught:
        read(**source)
    assert isinstance(caught.value, DataSourceError | SourceUnavailableError)
    return caught.value


def big_jsonl() -> bytes:
    """Just over one fsspec block of JSONL, in rows of about 64 KB (few rows: quick)."""
    rows, size, index = [], 0, 0
    while size <= BLOCK:
        line = json.dumps({"id": f"r{index}", "text": "x" * 65_000}).encode() + b"\n"
        rows.append(line)
        size += len(line)
        index += 1
    return b"".join(rows)


class NoRanges(http.server.BaseHTTPRequestHandler):
    """Serves ``body`` whole to every GET, whatever its Range header asks (as
    ``python -m http.server`` does)."""

    body = b""

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()

    def do_GET(self) -> None:
        self.do_HEAD()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped
            self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def no_ranges() -> Iterator[tuple[str, type[NoRanges]]]:
    handler = type("Handler", (NoRanges,), {"body": big_jsonl()})
    with serving(handler) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler


def test_a_file_over_a_block_from_a_server_without_ranges_is_read_as_a_stream(
    no_ranges: tuple[str, type[NoRanges]],
) -> None:
    base, handler = no_ranges
    count = handler.body.count(b"\n")
    assert len(handler.body) > BLOCK
    ids = read(path=f"{base}/big.jsonl")
    assert ids == [f"r{i}" for i in range(count)]
    text = read(type="text", path=f"{base}/big.txt")
    assert text == ["big.txt"]


class Failing(AbstractFileSystem):
    """A filesystem whose files fail to give their bytes with an error no one expects."""

    protocol = "failing"

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return {"name": path, "size": 10, "type": "file"}

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> AbstractBufferedFile:
        return FailingFile(self, path, mode, size=10)


class FailingFile(AbstractBufferedFile):
    def _fetch_range(self, start: int, end: int) -> bytes:
        raise RuntimeError("the library tripped\n  over itself " + "x" * 1_000)


def test_an_unexpected_failure_of_reading_names_the_file_on_one_short_line() -> None:
    location = Location(name="failing://a/b.jsonl", relative="b.jsonl", fs=Failing(), path="a")
    with pytest.raises(DataSourceError) as caught, location.open() as fh:
        fh.read()
    message = str(caught.value)
    assert message.startswith("failing://a/b.jsonl: cannot read it (the library tripped over")
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize(
    ("path", "kind", "says"),
    [
        (
            "ftp://127.0.0.1:1/x.jsonl",
            SourceUnavailableError,
            "ftp://127.0.0.1:1/x.jsonl: cannot reach its host ([Errno 111] Connection refused)",
        ),
        ("hdfs://x/y.jsonl", DataSourceError, "hdfs://x/y.jsonl: cannot open it ("),
        (
            "az://c/x.jsonl",
            MissingPackageError,
            "az://c/x.jsonl needs a package that is not installed: pip install adlfs",
        ),
        (
            "http://127.0.0.1:1/x.jsonl",
            SourceUnavailableError,
            "http://127.0.0.1:1/x.jsonl: cannot reach its host (Cannot connect to host "
            "127.0.0.1:1 [",
        ),
    ],
)
def test_a_url_that_cannot_be_opened_is_one_short_line_naming_source_and_url(
    path: str, kind: type[Exception], says: str
) -> None:
    error = refusal(path=path, timeout=5)
    message = str(error)
    assert type(error) is kind
    assert message.startswith(f"data source 's': {says}"), message
    assert "\n" not in message and len(message) < 420
    assert "ssl:" not in message
    if kind is MissingPackageError:
        assert message.count("adlfs") == 1


def test_a_missing_file_reads_alike_as_a_path_and_as_a_url(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    assert str(refusal(path=str(missing))) == f"data source 's': {missing}: file not found"
    url = missing.as_uri()
    assert str(refusal(path=url)) == f"data source 's': {url}: file not found"
    with pytest.raises(DataSourceError, match=r"nope\.jsonl: file not found"):
        resolve("s", str(missing))


def sql(url: str, query: str) -> list[str]:
    return read(type="sql", url=url, query=query)


def test_a_numeric_id_without_fraction_is_an_integer_id_and_a_fraction_is_refused_with_the_url(
    postgres_url: str,
) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table posts (id numeric(40, 0), cut numeric(6, 2))"))
        conn.execute(
            sa.text("insert into posts values (1234567890123456789012345678901234567890, 1.5)")
        )
    engine.dispose()
    assert sql(postgres_url, "select id, 'x' as text from posts") == [
        "1234567890123456789012345678901234567890"
    ]
    error = refusal(type="sql", url=postgres_url, query="select cut as id, 'x' as text from posts")
    shown = sa.make_url(postgres_url).render_as_string(hide_password=True)
    assert str(error).startswith(
        f"data source 's' ({shown}) row 1: the record id in field 'id' is Decimal '1.50'"
    )


def test_a_query_that_writes_or_returns_no_rows_is_refused_and_changes_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'posts.db'}"
    for url in (sqlite_url, postgres_url):
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("create table posts (id integer, body text)"))
            conn.execute(sa.text("insert into posts values (1, 'a')"))
        for query in (
            "delete from posts",
            "update posts set body = 'b' returning id, body as text",
            "drop table posts",
        ):
            error = refusal(type="sql", url=url, query=query)
            assert str(error).endswith(f"; {READS_ONLY}"), (url, query, str(error))
        with engine.connect() as conn:
            assert conn.execute(sa.text("select id, body from posts")).all() == [(1, "a")]
        engine.dispose()
    error = refusal(type="sql", url=sqlite_url, query="pragma query_only = on")
    assert str(error) == f"data source 's' ({sqlite_url}): the query returns no rows; {READS_ONLY}"


def test_slices_need_streaming_false_and_unknown_splits_read_alike(tmp_path: Path) -> None:
    import datasets

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": f"r{i}", "text": "x"}) + "\n" for i in range(8)))
    one = datasets.Dataset.from_dict({"id": [f"r{i}" for i in range(8)], "text": ["x"] * 8})
    one.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": one, "test": one}).save_to_disk(str(tmp_path / "dict"))
    kinds = {
        "json": ({"path": "json", "data_files": str(rows)}, "train"),
        "single": ({"path": str(tmp_path / "single")}, "train"),
        "dict": ({"path": str(tmp_path / "dict")}, "train, test"),
    }
    for source, splits in kinds.values():
        where = f"data source 's' ({source['path']})"
        for streaming in (True, False):
            given = {"type": "huggingface", **source, "streaming": streaming}
            assert str(refusal(**given, split="nope")) == (
                f"{where}: no split 'nope' (its splits: {splits})"
            )
            if streaming:
                assert str(refusal(**given, split="train[:5]")) == (
                    f"{where}: split 'train[:5]' is a slice; slices need streaming: false"
                )
            else:
                assert read(**given, split="train[2:5]") == ["r2", "r3", "r4"]


def test_a_missing_local_folder_is_no_such_folder_and_hub_names_are_left_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from buttermilk.flows.sources import check_source

    monkeypatch.chdir(tmp_path)
    (tmp_path / "hf").mkdir()
    for path in ("hf/nothing_here", "./nothing_here", "../nothing_here", "a/b/c"):
        error = refusal(type="huggingface", path=path)
        assert type(error) is DataSourceError
        assert str(error) == f"data source 's' ({path}): no such folder: {path}"
    for hub in ("stanfordnlp/imdb", "tweet_eval"):  # checked without asking the Hub
        check_source("s", flow_over(type="huggingface", path=hub).data["s"])
