"""Batches from Python, for notebooks: create, wait, read the results, score them.

The same settings, store, queue and :class:`~buttermilk.batch.service.BatchService` as
``python -m buttermilk.runner.cli ui=batch`` (composed from the same config, with the same
overrides), so a batch made here is one the CLI, the API and the dashboard see::

    from buttermilk import batches

    b = batches.create("sentiment", max_records=100, repeats=2)  # embedded store and queue
    b.wait()                          # works it in this process, with a progress bar
    df = b.results()                  # pandas DataFrame: one row per job
    r = b.report()                    # a Report: r.overall.accuracy.estimate
    batches.open("k3f9").report(evaluate={"label": "vader.label"})

Every call is synchronous and works in Jupyter too (which runs an event loop): it runs on
an event loop of its own in a worker thread. Errors are Buttermilk's own exceptions
(:class:`~buttermilk.errors.UsageError` for bad input, with the CLI's one-line messages).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.from_thread
from pydantic import ValidationError

from buttermilk.domain import BatchInfo, BatchSummary
from buttermilk.domain.evaluation import EvaluationSpec, Report
from buttermilk.errors import ButtermilkError, UsageError

if TYPE_CHECKING:
    import pandas as pd

    from buttermilk.runner.commands import App

T = TypeVar("T")
_defaults: tuple[str, ...] = ()


def configure(*overrides: str) -> None:
    """Set the CLI overrides every later call starts from, e.g.
    ``configure("store=postgres", "queue=pubsub", "queue.project=my-project")`` (none:
    the embedded queue and store under ``$BUTTERMILK_HOME``)."""
    global _defaults
    _defaults = tuple(overrides)


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on an event loop in a worker thread, whether or not this thread runs
    one (Jupyter does); an interrupt (Ctrl-C, Jupyter's stop) cancels it."""
    with anyio.from_thread.start_blocking_portal() as portal:
        future = portal.start_task_soon(main)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            concurrent.futures.wait([future])
            raise


def _with_app(overrides: Sequence[str], use: Callable[[App], Awaitable[T]]) -> T:
    """Compose the CLI's settings, open its store, queue and service, and call ``use``."""
    from buttermilk.runner.commands import open_app
    from buttermilk.runner.in_process import composed

    with composed([*_defaults, *overrides]) as (settings, flows):

        async def main() -> T:
            async with open_app(settings, flows) as app:
                return await use(app)

        return _run(main)


def _spec(evaluate: EvaluationSpec | Mapping[str, Any] | None) -> EvaluationSpec | None:
    if evaluate is None or isinstance(evaluate, EvaluationSpec):
        return evaluate
    from buttermilk.runner.settings import describe_validation_error

    try:
        return EvaluationSpec.model_validate(dict(evaluate))
    except ValidationError as exc:
        raise UsageError(describe_validation_error(exc, "evaluate.")) from None


class Batch:
    """One stored batch, by its full id; every method reads the store afresh."""

    def __init__(self, batch_id: str, overrides: Sequence[str] = ()) -> None:
        self.id = batch_id
        self.overrides = tuple(overrides)

    def __repr__(self) -> str:
        return f"Batch({self.id!r})"

    def _call(self, use: Callable[[App], Awaitable[T]]) -> T:
        return _with_app(self.overrides, use)

    def info(self) -> BatchInfo:
        """The batch as stored: its flow, request, status, totals, times and cost."""

        async def use(app: App) -> BatchInfo:
            return (await app.service.summary(self.id, per_combination=False)).batch

        return self._call(use)

    def status(self) -> BatchSummary:
        """Its status, counts (also per combination), progress, rate and common errors."""

        async def use(app: App) -> BatchSummary:
            return await app.service.summary(self.id)

        return self._call(use)

    def wait(self, progress: bool = True) -> BatchSummary:
        """Work the batch in this process (as ``batch.wait=true`` does) until it ends, with a
        progress bar when ``progress``; returns its final summary (status and counts:
        failed jobs do not raise). An interrupt stops the work here; the batch goes on
        with any other workers."""
        from buttermilk.runner.commands import work_batch

        async def use(app: App) -> BatchSummary:
            info = app.store.get_batch(self.id)
            found = await work_batch(
                app, self.id, interactive=info.interactive, signals=False, bar=progress
            )
            if found is None:  # cannot happen without signals; cancellation raises
                raise ButtermilkError(f"stopped waiting for batch {self.id}")
            return found

        return self._call(use)

    def results(self) -> pd.DataFrame:
        """Every job as a row, in planned order: the rows of a CSV or Parquet export
        (:func:`buttermilk.batch.export.job_row`), flattened into dotted columns the same
        way (``variant``, ``repeat``, ``axes.vader.threshold``, ``ground_truth``,
        ``outputs.vader.label``, ...), each value exact (lists as lists). Raises
        ColumnClashError when two keys would make one column."""
        import pandas as pd

        from buttermilk.batch.export import spooled

        def read(app: App) -> tuple[list[str], list[dict[str, Any]]]:
            with spooled(app.store, self.id) as spool:
                return list(spool.columns.found), list(spool.rows())

        async def use(app: App) -> tuple[list[str], list[dict[str, Any]]]:
            return await anyio.to_thread.run_sync(read, app)

        columns, rows = self._call(use)
        return pd.DataFrame.from_records(rows, columns=columns)

    def report(self, evaluate: EvaluationSpec | Mapping[str, Any] | None = None) -> Report:
        """Its scores against the ground truth (the CLI's ``batch.command=report``):
        ``evaluate`` over the batch's own spec (a dict such as ``{"label": "vader.label"}``
        or an EvaluationSpec). UsageError when there is nothing to score."""
        return report([self], evaluate=evaluate)

    def cancel(self) -> BatchInfo:
        """Cancel it: no job starts any more, running ones stop within seconds."""

        async def use(app: App) -> BatchInfo:
            return await app.service.cancel(self.id)

        return self._call(use)


def create(flow: str, *, overrides: Sequence[str] = (), **options: Any) -> Batch:
    """Create a batch of ``flow`` (stored and queued; call :meth:`Batch.wait` to work it
    here, or run workers). ``options`` are the CLI's ``batch.*`` request options over the
    config's defaults: ``max_records``, ``variants`` (``{"vader.threshold": [0.05, 0.3]}``),
    ``repeats``, ``parameters``, ``seed``, ``shuffle``, ``concurrency``, ... ``overrides``:
    CLI overrides (``store=postgres``). UsageError for an unknown flow or a bad option."""

    async def use(app: App) -> Batch:
        batch = app.settings.batch
        merged = batch.model_copy(update={"request": {**batch.request, **options}})
        created = await app.service.create(merged.to_request(flow))
        return Batch(created.batch.id, overrides)

    return _with_app(overrides, use)


def open(batch_id: str | None = None, *, overrides: Sequence[str] = ()) -> Batch:
    """The batch with this id (a unique prefix is enough), or the newest one (None).
    UnknownBatchError when no batch matches."""

    async def use(app: App) -> Batch:
        if batch_id is None:
            newest = app.store.list_batches(limit=1)
            if not newest:
                raise UsageError("there are no batches yet: create one with batches.create")
            return Batch(newest[0].id, overrides)
        return Batch(app.store.resolve_id(batch_id), overrides)

    return _with_app(overrides, use)


def report(
    found: Sequence[Batch | str],
    *,
    evaluate: EvaluationSpec | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> Report:
    """One report over several batches of one flow, lined up (as ``batch.batch_ids``):
    ``found`` holds Batch objects or ids (prefixes). UsageError when they cannot be scored
    together."""
    spec = _spec(evaluate)
    given = [b.id if isinstance(b, Batch) else b for b in found]
    if not overrides:
        overrides = next((b.overrides for b in found if isinstance(b, Batch)), ())

    async def use(app: App) -> Report:
        ids = [app.store.resolve_id(one) for one in given]
        return await app.service.report(ids, evaluate=spec)

    return _with_app(overrides, use)
