"""What a report reads: each job's key, status, label and truth, picked out IN SQL.

Only the values at the spec's two paths leave the database (never whole ``record`` or
``result`` columns), as JSON text that :func:`buttermilk.values.loads` reads back exactly
as stored: ``"1"`` stays text, ``1`` a number, ``true`` a boolean, tagged values (a
decimal, a big integer) their Python values. SQLite uses its ``->`` operator (SQLite
3.38 or later), which returns the JSON text of the value at a path; PostgreSQL casts
``jsonb #> path`` to text. A path that is absent, or holds JSON null, reads as None.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Text, bindparam, cast, select, type_coerce

from buttermilk import values
from buttermilk.domain import JobStatus
from buttermilk.domain.evaluation import EvaluationSpec, ScoredJob
from buttermilk.errors import EvaluationError
from buttermilk.store.engine import StoreBase
from buttermilk.store.schema import jobs

STATUSES = {status.value: status for status in JobStatus}
SCORING_CHUNK = 20_000
"""Jobs read per query (keyset pages over the batch's planned order)."""
PATH_SAMPLE = 20
"""Completed jobs whose outputs :meth:`ScoringReads.output_paths` looks at."""
MAX_PATHS = 30


def _leaf_paths(value: Any, prefix: str, found: dict[str, None], depth: int = 6) -> None:
    if isinstance(value, dict) and value and depth:
        for key, inner in value.items():
            _leaf_paths(inner, f"{prefix}.{key}" if prefix else str(key), found, depth - 1)
    elif prefix:
        found.setdefault(prefix, None)


def label_path(spec: EvaluationSpec) -> tuple[str, list[str]]:
    """The column and keys of the label: ``judge.answer.label`` is
    ``result["outputs"]["judge"]["answer"]["label"]``."""
    return "result", ["outputs", *spec.label.split(".")]


def truth_path(spec: EvaluationSpec) -> tuple[str, list[str]]:
    """The column and keys of the truth: ``ground_truth[.PATH]`` or ``metadata.PATH`` of
    the job's record."""
    return "record", spec.truth.split(".")


def _sqlite_path(keys: Sequence[str]) -> str:
    for key in keys:
        if '"' in key:
            raise EvaluationError(
                f"evaluate: the key {key!r} holds a double quote, which a SQLite JSON path "
                "cannot name; rename the output key"
            )
    return "$" + "".join(f'."{key}"' for key in keys)


class _Decoder:
    """JSON text -> value; the texts of scalars (labels repeat) decoded once per read."""

    CACHED = 10_000

    def __init__(self) -> None:
        self.scalars: dict[str, Any] = {}

    def __call__(self, text: str | None) -> Any:
        if text is None:
            return None
        found = self.scalars.get(text, self)
        if found is not self:
            return found
        found = values.loads(text)
        if isinstance(found, str | int | float) and len(self.scalars) < self.CACHED:
            self.scalars[text] = found  # immutable: safe to hand out again
        return found


class ScoringReads(StoreBase):
    """The store's read of a batch's jobs for a report."""

    def _json_at(self, column: str, keys: Sequence[str]) -> ColumnElement[Any]:
        source = jobs.c[column]
        if self._is_sqlite:
            return type_coerce(source, Text).op("->")(_sqlite_path(keys))
        from sqlalchemy.dialects.postgresql import ARRAY  # only a PostgreSQL store needs it

        path = bindparam(None, list(keys), type_=ARRAY(Text))
        return cast(source.op("#>")(path), Text)

    def scored_jobs(
        self, batch_id: str, spec: EvaluationSpec, *, chunk: int = SCORING_CHUNK
    ) -> Iterator[ScoredJob]:
        """Every job of the batch in planned order, with the label and the truth at the
        spec's paths (None where absent or JSON null; a failed job's label is None).

        Read in pages of ``chunk`` jobs (each its own short read transaction), so a batch
        of any size streams; a job that ends meanwhile is read as it was when its page was.
        Raises StoreError when the store cannot be read.
        """
        label = self._json_at(*label_path(spec)).label("label")
        truth = self._json_at(*truth_path(spec)).label("truth")
        decode = _Decoder()
        after = -1
        while True:
            query = (
                select(
                    jobs.c.seq,
                    jobs.c.record_id,
                    jobs.c.variant,
                    jobs.c.repeat,
                    jobs.c.status,
                    label,
                    truth,
                )
                .where(jobs.c.batch_id == batch_id, jobs.c.seq > after)
                .order_by(jobs.c.seq)
                .limit(chunk)
            )
            with self._read() as conn:
                rows = conn.execute(query).all()
            for seq, record_id, variant, repeat, status, label_text, truth_text in rows:
                yield ScoredJob(
                    batch_id=batch_id,
                    record_id=record_id,
                    variant=variant,
                    repeat=repeat,
                    status=STATUSES[status],
                    label=decode(label_text),
                    truth=decode(truth_text),
                )
                after = seq
            if len(rows) < chunk:
                return

    def output_paths(self, batch_id: str, *, sample: int = PATH_SAMPLE) -> list[str]:
        """The dotted paths (AGENT.KEY[.KEY...]) to the values in the outputs of the
        batch's first ``sample`` completed jobs, in the order found, at most
        :data:`MAX_PATHS` (for a message about a label path that finds nothing)."""
        outputs = self._json_at("result", ["outputs"])
        query = (
            select(outputs)
            .where(jobs.c.batch_id == batch_id, jobs.c.status == JobStatus.COMPLETED.value)
            .order_by(jobs.c.seq)
            .limit(sample)
        )
        with self._read() as conn:
            texts = conn.execute(query).scalars().all()
        found: dict[str, None] = {}
        for text in texts:
            if text is not None:
                _leaf_paths(values.loads(text), "", found)
        return list(found)[:MAX_PATHS]
