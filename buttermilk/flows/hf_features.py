"""A Hugging Face dataset's features, in their JSON form, applied to its rows.

The JSON form is what ``Features.to_dict()`` gives, what a ``save_to_disk`` folder keeps
in ``dataset_info.json`` and what a Parquet file written by the library keeps under its
``huggingface`` schema metadata: ``{"label": {"_type": "ClassLabel", "names": [...]},
"tags": {"_type": "List", "feature": {...}}, "image": {"_type": "Image"}, ...}``; a
mapping without ``_type`` is a struct.

- An image or audio column's cell (``{bytes, path}``) arrives as the file's bytes.
- A ``ClassLabel`` value stays the integer the dataset stores (``class_labels: ids``, the
  default: nothing changed), or becomes its class name (``class_labels: names``, as
  ``ClassLabel.int2str`` gives it), inside lists and structs too; -1, the library's
  "no label", becomes null. An integer outside the classes is refused, naming the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from buttermilk.errors import DataSourceError

MEDIA = ("Image", "Audio")
NO_LABEL = -1  # what the datasets library stores for an example without a label
_LISTS = ("Sequence", "List", "LargeList")


@dataclass(frozen=True, slots=True)
class Names:
    """A ClassLabel: its class names, by index."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListOf:
    item: Plan


@dataclass(frozen=True, slots=True)
class Fields:
    fields: dict[str, Plan]


Plan = Names | ListOf | Fields  # where a value holds class labels


def schema_features(schema: Any) -> dict[str, Any]:
    """The features an Arrow schema's ``huggingface`` metadata keeps (``{}`` without)."""
    metadata = getattr(schema, "metadata", None) or {}
    raw = metadata.get(b"huggingface")
    if raw is None:
        return {}
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def media_columns(features: dict[str, Any]) -> list[str]:
    """The columns that hold an image or audio file (``{bytes, path}``)."""
    return [
        column
        for column, feature in features.items()
        if isinstance(feature, dict) and feature.get("_type") in MEDIA
    ]


def _plan(feature: Any) -> Plan | None:
    """Where ``feature`` holds class labels; None when it holds none."""
    if isinstance(feature, list):  # an old form of a list: [item feature]
        inner = _plan(feature[0]) if len(feature) == 1 else None
        return ListOf(inner) if inner is not None else None
    if not isinstance(feature, dict):
        return None
    kind = feature.get("_type")
    if kind == "ClassLabel":
        return Names(tuple(str(name) for name in feature.get("names") or ()))
    if kind in _LISTS:
        inner = _plan(feature.get("feature"))
        if inner is None:
            return None
        if kind == "Sequence" and isinstance(inner, Fields):  # stored as a struct of lists
            return Fields({key: ListOf(plan) for key, plan in inner.fields.items()})
        return ListOf(inner)
    if kind is None:  # a struct: a feature per key
        fields = {key: plan for key, sub in feature.items() if (plan := _plan(sub)) is not None}
        return Fields(fields) if fields else None
    return None


def label_plans(features: dict[str, Any]) -> dict[str, Plan]:
    """Per column, where its values hold class labels (columns without any left out)."""
    return {
        column: plan for column, feature in features.items() if (plan := _plan(feature)) is not None
    }


def named(value: Any, plan: Plan, where: str) -> Any:
    """``value`` with each class label as its class name (-1: null). Raises
    DataSourceError (naming ``where``: the row and column) for an integer outside the
    classes."""
    if value is None:
        return None
    if isinstance(plan, Names):
        if value == NO_LABEL and not isinstance(value, bool):
            return None
        known = isinstance(value, int) and not isinstance(value, bool)
        if not known or not 0 <= value < len(plan.names):
            raise DataSourceError(
                f"{where}: the class label {value!r} names none of the {len(plan.names)} "
                f"classes (0 to {len(plan.names) - 1}, or -1 for none); read it with "
                "class_labels: ids"
            )
        return plan.names[value]
    if isinstance(plan, ListOf):
        if not isinstance(value, list):
            return value
        return [named(item, plan.item, where) for item in value]
    if isinstance(value, dict):
        return {
            key: named(item, plan.fields[key], where) if key in plan.fields else item
            for key, item in value.items()
        }
    return value


def media_bytes(value: Any, location: str) -> Any:
    """An image or audio cell (``{bytes, path}``) as its bytes: those it holds, or its
    file's. Raises DataSourceError naming the row when the file cannot be read."""
    if not isinstance(value, dict):
        return value
    if value.get("bytes") is not None:
        return value["bytes"]
    path = value.get("path")
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise DataSourceError(f"{location}: cannot read its file {path} ({exc})") from None


@dataclass(frozen=True, slots=True)
class RowFeatures:
    """What a split's features change in each of its rows."""

    media: list[str]
    labels: dict[str, Plan]

    @classmethod
    def of(cls, features: dict[str, Any], class_labels: str) -> RowFeatures:
        """``class_labels``: ``ids`` (values as stored) or ``names``."""
        labels = label_plans(features) if class_labels == "names" else {}
        return cls(media=media_columns(features), labels=labels)

    def apply(self, row: dict[str, Any], location: str) -> dict[str, Any]:
        for column in self.media:
            row[column] = media_bytes(row.get(column), location)
        for column, plan in self.labels.items():
            if column in row:
                row[column] = named(row[column], plan, f"{location}: column {column!r}")
        return row
