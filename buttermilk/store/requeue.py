"""Retry: make a batch's unfinished jobs runnable again, and list them for publishing."""

from __future__ import annotations

import time

from sqlalchemy import and_, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from buttermilk.domain import BatchStatus, JobKey, JobStatus
from buttermilk.errors import BatchStateError, UnknownBatchError
from buttermilk.store.batches import BatchRows
from buttermilk.store.ops import Requeued
from buttermilk.store.rows import batch_info
from buttermilk.store.schema import batches, jobs


class Requeue(BatchRows):
    """The store's retry."""

    def requeue(self, batch_id: str, *, variant: str | None = None) -> Requeued:
        """Make every job that did not complete, and does not run under a live lease,
        runnable again with a fresh attempt budget, and list them for publishing.

        Failed and cancelled jobs go back to pending. Pending jobs are listed too, since
        their messages may be gone (a transport that lost them, a batch that ended, a
        publish that never finished); a delivery of a job that has a message already is
        dropped by the claim. So are running jobs whose lease ran out (their worker died).
        The batch becomes live again. ``variant`` limits it to one combination's jobs.
        """
        with self._write() as conn:
            row = conn.execute(select(batches).where(batches.c.id == batch_id)).mappings().first()
            if row is None:
                raise UnknownBatchError(f"unknown batch id {batch_id!r}")
            batch = batch_info(row)
            wanted = [JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.PENDING.value]
            abandoned = and_(
                jobs.c.status == JobStatus.RUNNING.value, jobs.c.lease_until < time.time()
            )
            selected: ColumnElement[bool] = or_(jobs.c.status.in_(wanted), abandoned)
            if variant is not None:
                selected = and_(selected, jobs.c.variant == variant)
            keys = [
                JobKey(str(r), str(v), int(n))
                for r, v, n in conn.execute(
                    select(jobs.c.record_id, jobs.c.variant, jobs.c.repeat)
                    .where(jobs.c.batch_id == batch_id, selected)
                    .order_by(jobs.c.seq)
                )
            ]
            if not keys:
                which = f"combination {variant!r} of batch" if variant is not None else "batch"
                raise BatchStateError(
                    f"{which} {batch_id} has nothing to retry: every job completed or runs "
                    "under a live lease"
                )
            conn.execute(
                update(jobs)
                .where(jobs.c.batch_id == batch_id, selected)
                .values(
                    status=JobStatus.PENDING.value,
                    attempts=0,
                    last_try=False,
                    lost=0,
                    claim_token=None,
                    lease_until=None,
                    finished_at=None,
                    error_type=None,
                    error_message=None,
                    traceback=None,
                )
            )
            new_status = BatchStatus.RUNNING if batch.started_at else BatchStatus.PENDING
            conn.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(status=new_status.value, finished_at=None, error=None, published=False)
            )
        return Requeued(batch=self.get_batch(batch_id), jobs=keys)
