"""``type: huggingface``: one split of a dataset, through the ``datasets`` library.

``path`` is what :func:`datasets.load_dataset` takes (a Hub name such as ``tweet_eval``,
a builder such as ``json``/``csv``/``parquet`` with ``data_files``, or a local folder),
or a folder written by ``save_to_disk`` (read with :func:`datasets.load_from_disk`).
Rows are read as Arrow tables and turned into values exactly as Parquet's are
(:func:`buttermilk.flows.parquet.iter_arrow`); an image or audio feature arrives as its
file's bytes. ``streaming: true`` (the default) reads rows as they come, without copying
the dataset into the cache first. The library is an optional extra:
``pip install 'buttermilk-batch[hf]'``.

Location of a row: ``PATH[NAME]/SPLIT[index]`` (0-based).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import HuggingFaceSource

BATCH_ROWS = 1_000
_MEDIA = ("Image", "Audio")


def _datasets(name: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise MissingPackageError(
            f"data source {name!r}: type: huggingface needs the datasets library: "
            "pip install 'buttermilk-batch[hf]'"
        ) from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def check(name: str, source: HuggingFaceSource) -> None:
    """Fail before reading when the library is missing."""
    _datasets(name)


def row_groups(name: str, source: HuggingFaceSource) -> Iterator[tuple[str, Iterator[Row]]]:
    """One group: the split's rows in order."""
    yield "huggingface", _rows(name, source)


def _saved(path: str) -> bool:
    """A folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return any(
        os.path.isfile(os.path.join(path, marker)) for marker in ("state.json", "dataset_dict.json")
    )


def _load(name: str, source: HuggingFaceSource) -> Any:
    datasets = _datasets(name)
    where = f"data source {name!r} ({source.path})"
    try:
        if _saved(os.path.expanduser(source.path)):
            found = datasets.load_from_disk(os.path.expanduser(source.path))
            for option in ("name", "revision"):
                if getattr(source, option) is not None:
                    raise DataSourceError(
                        f"{where}: a folder saved by save_to_disk has no {option}; leave "
                        f"{option}: out"
                    )
            if not isinstance(found, datasets.DatasetDict):
                own = str(found.split) if found.split is not None else "train"
                if source.split != own:
                    raise DataSourceError(
                        f"{where}: no split {source.split!r} (a saved Dataset has one split: {own})"
                    )
            if isinstance(found, datasets.DatasetDict):
                if source.split not in found:
                    raise DataSourceError(
                        f"{where}: no split {source.split!r} (its splits: {', '.join(found)})"
                    )
                found = found[source.split]
            return found.to_iterable_dataset() if source.streaming else found
        return datasets.load_dataset(
            source.path,
            source.name,
            split=source.split,
            revision=source.revision,
            data_files=source.data_files,
            streaming=source.streaming,
        )
    except DataSourceError:
        raise
    except ConnectionError as exc:  # the Hub (or a URL) could not be reached
        raise SourceUnavailableError(f"{where}: cannot reach it ({exc})") from None
    except (ValueError, FileNotFoundError, OSError) as exc:  # a bad split, name or file
        message = " ".join(str(exc).split())
        raise DataSourceError(f"{where}: {message}") from None


def _media_columns(dataset: Any) -> list[str]:
    features = getattr(dataset, "features", None) or {}
    return [key for key, kind in features.items() if type(kind).__name__ in _MEDIA]


def _media_bytes(value: Any, location: str) -> Any:
    """An image or audio cell (``{bytes, path}``) as its bytes."""
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


def _rows(name: str, source: HuggingFaceSource) -> Iterator[Row]:
    from buttermilk.flows.parquet import iter_arrow

    dataset = _load(name, source)
    media = _media_columns(dataset)
    shown = source.path + (f"[{source.name}]" if source.name else "") + f"/{source.split}"
    batches = iter(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS))
    try:
        first = next(batches, None)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise DataSourceError(f"data source {name!r}: {' '.join(str(exc).split())}") from None
    if first is None:
        return

    def tables() -> Iterator[Any]:
        yield first
        yield from batches

    for location, row in iter_arrow(shown, first.schema, tables()):
        for column in media:
            row[column] = _media_bytes(row.get(column), location)
        yield location, row
