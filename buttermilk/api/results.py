"""Stream a batch's results (the export's rows) as JSONL or CSV, a chunk of jobs at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Literal

import anyio

from buttermilk import values
from buttermilk.batch.export import columns, csv_row, job_row
from buttermilk.domain import JobInfo
from buttermilk.store.store import Store

ResultFormat = Literal["jsonl", "csv"]
MEDIA_TYPES: dict[ResultFormat, str] = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
CHUNK = 500


def _read(store: Store, batch_id: str, after_seq: int, limit: int) -> list[JobInfo]:
    return list(store.iter_jobs(batch_id, after_seq=after_seq, limit=limit))


async def job_chunks(
    store: Store, batch_id: str, chunk: int = CHUNK
) -> AsyncIterator[list[JobInfo]]:
    """Every job of the batch in planned order, ``chunk`` jobs per store read."""
    after_seq = -1
    while True:
        jobs = await anyio.to_thread.run_sync(_read, store, batch_id, after_seq, chunk)
        if not jobs:
            return
        yield jobs
        if len(jobs) < chunk:
            return
        after_seq = jobs[-1].seq


async def jsonl_stream(store: Store, batch_id: str) -> AsyncIterator[bytes]:
    async for jobs in job_chunks(store, batch_id):
        yield b"".join(values.dumps(job_row(job)) + b"\n" for job in jobs)


async def csv_stream(store: Store, batch_id: str) -> AsyncIterator[str]:
    """The export's CSV: a first pass finds the columns, a second writes the rows."""
    names = list(await anyio.to_thread.run_sync(columns, store, batch_id))
    buffer = io.StringIO()
    # Jobs that end between the two passes may bring new columns: those cells are left out.
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")

    def take() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    writer.writeheader()
    yield take()
    async for jobs in job_chunks(store, batch_id):
        for job in jobs:
            writer.writerow(csv_row(job_row(job)))
        yield take()


def result_stream(store: Store, batch_id: str, fmt: ResultFormat) -> AsyncIterator[bytes | str]:
    return jsonl_stream(store, batch_id) if fmt == "jsonl" else csv_stream(store, batch_id)
