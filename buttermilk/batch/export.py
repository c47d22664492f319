"""Write a batch's jobs to JSONL, CSV or Parquet, streaming from the store.

JSONL keeps results nested and writes the tags of :mod:`buttermilk.values` for what JSON
cannot hold (bytes, integers beyond 64 bits, NaN, decimals). CSV and Parquet flatten them
into dotted columns (``outputs.vader.compound``), as :mod:`buttermilk.batch.columns`
describes: every value exact, a column of mixed types as JSON text. The file appears only
when complete (written beside it, then renamed).

CSV and Parquet need every column before the first row: the jobs are read once, into a
temporary file (:func:`spooled`), and the columns and rows both come from that one read, so
a job that ends meanwhile is either in the export whole or not at all.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from buttermilk import values
from buttermilk.batch.columns import Column, ColumnClashError, Columns, text_cell
from buttermilk.domain import JobInfo
from buttermilk.errors import InvalidOptionError
from buttermilk.store.store import Store

FORMATS = {".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}
PARQUET_CHUNK = 5_000
CSV_CHUNK = 500


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, in one thread
    os.umask(mask)
    return mask


UMASK = _read_umask()
T = TypeVar("T")


def _listing(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def export_format(path: Path, formats: Mapping[str, str] = FORMATS) -> str:
    """The format ``path``'s extension names (one of ``formats``, by extension);
    InvalidOptionError naming ``batch.output`` and the extensions allowed otherwise."""
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise InvalidOptionError(
            "batch.output", str(path), f"the file must end in {_listing(list(formats))}"
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
        "uri": record.uri if record else None,
        "ground_truth": record.ground_truth if record else None,
        "metadata": record.metadata if record else None,
        "outputs": result.get("outputs"),
        "timings": result.get("timings"),
    }


def axes_of(store: Store, batch_id: str) -> dict[str, dict[str, Any]]:
    """Each combination's axis values, by its key (for :func:`job_row`)."""
    return {c.key: c.values for c in store.get_batch(batch_id).combinations()}


def job_rows(store: Store, batch_id: str) -> Iterator[dict[str, Any]]:
    """Every job of the batch as an export row, in planned order."""
    axes = axes_of(store, batch_id)
    for job in store.iter_jobs(batch_id):
        yield job_row(job, axes.get(job.variant))


@dataclass
class Spooled:
    """One read of a batch's jobs: their columns, and their flattened rows kept in a
    temporary file."""

    columns: Columns
    file: IO[bytes]

    def rows(self) -> Iterator[dict[str, Any]]:
        self.file.seek(0)
        for line in self.file:
            yield values.loads(line)

    def csv_chunks(self, rows: int = CSV_CHUNK) -> Iterator[str]:
        """The CSV text: the header, then ``rows`` rows at a time."""
        found, total = self.columns.found, self.columns.rows
        as_json = {name for name, column in found.items() if column.as_json(total, csv=True)}
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(found))
        writer.writeheader()
        for count, flat in enumerate(self.rows(), 1):
            writer.writerow({k: text_cell(v, k in as_json) for k, v in flat.items()})
            if count % rows == 0:
                yield _take(buffer)
        yield _take(buffer)


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


@contextmanager
def spooled(store: Store, batch_id: str, folder: Path | None = None) -> Iterator[Spooled]:
    """Read every job of ``batch_id`` once, flattening each row into a temporary file (in
    ``folder``, deleted on exit). ColumnClashError when two keys would make one column."""
    with tempfile.TemporaryFile(dir=folder) as fh:
        found = Columns()
        for row in job_rows(store, batch_id):
            fh.write(values.dumps(found.add(row)) + b"\n")
        yield Spooled(found, fh)


def _write_jsonl(store: Store, batch_id: str, out: Path) -> int:
    count = 0
    with out.open("wb") as fh:
        for row in job_rows(store, batch_id):
            fh.write(values.dumps(row) + b"\n")
            count += 1
    return count


def _write_csv(store: Store, batch_id: str, out: Path) -> int:
    with spooled(store, batch_id, out.parent) as spool:
        with out.open("w", newline="", encoding="utf-8") as fh:
            for text in spool.csv_chunks():
                fh.write(text)
        return spool.columns.rows


def _arrow_type(column: Column, rows: int) -> Any:
    import pyarrow as pa

    kinds, low, high = column.kinds, column.low, column.high
    if column.as_json(rows, csv=False):
        return pa.string()
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
    if kinds == {float} or column.numbers:
        return pa.float64()
    return pa.string()  # text, decimals (their exact digits), or no value at all


def _parquet_cell(value: Any, as_json: bool, text: bool) -> Any:
    if value is None or not text or (isinstance(value, str) and not as_json):
        return value
    if as_json:
        return values.dumps_text(value)
    return str(value)  # an integer beyond 64 bits or a decimal: its exact digits


def _write_parquet(store: Store, batch_id: str, out: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with spooled(store, batch_id, out.parent) as spool:
        found, total = spool.columns.found, spool.columns.rows
        types = {name: _arrow_type(column, total) for name, column in found.items()}
        schema = pa.schema(list(types.items()))
        as_json = {name for name, column in found.items() if column.as_json(total, csv=False)}
        text = {name for name, kind in types.items() if kind == pa.string()}
        with pq.ParquetWriter(out, schema) as writer:
            chunk: list[dict[str, Any]] = []
            for flat in spool.rows():
                chunk.append(
                    {k: _parquet_cell(v, k in as_json, k in text) for k, v in flat.items()}
                )
                if len(chunk) >= PARQUET_CHUNK:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    chunk = []
            if chunk or not total:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
        return total


WRITERS: dict[str, Callable[[Store, str, Path], int]] = {
    "jsonl": _write_jsonl,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def check_output(path: Path, formats: Mapping[str, str] = FORMATS) -> None:
    """Fail now, before any work, if ``path`` has no known format (an extension of
    ``formats``) or cannot become a file.

    Creates nothing (a refused command leaves no folder behind): the folders that are
    missing are made when the export is written. Raises InvalidOptionError naming
    ``batch.output``.
    """
    export_format(path, formats)
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

    def write(tmp: Path) -> int:
        try:
            return writer(store, batch_id, tmp)
        except ColumnClashError as exc:
            raise ColumnClashError(f"{path}: {exc}") from None

    return write_atomically(path, write)


def write_atomically(
    path: Path, write: Callable[[Path], T], formats: Mapping[str, str] = FORMATS
) -> T:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``: the
    file appears only when complete (no half file if ``write`` raises). Checks ``path``
    first (:func:`check_output`, against ``formats``); returns what ``write`` returned."""
    check_output(path, formats)
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
        found = write(tmp)
        tmp.chmod(0o666 & ~UMASK)  # mkstemp makes it private; a new file normally is not
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return found
