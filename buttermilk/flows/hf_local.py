"""Local Hugging Face data read with pyarrow alone, without importing ``datasets``.

Two layouts the library writes in the open are streamed here, a record batch at a time,
when a source streams (``streaming: true``, the default):

- a folder written by ``save_to_disk``: a Dataset (``state.json`` lists its Arrow files,
  ``dataset_info.json`` keeps its features) or a DatasetDict (``dataset_dict.json`` names
  its splits, a folder each);
- the ``parquet`` builder over local ``data_files`` (paths or globs; their split is
  ``train``), its features read from the files' ``huggingface`` metadata.

Importing ``datasets`` alone takes about 190 MB (pandas, huggingface_hub); pyarrow about
65 MB. Every other source (the Hub, other builders, ``streaming: false``) goes through
the library (:mod:`buttermilk.flows.source_hf`). The rows are the same either way.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from buttermilk.errors import DataSourceError
from buttermilk.flows.hf_features import schema_features
from buttermilk.flows.source_models import HuggingFaceSource

BATCH_ROWS = 1_000


@dataclass
class LocalSplit:
    """One split's Arrow schema, its record batches (read as they are asked for) and its
    features (JSON form)."""

    schema: Any
    batches: Iterator[Any]
    features: dict[str, Any]


def no_split(where: str, split: str, splits: list[str]) -> DataSourceError:
    """The one form of an unknown split, whoever found it (the library or this module)."""
    return DataSourceError(f"{where}: no split {split!r} (its splits: {', '.join(splits)})")


def is_slice(split: str) -> bool:
    """Whether ``split`` is a split expression (``train[:5]``, ``train[10%:]``,
    ``train+test``) rather than a split's name."""
    return "[" in split or "+" in split


def slice_needs_copy(where: str, split: str) -> DataSourceError:
    return DataSourceError(f"{where}: split {split!r} is a slice; slices need streaming: false")


def split_name(split: str) -> str:
    """The split a single slice cuts (``train[:5]`` -> ``train``)."""
    return split.split("[", 1)[0].strip()


def saved_kind(path: str) -> str | None:
    """``dataset`` or ``dict`` for a folder written by ``save_to_disk``; None otherwise."""
    if os.path.isfile(os.path.join(path, "dataset_dict.json")):
        return "dict"
    if os.path.isfile(os.path.join(path, "state.json")):
        return "dataset"
    return None


def _json(where: str, path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise DataSourceError(f"{where}: cannot read {path} ({exc})") from None


def saved_split_folder(where: str, folder: str, source: HuggingFaceSource) -> str:
    """The folder of the split ``source`` asks for in a ``save_to_disk`` folder. Raises
    DataSourceError for an unknown split, or a ``name``/``revision`` (it has none)."""
    for option in ("name", "revision"):
        if getattr(source, option) is not None:
            raise DataSourceError(
                f"{where}: a folder saved by save_to_disk has no {option}; leave {option}: out"
            )
    if is_slice(source.split) and (source.streaming or "+" in source.split):
        if source.streaming:
            raise slice_needs_copy(where, source.split)
        raise DataSourceError(
            f"{where}: a folder saved by save_to_disk takes one split or one split's slice "
            f"(train[:5]), not {source.split!r}"
        )
    name = split_name(source.split)
    if saved_kind(folder) == "dict":
        splits = _json(where, os.path.join(folder, "dataset_dict.json")).get("splits") or []
        if name not in splits:
            raise no_split(where, name, splits)
        return os.path.join(folder, name)
    own = _json(where, os.path.join(folder, "state.json")).get("_split") or "train"
    if name != own:
        raise no_split(where, name, [own])
    return folder


def _arrow_batches(where: str, paths: list[str]) -> tuple[Any, Iterator[Any]]:
    """The schema of the first Arrow stream file, and every file's batches in turn (each
    file read as a stream, not memory-mapped: only the batch being read is resident)."""
    import pyarrow as pa

    one_thread = pa.ipc.IpcReadOptions(use_threads=False)

    def opened(path: str) -> tuple[Any, Any]:
        try:
            file = pa.OSFile(path)
        except OSError as exc:
            raise DataSourceError(f"{where}: cannot read {path} ({exc})") from None
        try:
            return file, pa.ipc.open_stream(file, options=one_thread)
        except (OSError, pa.ArrowException) as exc:
            file.close()
            raise DataSourceError(f"{where}: {path} is not an Arrow stream ({exc})") from None

    first = opened(paths[0])

    def batches() -> Iterator[Any]:
        for index, path in enumerate(paths):
            file, reader = first if index == 0 else opened(path)
            try:
                if index:
                    _same_schema(where, path, paths[0], first[1].schema, reader.schema)
                yield from _sliced(reader)
            finally:
                file.close()

    return first[1].schema, batches()


def _sliced(batches: Any) -> Iterator[Any]:
    for batch in batches:
        for offset in range(0, batch.num_rows, BATCH_ROWS):
            yield batch.slice(offset, BATCH_ROWS)


def _same_schema(where: str, path: str, first_path: str, first: Any, other: Any) -> None:
    if not other.equals(first, check_metadata=False):
        raise DataSourceError(
            f"{where}: {path} has other columns or types than {first_path}; the files of "
            "one split must share them"
        )


def saved_split(where: str, folder: str, source: HuggingFaceSource) -> LocalSplit:
    """The split of a ``save_to_disk`` folder, streamed from its Arrow files."""
    split_folder = saved_split_folder(where, folder, source)
    state = _json(where, os.path.join(split_folder, "state.json"))
    info = _json(where, os.path.join(split_folder, "dataset_info.json"))
    files = [os.path.join(split_folder, f["filename"]) for f in state.get("_data_files") or []]
    if not files:
        raise DataSourceError(f"{where}: {split_folder}/state.json lists no data files")
    schema, batches = _arrow_batches(where, files)
    features = info.get("features") if isinstance(info, dict) else None
    return LocalSplit(schema, batches, features or schema_features(schema))


def local_parquet_files(source: HuggingFaceSource) -> list[str] | None:
    """The patterns of a ``parquet`` builder source over local files, or None when the
    library must read it (the Hub, URLs, a configuration name or revision)."""
    if source.path != "parquet" or source.data_files is None:
        return None
    if source.name is not None or source.revision is not None:
        return None
    patterns = [source.data_files] if isinstance(source.data_files, str) else source.data_files
    if not patterns or any("://" in pattern for pattern in patterns):
        return None
    return list(patterns)


def _resolved(where: str, patterns: list[str]) -> list[str]:
    """The files of each pattern, sorted per pattern (``**`` recursive; hidden files and
    folders only when the pattern names them, as the library resolves them)."""
    found: list[str] = []
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        if glob.has_magic(path):
            matched = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        else:
            matched = [path] if os.path.isfile(path) else []
        if not matched:
            raise DataSourceError(f"{where}: no file matches {pattern!r}")
        found.extend(matched)
    return found


def parquet_split(where: str, patterns: list[str], split: str) -> LocalSplit:
    """The ``train`` split of the ``parquet`` builder over local files, streamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if split != "train":  # data_files without splits are train, as the library reads them
        raise no_split(where, split, ["train"])
    paths = _resolved(where, patterns)

    def opened(path: str) -> Any:
        try:
            return pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise DataSourceError(
                f"{where}: {path} is not a readable Parquet file ({exc})"
            ) from None

    first = opened(paths[0])

    def batches() -> Iterator[Any]:
        for index, path in enumerate(paths):
            current = first if index == 0 else opened(path)
            try:
                if index:
                    _same_schema(where, path, paths[0], first.schema_arrow, current.schema_arrow)
                # One thread: a pool's threads each keep memory (60 MB more at 1M rows)
                yield from current.iter_batches(batch_size=BATCH_ROWS, use_threads=False)
            finally:
                current.close()

    schema = first.schema_arrow
    return LocalSplit(schema, batches(), schema_features(schema))
