"""``type: huggingface`` through the datasets library, on local files and save_to_disk
folders (no network: the Hub is switched off)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Env

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import check_sources, iter_source
from buttermilk.records import Record

ROWS = [{"id": i, "text": f"tweet {i}", "label": i % 3, "score": 0.5 * i} for i in range(1, 6)]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Hub, and a cache of this test's own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield


def flow_over(**source: Any) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"hf": {"type": "huggingface", **source}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )


def records(**source: Any) -> list[Record]:
    flow = flow_over(**source)
    return [row.to_record() for row in iter_source("hf", flow.data["hf"])]


def jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


@pytest.mark.parametrize("streaming", [True, False])
def test_a_builder_over_local_files_reads_every_row_exactly(
    tmp_path: Path, streaming: bool
) -> None:
    path = jsonl(tmp_path / "tweets.jsonl")
    found = records(
        path="json",
        data_files=str(path),
        split="train",
        streaming=streaming,
        columns={"ground_truth": "label"},
    )
    assert [(r.record_id, r.content, r.ground_truth, r.metadata) for r in found] == [
        (str(row["id"]), row["text"], row["label"], {"score": row["score"]}) for row in ROWS
    ]
    kept = records(path="json", data_files=str(path), where={"label": [0, 2]})
    assert [r.record_id for r in kept] == ["2", "3", "5"]


def test_save_to_disk_folders_and_their_splits(tmp_path: Path) -> None:
    import datasets

    table = {key: [row[key] for row in ROWS] for key in ROWS[0]}
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict(
        {"test": datasets.Dataset.from_dict(table), "train": datasets.Dataset.from_dict(table)}
    ).save_to_disk(str(tmp_path / "dict"))

    assert [r.record_id for r in records(path=str(tmp_path / "one"))] == ["1", "2", "3", "4", "5"]
    found = records(path=str(tmp_path / "dict"), split="test", streaming=False)
    assert [r.content for r in found][:2] == ["tweet 1", "tweet 2"]
    with pytest.raises(DataSourceError) as unknown:
        records(path=str(tmp_path / "dict"), split="validation")
    assert str(unknown.value) == (
        f"data source 'hf' ({tmp_path}/dict): no split 'validation' (its splits: test, train)"
    )


def test_a_saved_single_dataset_refuses_another_split_name_or_revision(tmp_path: Path) -> None:
    import datasets

    table = {key: [row[key] for row in ROWS] for key in ROWS[0]}
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "one"))
    datasets.Dataset.from_dict(table, split="test").save_to_disk(str(tmp_path / "test"))
    where = f"data source 'hf' ({tmp_path}/one)"
    with pytest.raises(DataSourceError) as unknown:
        records(path=str(tmp_path / "one"), split="validation")
    assert str(unknown.value) == (f"{where}: no split 'validation' (its splits: train)")
    assert len(records(path=str(tmp_path / "test"), split="test")) == len(ROWS)
    with pytest.raises(DataSourceError, match=r"no split 'train' \(its splits: test\)"):
        records(path=str(tmp_path / "test"))
    for option in ("name", "revision"):
        with pytest.raises(DataSourceError) as ignored:
            records(path=str(tmp_path / "one"), **{option: "v2"})
        assert str(ignored.value) == (
            f"{where}: a folder saved by save_to_disk has no {option}; leave {option}: out"
        )


def test_image_features_arrive_as_bytes(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa

    # Built from Arrow storage as the library keeps images (encoding needs Pillow).
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image()})
    image = pa.array([{"bytes": PNG, "path": None}, None], features.arrow_schema.field(1).type)
    table = pa.table({"id": ["i1", "i2"], "image": image})
    dataset = datasets.Dataset(table, info=datasets.DatasetInfo(features=features))
    assert type(dataset.features["image"]).__name__ == "Image"
    dataset.save_to_disk(str(tmp_path / "imgs"))

    found = records(path=str(tmp_path / "imgs"), columns={"content": "image"})
    assert [(r.record_id, r.content) for r in found] == [("i1", PNG), ("i2", None)]


def test_errors_name_the_source_and_the_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = jsonl(tmp_path / "tweets.jsonl")
    with pytest.raises(DataSourceError) as split:
        records(path="json", data_files=str(path), split="test")
    assert str(split.value) == "data source 'hf' (json): no split 'test' (its splits: train)"
    with pytest.raises(SourceUnavailableError, match="data source 'hf' \\(tweet_eval\\): cannot"):
        records(path="tweet_eval", name="hate", split="test")
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if it were not installed
    with pytest.raises(MissingPackageError) as missing:
        check_sources(flow_over(path="tweet_eval"))
    assert str(missing.value) == (
        "data source 'hf': type: huggingface needs the datasets library: "
        "pip install 'buttermilk-batch[hf]'"
    )


@pytest.mark.slow
@pytest.mark.backends("local")
def test_a_huggingface_source_end_to_end_through_the_cli(env: Env, tmp_path: Path) -> None:
    path = jsonl(env.data / "tweets.jsonl")
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True)
    (flows / "tweets.yaml").write_text(
        "name: tweets\n"
        "data:\n"
        f"  hf: {{type: huggingface, path: json, data_files: '{path}', split: train, "
        "columns: {ground_truth: label}}\n"
        "agents:\n"
        "  - {name: echo, _target_: buttermilk.agents.testing.echo}\n"
    )
    env.base_args = ["--config-dir", str(tmp_path / "myconf")]
    env.extra.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))

    done = env.ok("flow=tweets", "batch.wait=true", "batch.format=json", "batch.max_records=3")
    assert done.json()["counts"]["completed"] == 3
    job = next(env.store().iter_jobs(done.json()["batch_id"]))
    assert job.record is not None and job.record.content == f"tweet {job.record_id}"
