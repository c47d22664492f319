"""A batch's grid: its records x combinations x repeats, and one message per job.

The flow's own axes (``variants:`` in its YAML) and repeats are the defaults; a request's
``variants`` replace them axis by axis, and its ``repeats`` replaces the flow's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buttermilk.batch.planner import Plan, plan_records
from buttermilk.domain import BatchInfo, BatchRequest, JobKey
from buttermilk.domain.variants import Axes, Combination, combinations
from buttermilk.errors import DataSourceError, VariantError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner
from buttermilk.flows.sources import check_sources
from buttermilk.flows.variants import check_axes_of, flow_for
from buttermilk.queue.base import JobMessage
from buttermilk.records import Record

if TYPE_CHECKING:
    from buttermilk.store.store import Store

MAX_JOBS = 100_000_000
"""Most jobs one batch may hold (records x combinations x repeats)."""


@dataclass(frozen=True)
class Grid:
    """The combinations and repeats every record of a batch runs."""

    axes: Axes
    combinations: list[Combination]
    repeats: int

    @property
    def jobs_per_record(self) -> int:
        return len(self.combinations) * self.repeats

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.combinations]

    def resolved(self, request: BatchRequest) -> BatchRequest:
        """The request as stored: with the whole grid's axes and repeats written out."""
        return request.model_copy(update={"variants": self.axes, "repeats": self.repeats})


def grid_for(flow: FlowConfig, request: BatchRequest) -> Grid:
    """The grid of a batch of ``flow`` asked for by ``request``.

    Raises VariantError (one line) for an axis naming an agent the flow lacks or an
    option it cannot take.
    """
    axes = {**flow.variants, **request.variants}
    check_axes_of(flow, axes)
    grid = Grid(axes, combinations(axes), request.repeats or flow.repeats)
    if axes:
        for combination in grid.combinations:
            try:
                FlowRunner(flow_for(flow, combination))
            except Exception as exc:
                raise VariantError(f"variants {combination.key!r}: {exc}") from None
    return grid


def check_size(grid: Grid, records: int) -> None:
    """Refuse a batch of more than :data:`MAX_JOBS` jobs (one line, before anything is made)."""
    total = records * grid.jobs_per_record
    if total > MAX_JOBS:
        raise VariantError(
            f"{records:,} records x {len(grid.combinations):,} combinations x "
            f"{grid.repeats:,} repeats make {total:,} jobs; one batch holds at most "
            f"{MAX_JOBS:,} (lower batch.max_records or batch.repeats)"
        )


def planned_messages(
    batch_id: str,
    request: BatchRequest,
    records: Sequence[Record],
    variants: Sequence[str],
    created_at: float | None = None,
) -> Iterator[JobMessage]:
    """One message per job of a new batch (``request`` as stored: its repeats written out),
    in planned order (a record's jobs next to each other); whole records, so the
    transport may carry them inline. ``created_at``: when the create began (Unix s)."""
    repeats = request.repeats or 1
    for record in records:
        for repeat in range(repeats):
            for variant in variants:
                yield JobMessage(
                    batch_id=batch_id,
                    record_id=record.record_id,
                    flow=request.flow,
                    variant=variant,
                    repeat=repeat,
                    interactive=request.interactive,
                    record=record,
                    created_at=created_at,
                )


def requeued_messages(batch: BatchInfo, keys: Sequence[JobKey]) -> Iterator[JobMessage]:
    """One message per requeued job (the worker reads its record from the store)."""
    for key in keys:
        yield JobMessage(
            batch_id=batch.id,
            record_id=key.record_id,
            flow=batch.flow,
            variant=key.variant,
            repeat=key.repeat,
            interactive=batch.interactive,
        )


def plan_batch(
    flow: FlowConfig, request: BatchRequest, store: Store | None = None
) -> tuple[Grid, Plan]:
    """``flow``'s grid and planned records as ``request`` asks, after the checks a batch
    needs (its sources, every agent of every combination, a size the store can hold):
    what ``create`` stores and ``estimate`` prices. ``store``: where ``type: batch``
    sources read earlier batches. Raises DataSourceError (bad or empty sources),
    VariantError and the agents' set-up errors."""
    check_sources(flow, store)
    FlowRunner(flow)  # fail now, not on every worker, if an agent cannot be set up
    grid = grid_for(flow, request)  # each combination's agents too
    plan = plan_records(
        flow,
        shuffle=request.shuffle,
        max_records=request.max_records,
        seed=request.seed,
        store=store,
        stratify=request.stratify,
        stratify_mode=request.stratify_mode,
    )
    if not plan.records:
        raise DataSourceError(f"flow {flow.name!r}: its data sources hold no records")
    check_size(grid, len(plan.records))
    return grid, plan
