"""The claim/outcome exchange: workers take jobs under a lease and report how they ended.

A job goes to at most one live claimer at a time; an outcome applies only while its claim
token is still the job's. A job is named by (batch, record, variant, repeat).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select

from buttermilk.domain import JobKey, JobStatus
from buttermilk.records import Record
from buttermilk.store import bulk, lost
from buttermilk.store.batches import BatchRows
from buttermilk.store.engine import dumps
from buttermilk.store.ops import LIVE_BATCH, OPEN_JOB, Claim, Claimed, Outcome, Skipped, SkipReason
from buttermilk.store.schema import batches
from buttermilk.store.spending import Spent, charge, spent_in
from buttermilk.store.statements import (
    CLAIM,
    COMPLETE,
    EXTEND,
    FINISH,
    JOB_AND_BATCH_STATUS,
    RELEASE,
    START_BATCH,
    key_params,
)


class JobExchange(BatchRows):
    """Claims, outcomes, leases, and jobs whose worker was lost."""

    def claim(
        self, claims: Sequence[Claim], *, worker: str, lease: float
    ) -> list[Claimed | Skipped]:
        """Try to start each job; a job goes to at most one live claimer at a time.

        A job can be claimed when it is pending, or running under a lease that has
        expired (its worker died) on a try that was not its last, and only while its batch
        is live. A job whose worker died on its last try fails instead (SkipReason.LOST).
        """
        return self.exchange(claims, worker=worker, lease=lease)  # type: ignore[return-value]

    def exchange(
        self, ops: Sequence[Claim | Outcome], *, worker: str, lease: float
    ) -> list[Claimed | Skipped | bool]:
        """Record outcomes and claim jobs in one transaction; a result per op, in order.

        An outcome gives True, or False where its claim was lost meanwhile (another
        worker took the job over). A claim gives Claimed or Skipped. Batch rows are
        locked first, in id order, so concurrent exchanges cannot deadlock (PostgreSQL).
        """
        results: list[Claimed | Skipped | bool] = []
        outcome_batches = {op.batch_id for op in ops if isinstance(op, Outcome)}
        started: set[str] = set()
        with self._write() as conn:
            now = time.time()  # after waiting for the lock: leases start when granted
            self._lock_batches(conn, {op.batch_id for op in ops})
            if not self._is_sqlite:
                results = self._exchange_bulk(conn, ops, worker=worker, lease=lease, now=now)
                ops = []  # done: a few statements for the whole round
                started = {r.batch_id for r in results if isinstance(r, Claimed)}
            for op in ops:
                if isinstance(op, Outcome):
                    results.append(self._record_outcome(conn, op, now))
                    continue
                token = secrets.token_hex(8)
                row = conn.execute(
                    CLAIM,
                    {
                        **key_params(op.batch_id, op.key),
                        "p_now": now,
                        "p_token": token,
                        "p_lease": now + lease,
                        "p_worker": worker,
                        "p_max": op.max_attempts or lost.NO_LIMIT,
                        "p_last": op.last_delivery,
                    },
                ).first()
                if row is not None:
                    started.add(op.batch_id)
                    record = Record.model_validate(row[1])
                    results.append(
                        Claimed(
                            op.batch_id,
                            op.record_id,
                            token,
                            int(row[0]),
                            record,
                            op.variant,
                            op.repeat,
                        )
                    )
                else:
                    reason = self._not_claimed(conn, op, now)
                    results.append(
                        Skipped(op.batch_id, op.record_id, reason, op.variant, op.repeat)
                    )
            for batch_id in started - self._running:
                conn.execute(START_BATCH, {"p_batch": batch_id, "p_now": now})
            complete = COMPLETE if self._is_sqlite else bulk.COMPLETE
            # A job failed as lost may have been its batch's last open one.
            lost_batches = {
                r.batch_id
                for r in results
                if isinstance(r, Skipped) and r.reason == SkipReason.LOST
            }
            for batch_id in sorted(outcome_batches | lost_batches):
                conn.execute(complete, {"p_batch": batch_id, "p_now": now})
        # Once started, a batch never goes back to pending (retry keeps started ones running).
        self._running |= started
        return results

    def _exchange_bulk(
        self,
        conn: Connection,
        ops: Sequence[Claim | Outcome],
        *,
        worker: str,
        lease: float,
        now: float,
    ) -> list[Claimed | Skipped | bool]:
        """``exchange`` over a network: outcomes first, then claims, a statement each."""
        applied: dict[int, bool] = {}
        finished = [op for op in ops if isinstance(op, Outcome) and not op.release]
        if finished:
            spent = [spent_in(o.result) for o in finished]
            rows = [
                bulk.outcome_row(o, s, now, dumps) for o, s in zip(finished, spent, strict=True)
            ]
            done = bulk.finish_many(conn, rows)
            for o, s in zip(finished, spent, strict=True):
                applied[id(o)] = (o.batch_id, o.key) in done
                self._after_outcome(conn, o, now, s, applied=applied[id(o)])
        for op in ops:
            if isinstance(op, Outcome) and op.release:
                applied[id(op)] = self._record_outcome(conn, op, now)
        token = secrets.token_hex(8)  # one per round: a re-claim always gets a new one
        wanted: dict[str, set[JobKey]] = {}
        last_delivery: dict[str, set[JobKey]] = {}
        max_attempts: dict[str, int] = {}
        for op in ops:
            if isinstance(op, Claim):
                wanted.setdefault(op.batch_id, set()).add(op.key)
                if op.last_delivery:
                    last_delivery.setdefault(op.batch_id, set()).add(op.key)
                if op.max_attempts:
                    max_attempts[op.batch_id] = op.max_attempts
        got: dict[tuple[str, JobKey], tuple[int, Any]] = {}
        for batch_id in sorted(wanted):
            claimed = bulk.claim_many(
                conn,
                batch_id,
                sorted(wanted[batch_id]),
                token=token,
                worker=worker,
                now=now,
                lease=lease,
                max_attempts=max_attempts.get(batch_id, lost.NO_LIMIT),
                last_delivery=sorted(last_delivery.get(batch_id, ())),
            )
            got.update(((batch_id, key), found) for key, found in claimed.items())
        results: list[Claimed | Skipped | bool] = []
        handed: set[tuple[str, JobKey]] = set()
        for op in ops:
            if isinstance(op, Outcome):
                results.append(applied[id(op)])
                continue
            key = (op.batch_id, op.key)
            if key in got and key not in handed:
                handed.add(key)
                attempts, record = got[key]
                record = Record.model_validate(record)
                results.append(
                    Claimed(
                        op.batch_id, op.record_id, token, attempts, record, op.variant, op.repeat
                    )
                )
            else:
                # The same job twice in one round: this copy is a duplicate.
                why = SkipReason.BUSY if key in handed else self._not_claimed(conn, op, now)
                results.append(Skipped(op.batch_id, op.record_id, why, op.variant, op.repeat))
        return results

    def _not_claimed(self, conn: Connection, c: Claim, now: float) -> SkipReason:
        """Why a claim did not take its job; a job lost on its last try fails here."""
        row = conn.execute(JOB_AND_BATCH_STATUS, key_params(c.batch_id, c.key)).first()
        if row is None:
            return SkipReason.UNKNOWN
        job_status, batch_status, last_try, lease_until = row
        if job_status not in OPEN_JOB:
            return SkipReason.DONE
        if batch_status not in LIVE_BATCH:
            return SkipReason.BATCH_ENDED
        if last_try and lease_until is not None and lease_until < now:
            if self._fail_lost(conn, c.batch_id, now, [c.key]):
                return SkipReason.LOST
        elif c.last_delivery:
            # This message is about to be given up by its transport while another claim
            # runs the job: should that worker be dead, nothing would ever end the job.
            lost.mark_last_try(conn, c.batch_id, c.key)
        return SkipReason.BUSY

    def _fail_lost(
        self, conn: Connection, batch_id: str, now: float, keys: list[JobKey] | None = None
    ) -> int:
        """Fail the batch's jobs lost on their last try (see :mod:`buttermilk.store.lost`),
        stopping the batch under error_policy=stop; returns how many failed."""
        failed = lost.fail_lost(conn, batch_id, now, keys)
        if failed:
            request = conn.execute(select(batches.c.request).where(batches.c.id == batch_id))
            if (request.scalar() or {}).get("error_policy") == "stop":
                key, error = failed[0]
                self.fail_batch(
                    conn,
                    batch_id,
                    now,
                    f"stopped by error_policy=stop: record {key} failed "
                    f"({lost.ERROR_TYPE}: {error})",
                )
        return len(failed)

    def fail_lost_jobs(self, batch_ids: Iterable[str]) -> int:
        """Fail the running jobs of these live batches whose worker was lost on their last
        try, then complete each batch left with no open job; returns how many failed.

        Cheap when there is none (one read); status and workers' heartbeats call it.
        """
        ids = list(batch_ids)
        with self._read() as conn:
            found = lost.batches_with_lost_jobs(conn, ids, time.time())
        if not found:
            return 0
        failed = 0
        with self._write() as conn:
            now = time.time()
            self._lock_batches(conn, found)
            complete = COMPLETE if self._is_sqlite else bulk.COMPLETE
            for batch_id in found:
                failed += self._fail_lost(conn, batch_id, now)
                conn.execute(complete, {"p_batch": batch_id, "p_now": now})
        return failed

    def extend_leases(self, held: Sequence[tuple[str, JobKey, str]], until: float) -> None:
        """Push back the lease of running jobs: (batch_id, job key, token) each."""
        if not held:
            return
        params = [key_params(b, k) | {"p_token": t, "p_lease": until} for b, k, t in held]
        with self._write() as conn:
            conn.execute(EXTEND, params)

    def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Record how claimed jobs ended; False where the claim was lost meanwhile.

        In the same transaction, a batch none of whose jobs is pending or running any
        more becomes completed. The batch rows are locked first (PostgreSQL), so of two
        workers finishing a batch's last two jobs at once, the later one sees both.
        """
        return self.exchange(outcomes, worker="", lease=0)  # type: ignore[return-value]

    def _record_outcome(self, conn: Connection, o: Outcome, now: float) -> bool:
        params = {
            **key_params(o.batch_id, o.key),
            "p_token": o.token,
            "p_status": o.status.value,
            "p_duration": o.duration,
            "p_result": o.result,
            "p_error_type": o.error_type,
            "p_error_message": o.error_message,
            "p_traceback": o.traceback,
            "p_finished": None if o.status == JobStatus.PENDING else now,
        }
        spent = spent_in(o.result)
        params["p_cost"] = spent.cost if spent else None
        params["p_input_tokens"] = spent.input_tokens if spent else None
        params["p_output_tokens"] = spent.output_tokens if spent else None
        done = bool(conn.execute(RELEASE if o.release else FINISH, params).rowcount)
        self._after_outcome(conn, o, now, spent, applied=done)
        return done

    def _after_outcome(
        self, conn: Connection, o: Outcome, now: float, spent: Spent | None, *, applied: bool
    ) -> None:
        """What an outcome sets off: its spending counted, even when it was not applied
        (another worker took the job over meanwhile: these calls were paid all the same);
        a batch stopped by max_cost, or (applied only) by error_policy=stop."""
        if spent is not None:
            over_cap = charge(conn, o.batch_id, spent)
            if over_cap:
                self.fail_batch(conn, o.batch_id, now, f"{over_cap} (record {o.key})")
        if o.stop_batch and applied:
            self.stop_batch(conn, o, now)
