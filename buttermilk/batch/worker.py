"""The worker: pull jobs from the queue, run their flows, store outcomes, then ack.

One task group holds everything: a receive loop, a heartbeat (extends leases, notices
cancelled batches), bulk helpers for the store and the queue, and one task per job.
A job runs only after the store has given it to this worker (``claim``), and its message
is acked only after its outcome is in the store.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from buttermilk.batch.contexts import BatchContext, VariantRunner
from buttermilk.batch.messages import Messages
from buttermilk.batch.outage import GaveUp, Outage
from buttermilk.batch.retries import MAX_RETRY_DELAY, DueRetries
from buttermilk.batch.settle import settle
from buttermilk.batch.storelink import StoreLink
from buttermilk.batch.worker_options import WorkerOptions, WorkerStats
from buttermilk.domain import JobKey, JobStatus
from buttermilk.errors import (
    ButtermilkError,
    JobTimeoutError,
    PermanentError,
    StoreError,
)
from buttermilk.flows.agents import Console, JobContext, set_current_job
from buttermilk.flows.meter import Meter
from buttermilk.flows.runner import spent_by
from buttermilk.llm.health import EndpointHealth, endpoint_wait, watch_endpoints
from buttermilk.queue.base import Delivery, Queue
from buttermilk.store.lost import ERROR_TYPE as LOST_ERROR
from buttermilk.store.store import Claim, Claimed, Outcome, Skipped, SkipReason, Store

log = logging.getLogger(__name__)
__all__ = ["MAX_RETRY_DELAY", "Worker", "WorkerOptions", "WorkerStats", "worker_name"]

MAX_TRACEBACK = 8_000
HEARTBEAT = 1.0  # seconds between checks for cancelled batches
LOST_SWEEP = 5.0  # seconds between looks for jobs whose worker was lost on their last try
RECEIVE_WAIT = 1.0
NOT_VISIBLE_FOR = 600.0  # seconds a new batch's message may wait for its batch to commit
RECHECK_UNKNOWN = 0.2  # seconds a batch found missing is taken as missing without a read


def not_visible_delay(age: float) -> float:
    """Seconds a message of a batch not committed yet waits before it comes back: one at
    first, longer as it ages (a batch whose create failed never appears)."""
    return min(max(age / 4, 1.0), 30.0)


@dataclass(eq=False)
class _Running:
    delivery: Delivery
    claimed: Claimed
    scope: anyio.CancelScope
    cancel_reason: str | None = None
    release_delay: float = 0.0  # seconds its message waits when given back


def _printable(text: str) -> str:
    """Error text as a text column can hold it: NUL, which PostgreSQL refuses, as ``\\x00``."""
    return text.replace("\x00", "\\x00")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """Pull and run jobs until stopped, idle, or done. Call :meth:`run` once."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        options: WorkerOptions | None = None,
        *,
        console: Console | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.options = options or WorkerOptions()
        self.console = console
        self.name = worker_name()
        self.stats = WorkerStats()
        self._slots = self.options.concurrency
        self._run_slots = anyio.CapacityLimiter(self.options.concurrency)
        self._held: set[Delivery] = set()
        self._running: dict[tuple[str, JobKey], _Running] = {}
        self._waiting: dict[Delivery, anyio.CancelScope] = {}
        self._receiving: anyio.CancelScope | None = None  # the receive waiting now, if any
        self._batches: dict[str, BatchContext] = {}
        self._batch_locks: dict[str, anyio.Lock] = {}
        self._missing: dict[str, float] = {}  # batch id -> when a read last found none
        self._freed = anyio.Event()
        self._stopping = anyio.Event()
        self._stopped_batches: set[str] = set()
        self._last_activity = time.monotonic()
        # Idleness needs a look at the queue that found nothing, since the last activity:
        # idle_timeout=0 then means "stop once the queue is empty", not "before looking".
        self._found_empty = False
        self._retries = DueRetries()
        self._link = StoreLink(store, worker=self.name, lease=lambda: self.queue.lease_seconds)
        self._store_down = self._link.down
        self._queue_down = Outage(
            "cannot receive jobs, retrying with backoff: {error}",
            "receiving jobs again, after {seconds:.0f}s",
        )
        self.failure: StoreError | None = None
        """Why the worker gave up, if it did (``run`` raises it too)."""
        self._messages = Messages(queue)
        self._endpoints = EndpointHealth(self.name, store)

    # -- public --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop pulling; running jobs get ``grace_period`` to finish (safe from signal tasks).

        Jobs waiting for an unreachable store give their messages back at once.
        """
        if not self._stopping.is_set():
            if self._running and not self._store_down.abandoned:
                log.info(
                    "stopping: no new jobs; waiting up to %.0fs for %d running",
                    self.options.grace_period,
                    len(self._running),
                )
            self._stopping.set()
            if self._receiving is not None and self.queue.receive_cancellable:
                self._receiving.cancel()  # stop now, not once the wait ran out
            for waiting in self._waiting.values():
                waiting.cancel()
            self._store_down.stop_waiting()

    @property
    def held(self) -> int:
        return len(self._held)

    async def run(self) -> WorkerStats:
        """Work until stopped, idle ``idle_timeout``, ``max_jobs`` reached, or the batch ends.

        Raises QueueError when the queue cannot be prepared (reached) at the start, and
        StoreError when the worker gave up on an unreachable store (see ``idle_timeout``).
        """
        self.stats = WorkerStats()
        watch_endpoints(self._endpoints)  # its jobs' LLM agents see the endpoints' health
        # Make what the transport is missing, and learn its real lease.
        await self.queue.prepare(interactive=self.options.interactive)
        async with anyio.create_task_group() as services:
            services.start_soon(self._link.run)
            services.start_soon(self._messages.run)
            services.start_soon(self._heartbeat)
            async with anyio.create_task_group() as jobs:
                await self._receive_loop(jobs)
                await self._drain()
            services.cancel_scope.cancel()
        if self.failure is not None:
            raise self.failure
        return self.stats

    # -- receiving -----------------------------------------------------------------

    def _free_slots(self) -> int:
        """How many messages to take now.

        Messages are taken in chunks (a quarter of the worker's capacity, at most 25)
        rather than one per finished job, which would cost one queue round trip each.
        """
        held = len(self._held)
        chunk = max(1, min(self._slots // 4, 25))
        # One chunk more than can run waits in hand, so a freed slot starts a job at once
        # rather than after a round trip to the queue.
        free = self._slots + chunk - held
        if self.options.max_jobs is not None:
            unclaimed = held - len(self._running)
            left = self.options.max_jobs - self.stats.claimed - unclaimed
            if left <= free:
                return left
        return free if free >= chunk or not held else 0

    def _should_stop(self) -> bool:
        opts = self.options
        if self._stopping.is_set():
            return True
        if opts.max_jobs is not None and self.stats.claimed >= opts.max_jobs:
            return True
        if opts.batch_id is not None and opts.batch_id in self._stopped_batches and not self._held:
            return True
        if opts.idle_timeout is None or self._held or not self._found_empty:
            return False
        idle = time.monotonic() - self._last_activity >= opts.idle_timeout
        return idle and not self._retries.keep_waiting(opts.idle_timeout)

    async def _receive_loop(self, jobs: TaskGroup) -> None:
        while not self._should_stop():
            if self._store_down.active:
                # No new jobs while outcomes and claims wait for the store.
                self._busy()  # an outage is not idleness
                await self._wait_for_store()
                continue
            free = self._free_slots()
            if free <= 0:
                with anyio.move_on_after(HEARTBEAT):
                    await self._freed.wait()
                self._freed = anyio.Event()
                continue
            deliveries: list[Delivery] = []
            try:
                with anyio.CancelScope() as receiving:
                    self._receiving = receiving
                    deliveries = await self.queue.receive(
                        min(free, self.queue.receive_limit),
                        interactive=self.options.interactive,
                        batch_id=self.options.batch_id if self.queue.filters_by_batch else None,
                        wait=RECEIVE_WAIT,
                    )
                self._receiving = None
                if receiving.cancelled_caught:
                    continue  # stopped while waiting (it took nothing)
            except ButtermilkError as exc:
                self._queue_down.failed(exc)
                with anyio.move_on_after(self._queue_down.until_next_try):
                    await self._stopping.wait()
                self._busy()  # an outage is not idleness
                continue
            self._queue_down.recovered()
            self._found_empty = not deliveries
            if deliveries:
                self._last_activity = time.monotonic()
            for delivery in deliveries:
                if self._stopping.is_set():
                    await self._messages.give_back(delivery)
                    continue
                self._held.add(delivery)
                jobs.start_soon(self._handle, delivery)

    def _busy(self) -> None:
        """Restart the idle timer; idleness again needs a look at an empty queue."""
        self._last_activity = time.monotonic()
        self._found_empty = False

    async def _wait_for_store(self) -> None:
        """Back off, then look whether the store is back; give up past ``idle_timeout``."""
        limit = self.options.idle_timeout
        if limit is not None and self._store_down.duration >= limit:
            self.failure = StoreError(
                f"gave up: {self._store_down.error} (unreachable for "
                f"{self._store_down.duration:.0f}s, batch.idle_timeout={limit:g})"
            )
            self._store_down.abandon()
            self.stop()
            for running in list(self._running.values()):  # nothing they end could be stored
                running.cancel_reason = "shutdown"
                running.scope.cancel()
            return
        try:
            await self._store_down.pause()
        except GaveUp:
            return
        if self._store_down.active:
            await self._link.probe()

    async def _drain(self) -> None:
        """Let running jobs finish; past the grace period, release them to the queue."""
        if not self._held:
            return
        with anyio.move_on_after(self.options.grace_period):
            while self._held:
                await self._freed.wait()
                self._freed = anyio.Event()
        for running in list(self._running.values()):
            running.cancel_reason = "shutdown"
            running.scope.cancel()

    # -- heartbeat -----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        lease = self.queue.lease_seconds
        last_extend = last_sweep = time.monotonic()
        while True:
            # A lease shorter than three beats would lapse between extensions.
            await anyio.sleep(min(HEARTBEAT, lease / 3))
            try:
                await self._check_batches()
                if time.monotonic() - last_extend >= lease / 3:
                    last_extend = time.monotonic()
                    await self._extend_leases(lease)
                if time.monotonic() - last_sweep >= LOST_SWEEP:
                    last_sweep = time.monotonic()
                    await self._fail_lost_jobs()
            except StoreError as exc:
                self._store_down.failed(exc)  # said once; the receive loop looks for its return
            except ButtermilkError as exc:
                log.warning("heartbeat failed, trying again: %s", exc)

    async def _check_batches(self) -> None:
        live = {key[0] for key in self._running} | self._retries.batches()
        if self.options.batch_id:
            live.add(self.options.batch_id)
        if not live or self._store_down.active:
            return
        statuses = await self._link.call(lambda: self.store.batch_statuses(live))
        for batch_id, status in statuses.items():
            if not status.ended:
                continue
            self._stopped_batches.add(batch_id)
            self._retries.forget(batch_id)
            for (bid, _rid), running in list(self._running.items()):
                if bid == batch_id and running.cancel_reason is None:
                    running.cancel_reason = f"batch {status.value}"
                    running.scope.cancel()

    async def _extend_leases(self, lease: float) -> None:
        held = list(self._held)
        if held:
            await self.queue.extend(held, lease)
        running = [
            (r.claimed.batch_id, r.claimed.key, r.claimed.token) for r in self._running.values()
        ]
        if running and not self._store_down.active:
            until = time.time() + lease
            await self._link.call(lambda: self.store.extend_leases(running, until))

    async def _fail_lost_jobs(self) -> None:
        """End jobs of the live batches this worker knows whose worker was lost on their
        last try: on Pub/Sub their message is gone (dead-lettered), so no claim ever would."""
        live = set(self._batches) - self._stopped_batches
        if live and not self._store_down.active:
            failed = await self._link.call(lambda: self.store.fail_lost_jobs(live))
            if failed:
                log.warning(
                    "failed %d job(s) whose worker was lost on their last try (%s)",
                    failed,
                    LOST_ERROR,
                )

    # -- one job -------------------------------------------------------------------

    async def _batch(self, batch_id: str) -> BatchContext | None:
        ctx = self._batches.get(batch_id)
        if ctx is not None:
            return ctx
        lock = self._batch_locks.setdefault(batch_id, anyio.Lock())
        async with lock:
            ctx = self._batches.get(batch_id)
            if ctx is not None:
                return ctx
            missed = self._missing.get(batch_id)
            if missed is not None and time.monotonic() - missed < RECHECK_UNKNOWN:
                return None  # messages arriving together before their batch: one read
            try:
                info = await self._link.patient(lambda: self.store.get_batch(batch_id))
            except LookupError:
                self._missing[batch_id] = time.monotonic()
                return None
            self._missing.pop(batch_id, None)
            ctx = await anyio.to_thread.run_sync(BatchContext.load, info, self.options.concurrency)
            await self._endpoints.check(ctx.endpoints(), batch_id)  # jobs of a down one wait
            self._batches[batch_id] = ctx
            return ctx

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._handle_inner(delivery)
        except GaveUp:  # on the store: what this job did was not stored, it runs again
            await self._messages.give_back(delivery)
        except Exception:
            log.exception("unexpected error handling a message; it returns after its lease")
        finally:
            self._held.discard(delivery)
            self._busy()
            self._freed.set()

    async def _handle_inner(self, delivery: Delivery) -> None:
        message = delivery.message
        if message is None:
            self.stats.malformed += 1
            log.warning(
                "dropping a malformed message (%s): %.200r", delivery.problem, delivery.body
            )
            await self._messages.dead_letter(delivery, f"malformed message: {delivery.problem}")
            return
        ctx = await self._batch(message.batch_id)
        age = time.time() - message.created_at if message.created_at is not None else None
        if ctx is None and age is not None and age < NOT_VISIBLE_FOR:
            # Published while its batch was being stored: not visible yet, not unknown.
            self.stats.not_yet_visible += 1
            delay = not_visible_delay(age)
            self._retries.add(message.batch_id, delay, "its batch not visible yet")
            await self._messages.give_back(delivery, delay)
            return
        if ctx is None:
            self.stats.malformed += 1
            log.warning(
                "dropping a message of unknown batch %s (record %s)",
                message.batch_id,
                message.record_id,
            )
            await self._messages.dead_letter(delivery, f"unknown batch {message.batch_id}")
            return
        if message.flow != ctx.info.flow:
            self.stats.malformed += 1
            log.warning(
                "dropping a message for flow %r: batch %s runs flow %r",
                message.flow,
                message.batch_id,
                ctx.info.flow,
            )
            reason = f"flow {message.flow!r} is not its batch's flow"
            await self._messages.dead_letter(delivery, reason)
            return
        acquired = 0
        with anyio.move_on_after(self.options.hold_timeout) as waiting:
            self._waiting[delivery] = waiting
            try:
                # A slot of its batch, then one of this worker (always in this order).
                await ctx.limiter.acquire_on_behalf_of(delivery)
                acquired = 1
                await self._run_slots.acquire_on_behalf_of(delivery)
                acquired = 2
            finally:
                del self._waiting[delivery]
        if acquired < 2 or self._stopping.is_set():
            if acquired:
                ctx.limiter.release_on_behalf_of(delivery)
            if acquired == 2:
                self._run_slots.release_on_behalf_of(delivery)
            await self._messages.give_back(delivery)
            return
        key = JobKey(message.record_id, message.variant, message.repeat)
        await self._claim_and_run(delivery, ctx, key)

    def _free_run_slots(self, ctx: BatchContext, delivery: Delivery) -> None:
        ctx.limiter.release_on_behalf_of(delivery)
        self._run_slots.release_on_behalf_of(delivery)

    async def _claim_and_run(self, delivery: Delivery, ctx: BatchContext, key: JobKey) -> None:
        batch_id = ctx.info.id
        claim = Claim(
            batch_id,
            key.record_id,
            max_attempts=ctx.info.request.max_attempts,
            last_delivery=self._messages.last_delivery(delivery),
            variant=key.variant,
            repeat=key.repeat,
        )
        try:
            result = await self._link.exchange(claim)
        except BaseException:
            self._free_run_slots(ctx, delivery)
            raise
        if not isinstance(result, Claimed):
            assert isinstance(result, Skipped)
            self._free_run_slots(ctx, delivery)
            self.stats.skipped += 1
            if result.reason == SkipReason.BUSY:
                # Another worker runs it under a live lease: look again once that lease
                # could have ended, in case that worker dies.
                await self._messages.nack(delivery, self.queue.lease_seconds)
            elif result.reason == SkipReason.LOST:
                reason = f"{LOST_ERROR}: worker lost while running it on its last try"
                log.warning("job %s/%s failed: %s", batch_id, key, reason)
                await self._messages.dead_letter(delivery, f"job failed: {reason}")
            else:
                if result.reason == SkipReason.UNKNOWN:
                    log.warning("dropping a message for unknown job %s/%s", batch_id, key)
                await self._messages.ack(delivery)
            return
        self.stats.claimed += 1
        if self.stats.first_claim is None:
            self.stats.first_claim = time.monotonic()
        running = _Running(delivery, result, anyio.CancelScope())
        self._running[(batch_id, key)] = running
        try:
            outcome = await self._run_job(ctx, running)
        finally:
            del self._running[(batch_id, key)]
            # Slots are for running flows; storing the outcome and acking overlap with
            # the next job's start.
            self._free_run_slots(ctx, delivery)
        # Shielded: a hard stop must not cut storing an outcome and its ack apart. Waiting
        # for an unreachable store ends with the outage's abandon() on stop instead.
        with anyio.CancelScope(shield=True):
            await self._settle(delivery, ctx, result.attempts, outcome, running.release_delay)

    async def _run_job(self, ctx: BatchContext, running: _Running) -> Outcome:
        claimed = running.claimed
        request = ctx.info.request
        started = time.perf_counter()
        result: dict[str, Any] | None = None
        variant = ctx.built(claimed.variant)  # a thread only for building it, once
        if variant is None:
            variant = await anyio.to_thread.run_sync(ctx.runner_for, claimed.variant)
        error: BaseException | None = variant.error
        meter = Meter()  # what its calls spent, whatever way the job ends
        with running.scope:
            if variant.runner is not None:
                set_current_job(
                    JobContext(
                        batch_id=claimed.batch_id,
                        record_id=claimed.record_id,
                        variant=claimed.variant,
                        repeat=claimed.repeat,
                        attempt=claimed.attempts,
                        max_attempts=request.max_attempts,
                        interactive=request.interactive,
                        console=self.console if request.interactive else None,
                        store=self.store,
                        meter=meter,
                        concurrency=int(ctx.limiter.total_tokens),
                    )
                )
                try:
                    result = await self._run_flow(variant, claimed, request.job_timeout)
                except Exception as exc:
                    error = exc
        duration = time.perf_counter() - started
        # Calls answered before the job was cancelled or given back were paid all the same.
        paid = meter.summary()
        spent = {"usage": paid} if paid else None
        if running.scope.cancelled_caught:
            if running.cancel_reason == "shutdown":
                return claimed.outcome(
                    JobStatus.PENDING, duration=duration, release=True, result=spent
                )
            return claimed.outcome(
                JobStatus.CANCELLED,
                duration=duration,
                result=spent,
                error_type="Cancelled",
                error_message=running.cancel_reason or "cancelled",
            )
        if error is None:
            return claimed.outcome(JobStatus.COMPLETED, duration=duration, result=result)
        running.release_delay = endpoint_wait(error) or 0.0
        if running.release_delay:  # an LLM endpoint is down: the job waits, not fails
            return claimed.outcome(JobStatus.PENDING, duration=duration, release=True, result=spent)
        final = (
            isinstance(error, PermanentError)
            or error is variant.error
            or claimed.attempts >= request.max_attempts
            or self._messages.last_delivery(running.delivery)
        )
        # What its calls cost before it failed still counts: as the error says (every
        # agent's, the failing one's marked on it), else (a timeout cancelled the call
        # under way, so nothing could mark it) as the meter counted them.
        failed = spent_by(error)
        return claimed.outcome(
            JobStatus.FAILED if final else JobStatus.PENDING,
            duration=duration,
            result={"usage": failed} if failed else spent,
            error_type=type(error).__name__,
            error_message=_printable(str(error)[:2000]),
            traceback=_printable("".join(traceback.format_exception(error))[-MAX_TRACEBACK:]),
            stop_batch=final and request.error_policy == "stop",
        )

    @staticmethod
    async def _run_flow(
        variant: VariantRunner, claimed: Claimed, limit: float | None
    ) -> dict[str, Any]:
        runner = variant.runner
        assert runner is not None
        if limit is None:
            return await runner.run(claimed.record, variant.parameters)
        try:
            with anyio.fail_after(limit):
                return await runner.run(claimed.record, variant.parameters)
        except TimeoutError:
            raise JobTimeoutError(f"job ran longer than job_timeout={limit}s") from None

    async def _settle(
        self, delivery: Delivery, ctx: BatchContext, attempt: int, outcome: Outcome, delay: float
    ) -> None:
        """Store the outcome, then ack or give the message back (see :func:`settle`)."""
        await settle(
            self._link,
            self._messages,
            self._retries,
            self.stats,
            delivery=delivery,
            retry_delay_setting=ctx.info.request.retry_delay,
            attempt=attempt,
            outcome=outcome,
            delay=delay,
        )
