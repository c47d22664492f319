"""What a worker is asked to do (:class:`WorkerOptions`) and what it did (:class:`WorkerStats`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How one worker behaves. Every duration is in seconds."""

    concurrency: int = 100
    """Most jobs this worker holds at once, over all batches."""
    max_jobs: int | None = None
    """Stop after starting this many jobs (None: no limit)."""
    idle_timeout: float | None = 10.0
    """Stop once nothing ran and the queue stayed empty this long (None: never; 0: once a
    look at the queue found nothing), and no retry of a job given back by this worker is
    due later; give up (:meth:`Worker.run` raises StoreError) once the store stayed
    unreachable this long."""
    interactive: bool = False
    """Take jobs of interactive batches (and only those)."""
    batch_id: str | None = None
    """Stop when this batch ends (``batch.wait=true``'s worker). A queue that filters by
    batch (the embedded one) gives this worker only its jobs; a Pub/Sub subscription
    carries every batch's, and the worker runs whatever it receives meanwhile."""
    grace_period: float = 30.0
    """On stop, how long running jobs may take before they are released."""
    hold_timeout: float = 5.0
    """A received job waiting this long for a slot of its batch goes back to the queue."""


@dataclass
class WorkerStats:
    """Counts since the worker started, for progress lines. An outcome counts once the
    store applied it; one dropped because another worker took the job over meanwhile
    counts as ``taken_over`` instead."""

    started_at: float = field(default_factory=time.monotonic)
    completed: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    taken_over: int = 0
    skipped: int = 0
    malformed: int = 0
    not_yet_visible: int = 0
    """Messages given back because their batch was not committed yet (no attempt spent)."""
    claimed: int = 0
    first_claim: float | None = None
    last_end: float | None = None

    @property
    def active(self) -> float:
        """Seconds from the first job's claim to the last job's end."""
        if self.first_claim is None or self.last_end is None:
            return 0.0
        return self.last_end - self.first_claim

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0
