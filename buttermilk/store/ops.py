"""What workers send the store (claims, outcomes) and what they get back."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from buttermilk.domain import BatchInfo, BatchStatus, JobKey, JobStatus
from buttermilk.domain.variants import DEFAULT_KEY
from buttermilk.records import Record

LIVE_BATCH = (BatchStatus.PENDING.value, BatchStatus.RUNNING.value)
OPEN_JOB = (JobStatus.PENDING.value, JobStatus.RUNNING.value)


class SkipReason(StrEnum):
    """Why a claim did not give the job to the caller."""

    DONE = "done"  # the job has ended already: the message is a duplicate
    BUSY = "busy"  # another worker holds a live lease on it
    BATCH_ENDED = "batch_ended"  # its batch was cancelled, failed or completed
    UNKNOWN = "unknown"  # no such job (a deleted batch, or a foreign message)
    LOST = "lost"  # its worker was lost on its last try: this claim failed it (WorkerLost)


@dataclass(frozen=True)
class Claim:
    batch_id: str
    record_id: str
    max_attempts: int | None = None
    """The batch's max_attempts: the claim that reaches it is the job's last try."""
    last_delivery: bool = False
    """The transport gives the message up after this delivery: a claim now is the last try."""
    variant: str = DEFAULT_KEY
    repeat: int = 0

    @property
    def key(self) -> JobKey:
        return JobKey(self.record_id, self.variant, self.repeat)


@dataclass(frozen=True)
class Claimed:
    """The caller now runs this job, and must report its outcome with ``token``."""

    batch_id: str
    record_id: str
    token: str
    attempts: int
    record: Record
    variant: str = DEFAULT_KEY
    repeat: int = 0

    @property
    def key(self) -> JobKey:
        return JobKey(self.record_id, self.variant, self.repeat)

    def outcome(self, status: JobStatus, **fields: Any) -> Outcome:
        """How this claimed job ended (see :class:`Outcome` for the fields)."""
        return Outcome(
            self.batch_id,
            self.record_id,
            self.token,
            status,
            variant=self.variant,
            repeat=self.repeat,
            **fields,
        )


@dataclass(frozen=True)
class Skipped:
    batch_id: str
    record_id: str
    reason: SkipReason
    variant: str = DEFAULT_KEY
    repeat: int = 0


@dataclass(frozen=True)
class Outcome:
    """How one claimed job ended (or why it goes back to pending)."""

    batch_id: str
    record_id: str
    token: str
    status: JobStatus
    duration: float | None = None
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    release: bool = False  # back to pending without spending an attempt (worker shutdown)
    stop_batch: bool = False  # a final failure under error_policy=stop
    variant: str = DEFAULT_KEY
    repeat: int = 0

    @property
    def key(self) -> JobKey:
        return JobKey(self.record_id, self.variant, self.repeat)


@dataclass
class Requeued:
    batch: BatchInfo
    jobs: list[JobKey] = field(default_factory=list)

    @property
    def record_ids(self) -> list[str]:
        """The requeued jobs' record ids, in planned order (a record once per job)."""
        return [key.record_id for key in self.jobs]
