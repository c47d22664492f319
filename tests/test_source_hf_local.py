"""Local Hugging Face data streamed through pyarrow alone (``save_to_disk`` folders, the
``parquet`` builder over local files): the same rows, locations and errors as through
the ``datasets`` library, without importing it."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import iter_source

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
ROWS = 2_500  # more than a batch (1,000 rows)


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield


class Tripwire(types.ModuleType):
    """Stands in for ``datasets``: installed, but any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"datasets.{name} used: the source did not stream through pyarrow")


def rows(**source: Any) -> list[tuple[str, dict[str, Any]]]:
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"hf": {"type": "huggingface", **source}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )
    return [(row.location, row.fields) for row in iter_source("hf", flow.data["hf"])]


def without_library(monkeypatch: pytest.MonkeyPatch, **source: Any) -> list[Any]:
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "datasets", Tripwire("datasets"))
        return rows(**source)


def dataset(count: int, start: int = 0) -> Any:
    """A dataset of every kind of feature: big integers, text, a ClassLabel, a list of
    them, a struct, floats and an image (built from Arrow storage: no Pillow needed)."""
    import datasets
    import pyarrow as pa

    features = datasets.Features(
        {
            "id": datasets.Value("int64"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "tags": datasets.List(datasets.ClassLabel(names=["a", "b"])),
            "meta": {"score": datasets.Value("float64"), "lang": datasets.Value("string")},
            "image": datasets.Image(),
        }
    )
    numbers = range(start, start + count)
    table = pa.table(
        {
            "id": [2**62 + i for i in numbers],
            "text": [None if i % 7 == 0 else f"text {i}" for i in numbers],
            "label": [i % 2 for i in numbers],
            "tags": [[i % 2] * (i % 3) for i in numbers],
            "meta": [{"score": i / 4, "lang": "en"} for i in numbers],
            "image": [{"bytes": PNG[: i % 50], "path": None} for i in numbers],
        },
        schema=features.arrow_schema,
    )
    return datasets.Dataset(table, info=datasets.DatasetInfo(features=features))


def test_a_saved_dataset_streams_without_the_library_as_the_library_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict({"test": dataset(ROWS), "train": dataset(3)}).save_to_disk(
        str(folder), num_shards={"test": 3, "train": 1}
    )
    source = {"path": str(folder), "split": "test", "columns": {"record_id": "id"}}

    through_library = rows(**source, streaming=False)
    streamed = without_library(monkeypatch, **source)
    assert len(streamed) == ROWS
    assert streamed == through_library
    assert streamed[1] == (
        f"{folder}/test[1]",
        {
            "id": 2**62 + 1,
            "text": "text 1",
            "label": 1,
            "tags": [1],
            "meta": {"score": 0.25, "lang": "en"},
            "image": PNG[:1],
        },
    )
    named = without_library(monkeypatch, **source, class_labels="names")
    assert named == rows(**source, streaming=False, class_labels="names")
    assert (named[1][1]["label"], named[1][1]["tags"]) == ("pos", ["b"])
    with pytest.raises(DataSourceError) as unknown:
        without_library(monkeypatch, path=str(folder), split="validation")
    assert str(unknown.value) == (
        f"data source 'hf' ({folder}): no split 'validation' (its splits: test, train)"
    )


def test_the_parquet_builder_over_local_files_streams_as_the_library_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    dataset(1_200).to_parquet(str(folder / "part-0.parquet"))
    dataset(900, start=1_200).to_parquet(str(folder / "part-1.parquet"))
    dataset(5, start=9_000).to_parquet(str(folder / ".hidden.parquet"))  # not matched by *
    source = {"path": "parquet", "data_files": f"{folder}/*.parquet"}

    through_library = rows(**source, streaming=False)
    streamed = without_library(monkeypatch, **source)
    assert len(streamed) == 2_100
    assert streamed == through_library
    assert streamed[1_200][0] == "parquet/train[1200]"
    named = without_library(monkeypatch, **source, class_labels="names")  # from the metadata
    assert named == rows(**source, streaming=False, class_labels="names")

    with pytest.raises(DataSourceError) as split:
        without_library(monkeypatch, **source, split="test")
    assert str(split.value) == ("data source 'hf' (parquet): no split 'test' (its splits: train)")
    with pytest.raises(DataSourceError) as none:
        without_library(monkeypatch, path="parquet", data_files=f"{folder}/*.pq")
    assert str(none.value) == f"data source 'hf' (parquet): no file matches '{folder}/*.pq'"


def test_parquet_files_of_one_split_must_share_their_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1], "text": ["a"]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"id": ["2"], "text": ["b"]}), tmp_path / "b.parquet")

    with pytest.raises(DataSourceError) as mixed:
        without_library(monkeypatch, path="parquet", data_files=f"{tmp_path}/*.parquet")
    assert str(mixed.value) == (
        f"data source 'hf' (parquet): {tmp_path}/b.parquet has other columns or types than "
        f"{tmp_path}/a.parquet; the files of one split must share them"
    )
