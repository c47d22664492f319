"""A batch's throughput and spending over time: jobs ended and their cost per time bucket."""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_BUCKETS = 120
"""Most buckets a timeline is cut into (the bucket width grows with the batch's span)."""
NICE_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)


class TimeBucket(BaseModel):
    """Jobs that ended in ``[start, start + seconds)`` (Unix seconds) and what they cost."""

    start: float
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    cost: float | None = Field(default=None, description="USD of the jobs ended in it.")
    input_tokens: int = 0
    output_tokens: int = 0


class Timeline(BaseModel):
    """Throughput and cost of one batch over time, from one grouped read of the store."""

    batch_id: str
    bucket_seconds: float
    buckets: list[TimeBucket] = Field(
        default_factory=list, description="Buckets holding at least one ended job, in order."
    )


def bucket_width(first: float, last: float, most: int = MAX_BUCKETS) -> float:
    """The smallest of :data:`NICE_SECONDS` (or whole days past them) that cuts the span
    ``[first, last]`` into at most ``most`` buckets."""
    span = max(last - first, 0.0)
    for seconds in NICE_SECONDS:
        if span / seconds < most:
            return float(seconds)
    days = 1
    while span / (86400 * days) >= most:
        days *= 2
    return float(86400 * days)
