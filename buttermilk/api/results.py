"""Stream a batch's results (the export's rows) as JSONL or CSV, a chunk of jobs at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack
from typing import Literal

import anyio

from buttermilk import values
from buttermilk.batch.export import Spooled, axes_of, job_row, spooled
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
    axes = await anyio.to_thread.run_sync(axes_of, store, batch_id)
    async for jobs in job_chunks(store, batch_id):
        yield b"".join(values.dumps(job_row(job, axes.get(job.variant))) + b"\n" for job in jobs)


async def _csv_stream(stack: ExitStack, spool: Spooled) -> AsyncIterator[str]:
    with stack:  # the spool's temporary file, closed once streamed (or the client left)
        chunks = spool.csv_chunks(CHUNK)
        while (text := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield text


async def result_stream(
    store: Store, batch_id: str, fmt: ResultFormat
) -> AsyncIterator[bytes] | AsyncIterator[str]:
    """The batch's rows as JSONL, or as the export's CSV. The CSV reads every job first
    (its header needs every column), so that a batch whose results cannot be flattened
    is refused (ColumnClashError) before the response starts."""
    if fmt == "jsonl":
        return jsonl_stream(store, batch_id)
    stack = ExitStack()
    spool = await anyio.to_thread.run_sync(stack.enter_context, spooled(store, batch_id))
    return _csv_stream(stack, spool)
