"""A batch's throughput and cost over time: one grouped read of its ended jobs."""

from __future__ import annotations

import time

from sqlalchemy import BigInteger, Integer, cast, func, select

from buttermilk.domain import JobStatus
from buttermilk.domain.timeline import TimeBucket, Timeline, bucket_width
from buttermilk.store.batches import BatchRows
from buttermilk.store.schema import jobs

ENDED_JOB = (JobStatus.COMPLETED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class JobTimelines(BatchRows):
    """The store's time-bucketed read of a batch's ended jobs."""

    def timeline(self, batch_id: str, *, now: float | None = None) -> Timeline:
        """Jobs ended (per status), their cost (USD) and tokens per time bucket of the
        batch, buckets counted from its creation and as wide as
        :func:`~buttermilk.domain.timeline.bucket_width` makes them for its span (up to its
        end, or ``now`` while it runs). Raises UnknownBatchError for an unknown id.

        One grouped scan of the batch's jobs (SQLite: the (batch, status) index; bucket =
        whole part of the quotient, which is its floor: times never precede creation).
        """
        batch = self.get_batch(batch_id)
        origin = batch.created_at
        last = batch.finished_at or (time.time() if now is None else now)
        width = bucket_width(origin, last)
        offset = (jobs.c.finished_at - origin) / width
        index = cast(offset, Integer) if self._is_sqlite else cast(func.floor(offset), BigInteger)
        bucket = index.label("bucket")
        query = (
            select(
                bucket,
                jobs.c.status,
                func.count(),
                func.sum(jobs.c.cost),
                func.coalesce(func.sum(jobs.c.input_tokens), 0),
                func.coalesce(func.sum(jobs.c.output_tokens), 0),
            )
            .where(
                jobs.c.batch_id == batch_id,
                jobs.c.status.in_(ENDED_JOB),
                jobs.c.finished_at.is_not(None),
            )
            .group_by(bucket, jobs.c.status)
        )
        found: dict[int, TimeBucket] = {}
        with self._read() as conn:
            for at, status, count, cost, input_tokens, output_tokens in conn.execute(query):
                slot = found.setdefault(int(at), TimeBucket(start=origin + int(at) * width))
                setattr(slot, str(status), getattr(slot, str(status)) + int(count))
                if cost is not None:
                    slot.cost = (slot.cost or 0.0) + float(cost)
                slot.input_tokens += int(input_tokens)
                slot.output_tokens += int(output_tokens)
        return Timeline(
            batch_id=batch_id, bucket_seconds=width, buckets=[found[k] for k in sorted(found)]
        )
