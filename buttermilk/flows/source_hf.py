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

A slice of a split (``train[:5]``) needs ``streaming: false``: a stream cannot be cut.
A ``path`` that can only be a folder (``./x``, ``a/b/c``) and is not there is refused as
such, not asked of the Hub.

Location of a row: ``PATH[NAME]/SPLIT[index]`` (0-based).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from buttermilk.errors import (
    DataSourceError,
    MissingPackageError,
    SourceUnavailableError,
    one_line,
)
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
    """Fail before reading when the library is missing, a local folder is not there, or a
    streamed split is a slice."""
    _installed(name)
    _check_path_and_split(f"data source {name!r} ({source.path})", source)


def _looks_local(path: str) -> bool:
    """Whether ``path`` can only be a folder, not a Hub dataset (``NAME`` or ``ORG/NAME``):
    it starts with ``./``, ``../``, ``/`` or ``~``, has more than one separator, or its
    first part is a folder here (``data/nothing_here`` beside a ``data`` folder)."""
    if path.startswith(("./", "../", "/", "~", "." + os.sep, ".." + os.sep, os.sep)):
        return True
    parts = path.replace(os.sep, "/").split("/")
    return len(parts) > 2 or (len(parts) == 2 and os.path.isdir(parts[0]))


def _check_path_and_split(where: str, source: HuggingFaceSource) -> None:
    """Raise DataSourceError for a local folder that is not there (not asked of the Hub),
    or a slice of a split the library would stream (it cannot cut a stream)."""
    folder = os.path.expanduser(source.path)
    if not os.path.exists(folder) and _looks_local(source.path):
        raise DataSourceError(f"{where}: no such folder: {source.path}")
    if source.streaming and hf_local.is_slice(source.split):
        raise hf_local.slice_needs_copy(where, source.split)


def row_groups(name: str, source: HuggingFaceSource) -> Iterator[tuple[str, Iterator[Row]]]:
    """One group: the split's rows in order."""
    yield "huggingface", _rows(name, source)


def _split(name: str, source: HuggingFaceSource) -> LocalSplit | None:
    """The split's schema, batches and features; None for a split without rows."""
    _installed(name)
    where = f"data source {name!r} ({source.path})"
    _check_path_and_split(where, source)
    folder = os.path.expanduser(source.path)
    if hf_local.saved_kind(folder) is not None:
        if source.streaming:
            return hf_local.saved_split(where, folder, source)
        split_folder = hf_local.saved_split_folder(where, folder, source)
        return _through_library(
            name, where, lambda ds: _cut(ds, ds.load_from_disk(split_folder), source.split)
        )
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


def _cut(datasets: Any, dataset: Any, split: str) -> Any:
    """``dataset`` (one split, loaded whole) cut as ``split`` asks (``train[:5]``)."""
    if not hf_local.is_slice(split):
        return dataset
    name = hf_local.split_name(split)
    instruction = datasets.ReadInstruction.from_spec(split)
    [part] = instruction.to_absolute({name: len(dataset)})
    return dataset.select(range(part.from_, part.to))


# The library's words for an unknown split, streamed and not
_BAD_SPLIT = (
    re.compile(r"^Bad split: (?P<split>.*)\. Available splits: (?P<splits>\[.*\])$"),
    re.compile(r'^Unknown split "(?P<split>.*)"\. Should be one of (?P<splits>\[.*\])\.?$'),
)


def _library_error(where: str, exc: Exception) -> DataSourceError | SourceUnavailableError:
    said = " ".join(str(exc).split())
    if isinstance(exc, ConnectionError):  # the Hub (or a URL) could not be reached
        return SourceUnavailableError(f"{where}: cannot reach it ({one_line(said)})")
    for pattern in _BAD_SPLIT:
        found = pattern.match(said)
        if found:
            with contextlib.suppress(ValueError, SyntaxError):
                splits = ast.literal_eval(found.group("splits"))
                return hf_local.no_split(where, found.group("split"), [str(s) for s in splits])
    return DataSourceError(f"{where}: {one_line(said)}")  # a bad name, file, configuration


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
