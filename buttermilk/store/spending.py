"""What jobs spend on paid calls (USD and tokens): kept per job, added up per batch.

A run's result carries a ``usage`` summary (see :mod:`buttermilk.flows.runner`): every
call an endpoint answered in that attempt, also when the job was cancelled, timed out or
given back (:mod:`buttermilk.flows.meter`). When a job's outcome is stored, the same
transaction adds it to the batch's counters (also when another worker took the job over
meanwhile: its calls were paid), so that reading a batch's spending never sums over its
jobs; and a batch whose cost passes its ``max_cost`` is stopped there and then. The most
one attempt has cost is kept too: ``status`` multiplies it by the jobs still running to
show how far they may carry spending past the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Float, bindparam, case, func, update

from buttermilk.store.schema import batches


@dataclass(frozen=True)
class Spent:
    """What one run cost: USD (None when no call had a known price) and tokens."""

    cost: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0  # part of input_tokens
    reasoning_tokens: int = 0  # part of output_tokens
    schema_retry_calls: int = 0  # calls that asked again for an answer that did not fit
    schema_retry_input_tokens: int = 0  # part of input_tokens: those calls'
    schema_retry_output_tokens: int = 0  # part of output_tokens: those calls'
    schema_retry_cost: float | None = None  # part of cost: those calls' (None: no price)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def spent_in(result: Mapping[str, Any] | None) -> Spent | None:
    """The ``usage`` summary of a run's result, if it has one."""
    usage = result.get("usage") if result else None
    if not isinstance(usage, Mapping):
        return None
    return Spent(
        cost=_number(usage.get("cost")),
        input_tokens=int(_number(usage.get("input_tokens")) or 0),
        output_tokens=int(_number(usage.get("output_tokens")) or 0),
        cached_input_tokens=int(_number(usage.get("cached_input_tokens")) or 0),
        reasoning_tokens=int(_number(usage.get("reasoning_tokens")) or 0),
        schema_retry_calls=int(_number(usage.get("schema_retry_calls")) or 0),
        schema_retry_input_tokens=int(_number(usage.get("schema_retry_input_tokens")) or 0),
        schema_retry_output_tokens=int(_number(usage.get("schema_retry_output_tokens")) or 0),
        schema_retry_cost=_number(usage.get("schema_retry_cost")),
    )


_TOKENS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "schema_retry_calls",
    "schema_retry_input_tokens",
    "schema_retry_output_tokens",
)
_ADD_TOKENS = {name: batches.c[name] + bindparam(f"p_{name}") for name in _TOKENS}
_MOST = func.coalesce(batches.c.max_job_cost, 0.0)
_COST = bindparam("p_cost", type_=Float)
# NULL (no schema retry had a price yet) stays NULL unless this run's retries had one.
_RETRY_COST = bindparam("p_retry_cost", type_=Float)
_OLD_RETRY_COST = batches.c.schema_retry_cost
_CHARGE = (
    update(batches)
    .where(batches.c.id == bindparam("p_batch"))
    .values(
        **_ADD_TOKENS,
        cost=func.coalesce(batches.c.cost, 0.0) + _COST,
        max_job_cost=case((_COST > _MOST, _COST), else_=_MOST),
        schema_retry_cost=func.coalesce(
            _OLD_RETRY_COST + _RETRY_COST, _RETRY_COST, _OLD_RETRY_COST
        ),
    )
    .returning(batches.c.cost, batches.c.max_cost)
)
_COUNT_TOKENS = (
    update(batches)
    .where(batches.c.id == bindparam("p_batch"))
    .values(**_ADD_TOKENS)
    .returning(batches.c.cost, batches.c.max_cost)
)


def charge(conn: Connection, batch_id: str, spent: Spent) -> str | None:
    """Add ``spent`` to the batch's counters (in the caller's transaction).

    Returns why the batch must stop when its cost has now passed its ``max_cost``.
    """
    params: dict[str, Any] = {"p_batch": batch_id}
    params.update({f"p_{name}": getattr(spent, name) for name in _TOKENS})
    if spent.cost is None:
        row = conn.execute(_COUNT_TOKENS, params).first()
    else:
        params.update(p_cost=spent.cost, p_retry_cost=spent.schema_retry_cost)
        row = conn.execute(_CHARGE, params).first()
    if row is None:
        return None
    cost, cap = row
    if cap is None or cost is None or cost <= cap:
        return None
    return (
        f"stopped by max_cost: the batch has spent {cost:.6g} USD, "
        f"more than its max_cost={cap:g} USD"
    )
