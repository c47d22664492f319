"""``type: huggingface`` values kept exact: ClassLabel integers by default and class names
when asked (``class_labels: names``), and integers beyond 2**53 that the ``json`` builder
would read as floats refused, naming file, line and field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import iter_source
from buttermilk.records import Record

BIG = 2**53 + 1  # the first integer a float cannot hold


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No Hub, and a cache of this test's own."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield


def records(**source: Any) -> list[Record]:
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"hf": {"type": "huggingface", **source}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )
    return [row.to_record() for row in iter_source("hf", flow.data["hf"])]


def labelled(folder: Path, labels: list[Any]) -> Path:
    """A saved dataset with a ClassLabel column (``labels`` as stored: -1 is no label),
    a list of ClassLabels and one inside a struct."""
    import datasets
    import pyarrow as pa

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "neu", "pos"]),
            "tags": datasets.List(datasets.ClassLabel(names=["news", "sport"])),
            "meta": {"lang": datasets.ClassLabel(names=["en", "fr"]), "n": datasets.Value("int64")},
        }
    )
    count = len(labels)
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(count)],
            "text": [f"text {i}" for i in range(count)],
            "label": pa.array(labels, pa.int64()),  # as stored, unchecked: 7 is possible
            "tags": [[i % 2, 1] for i in range(count)],
            "meta": [{"lang": i % 2, "n": i} for i in range(count)],
        },
        schema=features.arrow_schema,
    )
    datasets.Dataset(table, info=datasets.DatasetInfo(features=features)).save_to_disk(str(folder))
    return folder


@pytest.mark.parametrize("streaming", [True, False])
def test_class_labels_arrive_as_stored_integers_unless_names_are_asked_for(
    tmp_path: Path, streaming: bool
) -> None:
    folder = labelled(tmp_path / "saved", [2, 0, -1])
    given = {"path": str(folder), "streaming": streaming, "columns": {"ground_truth": "label"}}

    ids = records(**given)
    assert [(r.ground_truth, r.metadata) for r in ids] == [
        (2, {"tags": [0, 1], "meta": {"lang": 0, "n": 0}}),
        (0, {"tags": [1, 1], "meta": {"lang": 1, "n": 1}}),
        (-1, {"tags": [0, 1], "meta": {"lang": 0, "n": 2}}),
    ]
    names = records(**given, class_labels="names")
    assert [(r.ground_truth, r.metadata) for r in names] == [
        ("pos", {"tags": ["news", "sport"], "meta": {"lang": "en", "n": 0}}),
        ("neg", {"tags": ["sport", "sport"], "meta": {"lang": "fr", "n": 1}}),
        (None, {"tags": ["news", "sport"], "meta": {"lang": "en", "n": 2}}),  # -1: no label
    ]
    kept = records(**given, class_labels="names", where={"label": "pos"})
    assert [r.record_id for r in kept] == ["r0"]


@pytest.mark.parametrize("streaming", [True, False])
def test_a_stored_integer_outside_the_classes_is_refused_when_names_are_asked_for(
    tmp_path: Path, streaming: bool
) -> None:
    folder = labelled(tmp_path / "saved", [1, 7])

    assert [r.metadata["label"] for r in records(path=str(folder), streaming=streaming)] == [1, 7]
    with pytest.raises(DataSourceError) as refused:
        records(path=str(folder), streaming=streaming, class_labels="names")
    assert str(refused.value) == (
        f"data source 'hf': {folder}/train[1]: column 'label': the class label 7 names none "
        "of the 3 classes (0 to 2, or -1 for none); read it with class_labels: ids"
    )


def test_class_labels_is_ids_or_names() -> None:
    with pytest.raises(ValueError, match=r"class_labels\n  Input should be 'ids' or 'names'"):
        records(path="x", class_labels="labels")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("streaming", [True, False])
def test_an_integer_the_json_builder_would_read_as_a_float_is_refused_naming_it(
    tmp_path: Path, streaming: bool
) -> None:
    path = write_jsonl(
        tmp_path / "scores.jsonl",
        [
            {"id": 1, "text": "a", "score": 1.5, "m": {"v": [0.5, 1]}},
            {"id": 2, "text": "b", "score": 2.5, "m": {"v": [0.5, -BIG]}},
            {"id": 3, "text": "c", "score": BIG, "m": {"v": [0.5, 1]}},
        ],
    )
    with pytest.raises(DataSourceError) as refused:
        records(path="json", data_files=str(path), streaming=streaming)
    assert str(refused.value) == (
        f"data source 'hf' (json): {path}:2: the integer {-BIG} in field 'm.v[1]' would "
        f"become {float(-BIG)!r} (the json builder reads its column as floats, exact only "
        "up to 2**53); read the file with type: file, which keeps integers exact, or write "
        "the number as text"
    )

    # An integer past 2**53 that a float happens to hold exactly is refused too: the
    # column's other values can no longer be told from their neighbours.
    even = write_jsonl(tmp_path / "even.jsonl", [{"id": 1, "x": 0.5}, {"id": 2, "x": 2**60}])
    with pytest.raises(DataSourceError, match=rf"even\.jsonl:2: the integer {2**60} in field 'x' "):
        records(path="json", data_files=str(even), streaming=streaming)

    # The same file read as type: file keeps every value exact.
    flow = FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"s": {"path": str(path)}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )
    exact = [row.fields for row in iter_source("s", flow.data["s"])]
    assert exact[2]["score"] == BIG and exact[1]["m"]["v"][1] == -BIG


def test_big_integers_in_an_integer_column_and_digits_in_text_are_kept_exact(
    tmp_path: Path,
) -> None:
    path = write_jsonl(
        tmp_path / "tweets.jsonl",
        [
            {"id": 1460323737035677698, "text": "a tweet", "ref": "12345678901234567890"},
            {"id": BIG, "text": "another 98765432109876543210", "ref": "x"},
            {"id": 3, "text": "c", "ref": "1.5"},
        ],
    )
    found = records(path="json", data_files=str(path))
    assert [r.record_id for r in found] == ["1460323737035677698", str(BIG), "3"]
    assert [r.metadata["ref"] for r in found] == ["12345678901234567890", "x", "1.5"]
