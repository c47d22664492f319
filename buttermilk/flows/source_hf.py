"""``type: huggingface``: one split of a dataset, through the ``datasets`` library.

``path`` is what :func:`datasets.load_dataset` takes (a Hub name such as ``tweet_eval``,
a builder such as ``json``/``csv``/``parquet`` with ``data_files``, or a local folder),
or a folder written by ``save_to_disk`` (read with :func:`datasets.load_from_disk`).
Rows are read as Arrow tables and turned into values exactly as Parquet's are
(:func:`buttermilk.flows.parquet.iter_arrow`); features apply as
:mod:`buttermilk.flows.hf_features` says (images and audio as bytes, ``class_labels``).
``streaming: true`` (the default) reads rows as they come, without copying the dataset
into the cache first; a ``save_to_disk`` folder and the ``parquet`` builder over local
files then stream through pyarrow alone (:mod:`buttermilk.flows.hf_local`), without
importing the library. The library is an optional extra:
``pip install 'buttermilk-batch[hf]'``.

Location of a row: ``PATH[NAME]/SPLIT[index]`` (0-based).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from buttermilk.errors import DataSourceError, MissingPackageError, SourceUnavailableError
from buttermilk.flows import hf_json, hf_local
from buttermilk.flows.hf_features import RowFeatures, schema_features
from buttermilk.flows.hf_local import LocalSplit
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import HuggingFaceSource

BATCH_ROWS = 1_000


def _missing(name: str) -> MissingPackageError:
    return MissingPackageError(
        f"data source {name!r}: type: huggingface needs the datasets library: "
        "pip install 'buttermilk-batch[hf]'"
    )


def _installed(name: str) -> None:
    """Raise MissingPackageError unless the library is installed (not importing it)."""
    if "datasets" in sys.modules:
        found = sys.modules["datasets"] is not None
    else:
        found = importlib.util.find_spec("datasets") is not None
    if not found:
        raise _missing(name)


def _datasets(name: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise _missing(name) from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def check(name: str, source: HuggingFaceSource) -> None:
    """Fail before reading when the library is missing."""
    _installed(name)


def row_groups(name: str, source: HuggingFaceSource) -> Iterator[tuple[str, Iterator[Row]]]:
    """One group: the split's rows in order."""
    yield "huggingface", _rows(name, source)


def _split(name: str, source: HuggingFaceSource) -> LocalSplit | None:
    """The split's schema, batches and features; None for a split without rows."""
    _installed(name)
    where = f"data source {name!r} ({source.path})"
    folder = os.path.expanduser(source.path)
    if hf_local.saved_kind(folder) is not None:
        if source.streaming:
            return hf_local.saved_split(where, folder, source)
        split_folder = hf_local.saved_split_folder(where, folder, source)
        return _through_library(name, where, lambda ds: ds.load_from_disk(split_folder))
    patterns = hf_local.local_parquet_files(source)
    if patterns is not None and source.streaming:
        return hf_local.parquet_split(where, patterns, source.split)
    return _through_library(
        name,
        where,
        lambda ds: ds.load_dataset(
            source.path,
            source.name,
            split=source.split,
            revision=source.revision,
            data_files=source.data_files,
            streaming=source.streaming,
        ),
    )


def _library_error(where: str, exc: Exception) -> DataSourceError | SourceUnavailableError:
    if isinstance(exc, ConnectionError):  # the Hub (or a URL) could not be reached
        return SourceUnavailableError(f"{where}: cannot reach it ({exc})")
    return DataSourceError(f"{where}: {' '.join(str(exc).split())}")  # a bad split, name, file


_LIBRARY_ERRORS = (ValueError, OSError)  # FileNotFoundError and ConnectionError included


def _through_library(name: str, where: str, load: Callable[[Any], Any]) -> LocalSplit | None:
    """A split the ``datasets`` library loads (``load`` is given the module)."""
    datasets = _datasets(name)
    try:
        dataset = load(datasets)
        batches = iter(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS))
        first = next(batches, None)
    except _LIBRARY_ERRORS as exc:
        raise _library_error(where, exc) from None
    if first is None:
        return None
    features = getattr(dataset, "features", None)
    found = features.to_dict() if features is not None else schema_features(first.schema)
    return LocalSplit(first.schema, _guarded(where, itertools.chain([first], batches)), found)


def _guarded(where: str, batches: Iterator[Any]) -> Iterator[Any]:
    """``batches``, a failure of the library while reading them as one error naming the
    source (a connection lost to the Hub: SourceUnavailableError)."""
    while True:
        try:
            batch = next(batches, None)
        except _LIBRARY_ERRORS as exc:
            raise _library_error(where, exc) from None
        if batch is None:
            return
        yield batch


def _rows(name: str, source: HuggingFaceSource) -> Iterator[Row]:
    from buttermilk.flows.parquet import iter_arrow

    split = _split(name, source)
    if split is None:
        return
    shown = source.path + (f"[{source.name}]" if source.name else "") + f"/{source.split}"
    features = RowFeatures.of(split.features, source.class_labels)
    exact = hf_json.checker(f"data source {name!r} ({source.path})", source)
    for location, row in iter_arrow(shown, split.schema, split.batches):
        if exact is not None:
            exact(row)
        yield location, features.apply(row, location)
