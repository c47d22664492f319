"""Progress per combination: each combination's axis values and job counts.

``status``, ``GET /api/batches/{id}`` and the dashboard show one entry per combination of a
batch, in planned order, so a comparison stopped early shows which combinations lag.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from buttermilk.domain.statuses import JobStatus
from buttermilk.domain.variants import Combination

ENDED_JOB = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class CombinationProgress(BaseModel):
    """One combination of a batch: its key, its value on each axis, its jobs per status."""

    variant: str
    values: dict[str, Any] = Field(default_factory=dict)
    counts: dict[JobStatus, int] = Field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.counts.get(status, 0) for status in ENDED_JOB)

    @property
    def progress(self) -> float:
        """Share of its jobs that have ended, 0..1."""
        return self.done / self.total if self.total else 1.0

    def as_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "values": self.values,
            "total": self.total,
            "done": self.done,
            "progress": round(self.progress, 4),
            "counts": {status.value: self.counts.get(status, 0) for status in JobStatus},
        }


def combination_progress(
    planned: list[Combination], counts: Mapping[str, Mapping[JobStatus, int]]
) -> list[CombinationProgress]:
    """Every planned combination with its counts (none yet: zeros), in planned order.

    A key the jobs hold that the plan lacks (a stored request this version cannot read)
    is listed after them, without values, so that every job is counted somewhere.
    """
    found = [
        CombinationProgress(variant=c.key, values=c.values, counts=dict(counts.get(c.key, {})))
        for c in planned
    ]
    known = {c.key for c in planned}
    found.extend(
        CombinationProgress(variant=key, counts=dict(counts[key]))
        for key in sorted(counts)
        if key not in known
    )
    return found
