"""``type: text``: a record per file of a glob, ids relative to the glob's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Env

from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import iter_source
from buttermilk.records import Record


def records(source: dict[str, Any]) -> list[Record]:
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"essays": {"type": "text", **source}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )
    return [row.to_record() for row in iter_source("essays", flow.data["essays"])]


def corpus(root: Path) -> Path:
    (root / "corpus" / "2024" / "may").mkdir(parents=True)
    (root / "corpus" / "a.txt").write_text("first essay\n")
    (root / "corpus" / "2024" / "b.txt").write_text("second\r\nessay")
    (root / "corpus" / "2024" / "may" / "c.txt").write_bytes("\ufeffthird".encode())
    (root / "corpus" / "notes.md").write_text("not text of the glob")
    return root / "corpus"


def test_one_record_per_file_with_its_path_relative_to_the_glob_folder(tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    found = records({"path": f"{folder}/**/*.txt"})

    assert [(r.record_id, r.content, r.uri) for r in found] == [
        ("2024/b.txt", "second\r\nessay", f"{folder}/2024/b.txt"),  # the bytes' own line ends
        ("2024/may/c.txt", "third", f"{folder}/2024/may/c.txt"),  # a UTF-8 mark dropped
        ("a.txt", "first essay\n", f"{folder}/a.txt"),
    ]
    assert all(r.metadata == {} for r in found)
    assert [r.record_id for r in records({"path": f"file://{folder}/2024/*.txt"})] == ["b.txt"]
    assert [r.record_id for r in records({"path": f"{folder}/a.txt"})] == ["a.txt"]
    prefixed = records({"path": f"{folder}/**/*.txt", "id_prefix": "e/"})
    assert prefixed[0].record_id == "e/2024/b.txt"


def test_an_encoding_is_used_and_undecodable_bytes_are_named_with_their_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "win.txt").write_bytes("a title\r\ncaf\xe9 cr\xe8me".encode("cp1252"))

    assert records({"path": str(tmp_path / "win.txt"), "encoding": "cp1252"})[0].content == (
        "a title\r\ncafé crème"
    )
    with pytest.raises(DataSourceError) as bad:
        records({"path": str(tmp_path / "win.txt")})
    assert str(bad.value) == (
        f"data source 'essays': {tmp_path}/win.txt:2: not valid UTF-8 (byte 0xe9); "
        "set encoding: in the data source (e.g. encoding: cp1252) or save the file as UTF-8"
    )
    with pytest.raises(DataSourceError, match="no file matches"):
        records({"path": str(tmp_path / "*.md")})


@pytest.mark.slow
@pytest.mark.backends("local")
def test_a_text_folder_end_to_end_through_the_cli(env: Env, tmp_path: Path) -> None:
    folder = corpus(env.data)
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True)
    (flows / "essays.yaml").write_text(
        "name: essays\n"
        "data:\n"
        f"  essays: {{type: text, path: '{folder}/**/*.txt', where: {{record_id: a.txt}}}}\n"
        "agents:\n"
        "  - {name: echo, _target_: buttermilk.agents.testing.echo}\n"
    )
    env.base_args = ["--config-dir", str(tmp_path / "myconf")]

    done = env.ok("flow=essays", "batch.wait=true", "batch.format=json")

    assert done.json()["counts"]["completed"] == 1
    job = env.store().get_job(done.json()["batch_id"], "a.txt")
    assert job.result is not None and job.result["outputs"]["echo"]["content"] == "first essay\n"
