"""Read queries over jobs: counts (per batch and per combination), errors, single jobs,
and a batch's jobs in planned order."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)

from buttermilk.domain import ErrorCount, JobInfo, JobKey, JobStatus
from buttermilk.errors import UnknownBatchError
from buttermilk.store import counters
from buttermilk.store.engine import StoreBase
from buttermilk.store.rows import job_info
from buttermilk.store.schema import jobs


class JobReads(StoreBase):
    """The store's read queries over jobs."""

    def _among(self, record_ids: Collection[str]) -> ColumnElement[bool]:
        """``record_id`` is one of ``record_ids``, bound as ONE parameter whatever their
        number (SQLite: a JSON array read by ``json_each``; PostgreSQL: ``= ANY(array)``)."""
        if self._is_sqlite:
            ids: BindParameter[str] = bindparam(
                "among_ids", orjson.dumps(sorted(record_ids)).decode()
            )
            listed: Select[tuple[Any]] = select(literal_column("value")).select_from(
                func.json_each(ids)
            )
            return jobs.c.record_id.in_(listed.scalar_subquery())
        from sqlalchemy.dialects.postgresql import ARRAY  # only a PostgreSQL store needs it

        array = bindparam("among_ids", sorted(record_ids), type_=ARRAY(String))
        return jobs.c.record_id == any_(array)

    def count_jobs(
        self,
        batch_id: str,
        *,
        status: JobStatus | None = None,
        variant: str | None = None,
        record_ids: Collection[str] | None = None,
    ) -> int:
        """How many jobs of the batch (of this status, combination, and records) there are."""
        query = select(func.count()).select_from(jobs).where(jobs.c.batch_id == batch_id)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if variant is not None:
            query = query.where(jobs.c.variant == variant)
        if record_ids is not None:
            query = query.where(self._among(record_ids))
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def job_counts(self, batch_ids: Sequence[str]) -> dict[str, dict[JobStatus, int]]:
        """Jobs per status for each batch (SQLite: an index range scan; PostgreSQL: counters)."""
        counts: dict[str, dict[JobStatus, int]] = {bid: {} for bid in batch_ids}
        if not batch_ids:
            return counts
        found: Sequence[tuple[Any, ...]]
        with self._read() as conn:
            if self._is_sqlite:
                query = (
                    select(jobs.c.batch_id, jobs.c.status, func.count())
                    .where(jobs.c.batch_id.in_(batch_ids))
                    .group_by(jobs.c.batch_id, jobs.c.status)
                )
                found = [tuple(row) for row in conn.execute(query)]
            else:  # counters kept by triggers: no scan of the jobs
                found = counters.read(conn, batch_ids)
            for batch_id, status, count in found:
                counts[batch_id][JobStatus(status)] = int(count)
        return counts

    def common_errors(self, batch_id: str, limit: int = 5) -> list[ErrorCount]:
        count = func.count().label("n")
        query = (
            select(jobs.c.error_type, jobs.c.error_message, count)
            .where(jobs.c.batch_id == batch_id, jobs.c.status == JobStatus.FAILED.value)
            .group_by(jobs.c.error_type, jobs.c.error_message)
            .order_by(count.desc())
            .limit(limit)
        )
        with self._read() as conn:
            return [
                ErrorCount(error_type=t or "", error_message=m or "", count=int(n))
                for t, m, n in conn.execute(query)
            ]

    def variant_counts(self, batch_id: str) -> dict[str, dict[JobStatus, int]]:
        """Jobs per status for each combination (variant key) of a batch: one grouped scan
        of the batch's jobs (an index range scan)."""
        query = (
            select(jobs.c.variant, jobs.c.status, func.count())
            .where(jobs.c.batch_id == batch_id)
            .group_by(jobs.c.variant, jobs.c.status)
        )
        counts: dict[str, dict[JobStatus, int]] = {}
        with self._read() as conn:
            for variant, status, count in conn.execute(query):
                counts.setdefault(str(variant), {})[JobStatus(status)] = int(count)
        return counts

    def get_job(
        self, batch_id: str, record_id: str, variant: str | None = None, repeat: int | None = None
    ) -> JobInfo:
        """The job of ``record_id`` (of this combination and repeat; without them, the
        record's first job in planned order). Raises UnknownBatchError when there is none."""
        query = select(jobs).where(jobs.c.batch_id == batch_id, jobs.c.record_id == record_id)
        if variant is not None:
            query = query.where(jobs.c.variant == variant)
        if repeat is not None:
            query = query.where(jobs.c.repeat == repeat)
        with self._read() as conn:
            row = conn.execute(query.order_by(jobs.c.seq).limit(1)).mappings().first()
        if row is None:
            key = JobKey(record_id, variant or "", repeat or 0)
            named = key if variant is not None or repeat is not None else repr(record_id)
            raise UnknownBatchError(f"batch {batch_id} has no job for record {named}")
        return job_info(row)

    def recent_jobs(
        self,
        batch_id: str,
        *,
        status: JobStatus | None = None,
        variant: str | None = None,
        record_ids: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[JobInfo]:
        """Jobs that have started (of one combination: ``variant``; of some records:
        ``record_ids``), the most recently started first (for dashboards)."""
        query = select(jobs).where(jobs.c.batch_id == batch_id, jobs.c.started_at.is_not(None))
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if variant is not None:
            query = query.where(jobs.c.variant == variant)
        if record_ids is not None:
            query = query.where(self._among(record_ids))
        query = query.order_by(jobs.c.started_at.desc(), jobs.c.seq.desc()).limit(limit)
        with self._read() as conn:
            return [job_info(row) for row in conn.execute(query).mappings()]

    def iter_jobs(
        self,
        batch_id: str,
        *,
        status: JobStatus | None = None,
        variant: str | None = None,
        record_ids: Collection[str] | None = None,
        after_seq: int = -1,
        limit: int | None = None,
        chunk: int = 1_000,
    ) -> Iterator[JobInfo]:
        """Jobs of a batch (of some records: ``record_ids``) in planned order, read in
        chunks (never all at once)."""
        remaining = limit
        while remaining is None or remaining > 0:
            size = chunk if remaining is None else min(chunk, remaining)
            query = select(jobs).where(jobs.c.batch_id == batch_id, jobs.c.seq > after_seq)
            if status is not None:
                query = query.where(jobs.c.status == status.value)
            if variant is not None:
                query = query.where(jobs.c.variant == variant)
            if record_ids is not None:
                query = query.where(self._among(record_ids))
            with self._read() as conn:
                rows = conn.execute(query.order_by(jobs.c.seq).limit(size)).mappings().all()
            for row in rows:
                yield job_info(row)
            if len(rows) < size:
                return
            after_seq = rows[-1]["seq"]
            if remaining is not None:
                remaining -= len(rows)
