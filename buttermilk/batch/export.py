"""Write a batch's jobs to JSONL, CSV or Parquet, streaming from the store.

JSONL keeps results nested. CSV and Parquet flatten them into dotted columns
(``outputs.vader.compound``); lists become JSON text. The file appears only when
complete (written beside it, then renamed).

Every value is written exactly. JSONL writes the tags of :mod:`buttermilk.values` for what
JSON cannot hold (bytes, integers beyond 64 bits, NaN); CSV writes bytes as that tag's JSON
text and every other value as text; Parquet picks a column type that holds every value of
the column (int64, else uint64, else text for integers; binary for bytes; text holding JSON
when a column mixes types).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buttermilk import values
from buttermilk.domain import JobInfo
from buttermilk.errors import InvalidOptionError
from buttermilk.store.store import Store

FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PARQUET_CHUNK = 5_000
NESTED = frozenset({"outputs", "timings", "metadata", "axes"})  # flattened into dotted columns


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, in one thread
    os.umask(mask)
    return mask


UMASK = _read_umask()


def export_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidOptionError(
            "batch.output", str(path), "the file must end in .jsonl, .csv or .parquet"
        )
    return fmt


def job_row(job: JobInfo, axes: dict[str, Any] | None = None) -> dict[str, Any]:
    """One export row: ids (with the job's combination key and repeat, and the value of
    each axis: ``axes.judge.model``), status, timing, the record's fields, outputs and
    errors."""
    result = job.result or {}
    record = job.record
    return {
        "batch_id": job.batch_id,
        "record_id": job.record_id,
        "variant": job.variant,
        "repeat": job.repeat,
        "axes": axes or None,
        "status": job.status.value,
        "attempts": job.attempts,
        "duration": job.duration,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error_type": job.error_type,
        "error_message": job.error_message,
        "cost": job.cost,
        "input_tokens": job.input_tokens,
        "output_tokens": job.output_tokens,
        "content": record.content if record else None,
        "ground_truth": record.ground_truth if record else None,
        "metadata": record.metadata if record else None,
        "outputs": result.get("outputs"),
        "timings": result.get("timings"),
    }


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if value:
                flat.update(flatten(value, f"{name}."))
        elif value is None and key in NESTED:
            continue  # a job without a result: its outputs' columns stay empty
        elif isinstance(value, list):
            flat[name] = values.dumps_text(value)
        else:
            flat[name] = value
    return flat


def _rows(store: Store, batch_id: str) -> Iterator[dict[str, Any]]:
    axes = {c.key: c.values for c in store.get_batch(batch_id).combinations()}
    for job in store.iter_jobs(batch_id):
        yield job_row(job, axes.get(job.variant))


@dataclass
class Column:
    """What one flattened column holds: its value types, and its integers' range."""

    kinds: set[type] = field(default_factory=set)
    low: int = 0
    high: int = 0

    def add(self, value: Any) -> None:
        if value is None:
            return
        kind = float if isinstance(value, float) else type(value)  # NonFiniteFloat too
        self.kinds.add(kind)
        if kind is int:
            self.low, self.high = min(self.low, value), max(self.high, value)


def columns(store: Store, batch_id: str) -> dict[str, Column]:
    """First pass: every flattened column, in order of appearance, with what it holds."""
    found: dict[str, Column] = {}
    for row in _rows(store, batch_id):
        for key, value in flatten(row).items():
            found.setdefault(key, Column()).add(value)
    return found


def csv_cell(value: Any) -> Any:
    """A flattened value as the csv module should write it: bytes as their tag's JSON."""
    return values.dumps_text(value) if isinstance(value, bytes) else value


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: csv_cell(value) for key, value in flatten(row).items()}


def _write_jsonl(store: Store, batch_id: str, out: Path) -> int:
    count = 0
    with out.open("wb") as fh:
        for row in _rows(store, batch_id):
            fh.write(values.dumps(row) + b"\n")
            count += 1
    return count


def _write_csv(store: Store, batch_id: str, out: Path) -> int:
    names = list(columns(store, batch_id))
    count = 0
    with out.open("w", newline="", encoding="utf-8") as fh:
        # A job that finished between the two passes may add columns: leave them out.
        writer = csv.DictWriter(fh, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        for row in _rows(store, batch_id):
            writer.writerow(csv_row(row))
            count += 1
    return count


EXACT_FLOAT_INTS = 2**53  # integers a float64 holds exactly


def _arrow_type(column: Column) -> Any:
    import pyarrow as pa

    kinds, low, high = column.kinds, column.low, column.high
    if kinds == {bool}:
        return pa.bool_()
    if kinds == {int}:
        if low >= -(2**63) and high < 2**63:
            return pa.int64()
        if low >= 0 and high < 2**64:
            return pa.uint64()
        return pa.string()  # the digits, exactly
    if kinds == {bytes}:
        return pa.binary()
    if kinds and kinds <= {int, float} and low >= -EXACT_FLOAT_INTS and high <= EXACT_FLOAT_INTS:
        return pa.float64()
    return pa.string()


def _write_parquet(store: Store, batch_id: str, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    found = columns(store, batch_id)
    schema = pa.schema([(name, _arrow_type(column)) for name, column in found.items()])
    strings = {name for name, column in found.items() if _arrow_type(column) == pa.string()}

    def cell(name: str, value: Any) -> Any:
        if value is None or name not in strings or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return values.dumps_text(value)

    count = 0
    with pq.ParquetWriter(out, schema) as writer:
        chunk: list[dict[str, Any]] = []
        for row in _rows(store, batch_id):
            chunk.append({k: cell(k, v) for k, v in flatten(row).items()})
            if len(chunk) >= PARQUET_CHUNK:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
                chunk = []
        if chunk or not count:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            count += len(chunk)
    return count


WRITERS: dict[str, Callable[[Store, str, Path], int]] = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def check_output(path: Path) -> None:
    """Fail now, before any work, if ``path`` has no known format or cannot become a file.

    Creates nothing (a refused command leaves no folder behind): the folders that are
    missing are made when the export is written. Raises InvalidOptionError naming
    ``batch.output``.
    """
    export_format(path)
    target = path.expanduser()
    if target.is_dir():
        raise InvalidOptionError("batch.output", str(path), f"{target} is a directory")
    existing = target.parent
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidOptionError(
            "batch.output", str(path), f"cannot create its folder ({existing} is not a folder)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidOptionError(
            "batch.output", str(path), f"its folder {existing} is not writable"
        )


def export_jobs(store: Store, batch_id: str, path: Path) -> int:
    """Write every job of ``batch_id`` to ``path`` (format from its extension)."""
    writer = WRITERS[export_format(path)]
    check_output(path)
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise InvalidOptionError(
            "batch.output", str(path), f"cannot write there ({exc.strerror})"
        ) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        count = writer(store, batch_id, tmp)
        tmp.chmod(0o666 & ~UMASK)  # mkstemp makes it private; a new file normally is not
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count
