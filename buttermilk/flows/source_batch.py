"""``type: batch``: the records of an earlier batch in the same store, with its outputs.

``batch_id`` is the earlier batch's id or a unique prefix. ``where`` keys:

- ``status``: a job status (``completed``, ``failed``, ...) or a list of them;
- ``variant``: a combination's key (as ``status`` shows it) or a list of them;
- any other key is a path into the job's outputs, ``AGENT.KEY[.KEY]`` (as an
  evaluation's label): ``judge.answer.label: toxic``, or a list for inclusion.

A row is the earlier job's record (its id, content, uri, ground truth and metadata)
plus ``metadata.previous = {batch_id, variant, repeat, status, outputs}``: that job's
outputs, for the next agents and the report. Its record id is the earlier record's id
when the jobs kept hold at most one job per record (one combination kept, one repeat);
otherwise ``ID/VARIANT`` (several combinations kept) and ``ID/VARIANT/REPEAT`` (several
repeats), so every kept job is a record of its own.

Location of a row: ``batch ID job 'RECORD' (VARIANT, repeat N)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from buttermilk.domain import JobStatus
from buttermilk.errors import DataSourceError, UnknownBatchError
from buttermilk.flows.readers import Row
from buttermilk.flows.source_models import BatchSource

if TYPE_CHECKING:
    from buttermilk.domain import BatchInfo
    from buttermilk.store.store import Store

PREVIOUS = "previous"
"""The metadata key under which a record keeps the earlier job's outputs."""
_STATUSES = {status.value for status in JobStatus}
_MISSING: Any = object()


def _batch(name: str, source: BatchSource, store: Store | None) -> BatchInfo:
    if store is None:
        raise DataSourceError(
            f"data source {name!r}: type: batch reads an earlier batch from the store, "
            "and none is open here"
        )
    try:
        return store.get_batch(store.resolve_id(source.batch_id))
    except UnknownBatchError as exc:
        raise DataSourceError(f"data source {name!r}: {exc}") from None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def check(name: str, source: BatchSource, store: Store | None) -> None:
    """Refuse an unknown batch, an unknown status or combination, and an output path whose
    first segment names no agent of the earlier batch's flow."""
    batch = _batch(name, source, store)
    where = source.where
    for status in _listed(where.get("status", [])):
        if status not in _STATUSES:
            raise DataSourceError(
                f"data source {name!r}: where.status={status!r} is not a job status "
                f"(one of {', '.join(sorted(_STATUSES))})"
            )
    keys = [combination.key for combination in batch.combinations()]
    for variant in _listed(where.get("variant", [])):
        if variant not in keys:
            raise DataSourceError(
                f"data source {name!r}: where.variant={variant!r}: batch {batch.id} has no "
                f"such combination (its keys: {', '.join(keys)})"
            )
    agents = [str(a.get("name")) for a in batch.flow_snapshot.get("agents") or []]
    for path in where:
        if path not in ("status", "variant") and path.split(".")[0] not in agents:
            raise DataSourceError(
                f"data source {name!r}: where.{path}: batch {batch.id}'s flow has no agent "
                f"{path.split('.')[0]!r} (its agents: {', '.join(agents)}); an output path "
                "is AGENT.KEY[.KEY]"
            )


def row_groups(
    name: str, source: BatchSource, store: Store | None
) -> Iterator[tuple[str, Iterator[Row]]]:
    """One group: the earlier batch's kept jobs, in its planned order."""
    check(name, source, store)
    assert store is not None
    yield "batch", _rows(name, source, store, _batch(name, source, store))


def _output(outputs: Any, path: str) -> Any:
    value = outputs
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _rows(name: str, source: BatchSource, store: Store, batch: BatchInfo) -> Iterator[Row]:
    from buttermilk.flows.where import matches

    where = dict(source.where)
    statuses = _listed(where.pop("status", list(_STATUSES)))
    variants = _listed(where.pop("variant", [c.key for c in batch.combinations()]))
    one_status = JobStatus(statuses[0]) if len(statuses) == 1 else None
    one_variant = variants[0] if len(variants) == 1 else None
    by_variant = len(variants) > 1
    by_repeat = batch.repeats > 1
    found: set[str] = set()
    for job in store.iter_jobs(batch.id, status=one_status, variant=one_variant):
        if job.status.value not in statuses or job.variant not in variants:
            continue
        outputs = (job.result or {}).get("outputs") or {}
        keep = True
        for path, wanted in where.items():
            value = _output(outputs, path)
            if value is _MISSING:
                keep = False
                continue
            found.add(path)
            keep = keep and matches(value, wanted)
        if not keep or job.record is None:
            continue
        record = job.record
        record_id = record.record_id
        if by_variant:
            record_id += f"/{job.variant}"
        if by_repeat:
            record_id += f"/{job.repeat}"
        previous: dict[str, Any] = {
            "batch_id": batch.id,
            "variant": job.variant,
            "repeat": job.repeat,
            "status": job.status.value,
            "outputs": outputs,
        }
        metadata = dict(record.metadata)
        if PREVIOUS in metadata:  # a batch of a batch: the chain is kept
            previous[PREVIOUS] = metadata.pop(PREVIOUS)
        row = {
            **metadata,
            "record_id": record_id,
            "content": record.content,
            "uri": record.uri,
            "ground_truth": record.ground_truth,
            PREVIOUS: previous,
        }
        where_from = f"batch {batch.id} job {job.key}"
        yield where_from, row
    missing = sorted(set(where) - found)
    if missing:
        raise DataSourceError(
            f"data source {name!r}: where: no job of batch {batch.id} has the output "
            f"{missing[0]!r} (an output path is AGENT.KEY[.KEY])"
        )
