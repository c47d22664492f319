"""Batch rows: create (with every job of the grid), find, list, cancel and end batches."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select, text, update

from buttermilk.domain import BatchInfo, BatchRequest, BatchStatus, JobStatus
from buttermilk.errors import AmbiguousBatchIdError, BatchStateError, UnknownBatchError
from buttermilk.records import Record
from buttermilk.store import bulk
from buttermilk.store.engine import StoreBase, dumps
from buttermilk.store.ops import LIVE_BATCH, Outcome
from buttermilk.store.rows import batch_info
from buttermilk.store.schema import batches, jobs
from buttermilk.store.statements import COMPLETE, LOCK_BATCHES, SQLITE_INSERT_JOBS

INSERT_CHUNK = 5_000
ANALYZE_AFTER = 1_000  # jobs in a new batch that make PostgreSQL refresh its statistics


def job_rows(
    batch_id: str, records: Sequence[Record], variants: Sequence[str], repeats: int
) -> Iterator[tuple[Any, ...]]:
    """(batch_id, record_id, variant, repeat, seq, status, record JSON) of every job, in
    planned order: all combinations and repeats of a record next to each other
    (seq = (record index x repeats + repeat) x combinations + combination index), so a
    batch stopped early has the same records done for every combination."""
    pending = JobStatus.PENDING.value
    seq = 0
    for rec in records:
        stored = dumps(dict(rec.__dict__))
        for repeat in range(repeats):
            for variant in variants:
                yield (batch_id, rec.record_id, variant, repeat, seq, pending, stored)
                seq += 1


def cancel_open_jobs(conn: Connection, batch_id: str, now: float) -> None:
    """Cancel the batch's pending jobs and running ones whose lease ran out."""
    conn.execute(
        update(jobs)
        .where(
            jobs.c.batch_id == batch_id,
            or_(
                jobs.c.status == JobStatus.PENDING.value,
                and_(jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < now),
            ),
        )
        .values(status=JobStatus.CANCELLED.value, finished_at=now)
    )


class BatchRows(StoreBase):
    """The store's batch rows."""

    def create_batch(
        self,
        *,
        batch_id: str,
        request: BatchRequest,
        flow_snapshot: dict[str, Any],
        seed: int,
        records: Sequence[Record],
        variants: Sequence[str] = ("default",),
    ) -> BatchInfo:
        """Store a batch and its pending jobs (every record x ``variants`` (combination
        keys) x ``request.repeats``), all in one transaction."""
        repeats = request.repeats or 1
        total = len(records) * len(variants) * repeats
        now = time.time()
        row = {
            "id": batch_id,
            "flow": request.flow,
            "status": BatchStatus.PENDING.value,
            "request": request.model_dump(mode="json"),
            "flow_snapshot": flow_snapshot,
            "total": total,
            "seed": seed,
            "published": False,
            "created_at": now,
            "max_cost": request.max_cost,
        }
        rows = job_rows(batch_id, records, variants, repeats)
        with self._write(f"cannot store the new batch ({total:,} jobs)") as conn:
            conn.execute(insert(batches), row)
            if self._is_sqlite:
                # SQLite runs in this process: its executemany, fed tuples, is three times
                # faster than SQLAlchemy's per-row parameter handling.
                while chunk := [r for _, r in zip(range(INSERT_CHUNK), rows, strict=False)]:
                    conn.exec_driver_sql(SQLITE_INSERT_JOBS, chunk)
            else:
                # COPY: one stream, one job-count trigger run (an INSERT per row would fire
                # it per row, and costs a round trip each).
                bulk.copy_jobs(conn, rows)
        if not self._is_sqlite and total >= ANALYZE_AFTER:
            # Fresh statistics, so that claims by primary key are planned as such.
            with self._failing_as(), self.engine.connect() as conn:
                conn.execute(text("ANALYZE jobs"))
                conn.commit()
        return batch_info(row | {"started_at": None, "finished_at": None, "error": None})  # type: ignore[arg-type]

    def mark_published(self, batch_id: str) -> None:
        with self._write() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id).values(published=True))

    def delete_batch(self, batch_id: str) -> None:
        with self._write() as conn:
            conn.execute(delete(jobs).where(jobs.c.batch_id == batch_id))
            conn.execute(delete(batches).where(batches.c.id == batch_id))

    def resolve_id(self, id_or_prefix: str) -> str:
        """The full id of the one batch whose id is, or starts with, ``id_or_prefix``."""
        prefix = id_or_prefix.strip()
        if not prefix:
            raise UnknownBatchError("no batch id given: set batch.batch_id=ID (a prefix is enough)")
        with self._read() as conn:
            exact = conn.execute(select(batches.c.id).where(batches.c.id == prefix)).scalar()
            if exact:
                return str(exact)
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            found = (
                conn.execute(
                    select(batches.c.id)
                    .where(batches.c.id.like(f"{escaped}%", escape="\\"))
                    .limit(3)
                )
                .scalars()
                .all()
            )
        if not found:
            raise UnknownBatchError(
                f"unknown batch id {prefix!r}: no batch has this id or prefix "
                "(batch.command=list shows them)"
            )
        if len(found) > 1:
            raise AmbiguousBatchIdError(
                f"batch id prefix {prefix!r} matches several batches ({', '.join(found)}, ...): "
                "give more characters"
            )
        return str(found[0])

    def get_batch(self, batch_id: str) -> BatchInfo:
        with self._read() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).mappings().first()
        if row is None:
            raise UnknownBatchError(f"unknown batch id {batch_id!r}")
        return batch_info(row)

    def list_batches(
        self,
        *,
        status: BatchStatus | None = None,
        flow: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[BatchInfo]:
        query = select(batches).order_by(batches.c.created_at.desc(), batches.c.id)
        if status is not None:
            query = query.where(batches.c.status == status.value)
        if flow is not None:
            query = query.where(batches.c.flow == flow)
        with self._read() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).mappings().all()
        return [batch_info(row) for row in rows]

    def count_batches(self, *, status: BatchStatus | None = None, flow: str | None = None) -> int:
        query = select(func.count()).select_from(batches)
        if status is not None:
            query = query.where(batches.c.status == status.value)
        if flow is not None:
            query = query.where(batches.c.flow == flow)
        with self._read() as conn:
            return int(conn.execute(query).scalar() or 0)

    def batch_statuses(self, batch_ids: Iterable[str]) -> dict[str, BatchStatus]:
        ids = list(batch_ids)
        if not ids:
            return {}
        with self._read() as conn:
            rows = conn.execute(select(batches.c.id, batches.c.status).where(batches.c.id.in_(ids)))
            return {bid: BatchStatus(status) for bid, status in rows}

    def cancel(self, batch_id: str, reason: str = "cancelled by user") -> BatchInfo:
        """End a live batch as cancelled; its pending jobs (and abandoned running ones) too.

        Cancelling a cancelled batch changes nothing; a completed or failed batch cannot be
        cancelled. Jobs running on live workers are cancelled by those workers.
        """
        now = time.time()
        with self._write() as conn:
            status = conn.execute(select(batches.c.status).where(batches.c.id == batch_id)).scalar()
            if status is None:
                raise UnknownBatchError(f"unknown batch id {batch_id!r}")
            if status in (BatchStatus.COMPLETED.value, BatchStatus.FAILED.value):
                raise BatchStateError(
                    f"batch {batch_id} has already ended ({status}); nothing to cancel"
                )
            if status != BatchStatus.CANCELLED.value:
                conn.execute(
                    update(batches)
                    .where(batches.c.id == batch_id)
                    .values(status=BatchStatus.CANCELLED.value, finished_at=now, error=reason)
                )
                cancel_open_jobs(conn, batch_id, now)
        return self.get_batch(batch_id)

    def fail_batch(self, conn: Connection, batch_id: str, now: float, error: str) -> None:
        """End a live batch as failed, like error_policy=stop (its open jobs cancelled)."""
        stopped = conn.execute(
            update(batches)
            .where(batches.c.id == batch_id, batches.c.status.in_(LIVE_BATCH))
            .values(status=BatchStatus.FAILED.value, finished_at=now, error=error)
        ).rowcount
        if stopped:
            cancel_open_jobs(conn, batch_id, now)

    def stop_batch(self, conn: Connection, o: Outcome, now: float) -> None:
        stopped = conn.execute(
            update(batches)
            .where(batches.c.id == o.batch_id, batches.c.status.in_(LIVE_BATCH))
            .values(
                status=BatchStatus.FAILED.value,
                finished_at=now,
                error=f"stopped by error_policy=stop: record {o.key} failed "
                f"({o.error_type}: {o.error_message})",
            )
        ).rowcount
        if stopped:
            cancel_open_jobs(conn, o.batch_id, now)

    def _lock_batches(self, conn: Connection, batch_ids: Iterable[str]) -> None:
        """Lock batch rows in id order (PostgreSQL). SQLite's BEGIN IMMEDIATE already
        gave this transaction the whole database."""
        if not self._is_sqlite:
            conn.execute(LOCK_BATCHES, {"p_batches": sorted(batch_ids)})

    def complete_if_done(self, batch_id: str) -> bool:
        """Mark a running batch completed if none of its jobs is pending or running."""
        with self._write() as conn:
            self._lock_batches(conn, [batch_id])
            return bool(
                conn.execute(COMPLETE, {"p_batch": batch_id, "p_now": time.time()}).rowcount
            )
