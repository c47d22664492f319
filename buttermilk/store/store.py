"""The batch store: the one source of truth about batches, jobs, results and errors.

Its parts, each in its own module: the plumbing (:mod:`.engine`), batch rows
(:mod:`.batches`), the claim/outcome exchange (:mod:`.exchange`), read queries
(:mod:`.reads`), throughput over time (:mod:`.timeline`) and retry (:mod:`.requeue`).
Methods are synchronous and short; async callers run them in a worker thread.
"""

from __future__ import annotations

from buttermilk.store.exchange import JobExchange
from buttermilk.store.ops import Claim, Claimed, Outcome, Requeued, Skipped, SkipReason
from buttermilk.store.reads import JobReads
from buttermilk.store.requeue import Requeue
from buttermilk.store.scoring import ScoringReads
from buttermilk.store.timeline import JobTimelines

__all__ = ["Claim", "Claimed", "Outcome", "Requeued", "SkipReason", "Skipped", "Store"]


class Store(JobExchange, Requeue, JobReads, ScoringReads, JobTimelines):
    """Batches and jobs in a SQL database (``sqlite:///...`` or ``postgresql+psycopg://...``)."""
