"""The domain model: batch requests, batches, jobs and their statuses (below the store)."""

from __future__ import annotations

from buttermilk.domain.batches import BatchInfo, BatchSummary, ErrorCount
from buttermilk.domain.jobs import JobInfo, JobKey
from buttermilk.domain.progress import CombinationProgress, combination_progress
from buttermilk.domain.requests import (
    MAX_JOB_TIMEOUT,
    MAX_RETRY_DELAY,
    BatchRequest,
    ErrorPolicy,
    Usd,
)
from buttermilk.domain.statuses import ENDED_BATCH, BatchStatus, JobStatus

__all__ = [
    "ENDED_BATCH",
    "MAX_JOB_TIMEOUT",
    "MAX_RETRY_DELAY",
    "BatchInfo",
    "BatchRequest",
    "BatchStatus",
    "BatchSummary",
    "CombinationProgress",
    "ErrorCount",
    "ErrorPolicy",
    "JobInfo",
    "JobKey",
    "JobStatus",
    "Usd",
    "combination_progress",
]
