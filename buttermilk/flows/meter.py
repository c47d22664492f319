"""What one job's paid calls spent, added call by call as their answers arrive.

A job's result says what its agents spent (``usage`` in their outputs, summed by
:func:`buttermilk.flows.runner.usage_summary`), and a failing agent says it on its error
(:func:`~buttermilk.flows.runner.mark_spent`). Neither survives a job that is cancelled
(its batch stopped by ``max_cost`` or ``cancel``), timed out (``job_timeout``) or given
back at a worker's shutdown while a call is out: the answer is paid for all the same. So
the worker gives each job attempt a :class:`Meter` (in its
:class:`~buttermilk.flows.agents.JobContext`), an agent that pays per call adds each
answered call to it, and the worker reads it for the outcome of a job that did not end
with its own result. Adding is in memory: no store work per call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Counts a usage summary adds up: input and output tokens always, the details (parts of
#: them: cached prompt tokens, reasoning tokens; and the calls that asked again because an
#: answer did not fit its schema, with the tokens they spent) when some were reported.
TOKEN_KEYS = ("input_tokens", "output_tokens")
DETAIL_KEYS = (
    "cached_input_tokens",
    "reasoning_tokens",
    "schema_retry_calls",
    "schema_retry_input_tokens",
    "schema_retry_output_tokens",
)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def summary(
    cost: float | None, tokens: Mapping[str, int], schema_retry_cost: float | None = None
) -> dict[str, Any]:
    """A usage summary: ``cost`` (USD, rounded to 1e-10; None when no call had a price),
    ``input_tokens`` and ``output_tokens``; ``cached_input_tokens``, ``reasoning_tokens``,
    ``schema_retry_calls``, ``schema_retry_input_tokens`` and ``schema_retry_output_tokens``
    when not 0; and ``schema_retry_cost`` (USD, the part of ``cost`` schema retry calls
    spent) when some call asked again and had a price."""
    found: dict[str, Any] = {"cost": None if cost is None else round(cost, 10)}
    found.update({key: int(tokens.get(key, 0)) for key in TOKEN_KEYS})
    found.update({key: int(tokens[key]) for key in DETAIL_KEYS if tokens.get(key)})
    if schema_retry_cost is not None and tokens.get("schema_retry_calls"):
        found["schema_retry_cost"] = round(schema_retry_cost, 10)
    return found


@dataclass
class Meter:
    """The calls of one job attempt that an endpoint answered, and what they cost."""

    calls: int = 0
    cost: float | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    schema_retry_cost: float | None = None  # USD: the part of cost schema retry calls spent

    def add(self, cost: float | None, usage: Mapping[str, Any]) -> None:
        """Count one answered call: ``cost`` in USD (None without a price) and ``usage``
        shaped like an LLM output's (``input_tokens``, ``output_tokens``, ...; with
        ``schema_retry_calls`` when the call asked again for an answer fitting a schema)."""
        self.calls += 1
        if cost is not None:
            self.cost = (self.cost or 0.0) + cost
            if _count(usage.get("schema_retry_calls")):
                self.schema_retry_cost = (self.schema_retry_cost or 0.0) + cost
        for key in (*TOKEN_KEYS, *DETAIL_KEYS):
            self.tokens[key] = self.tokens.get(key, 0) + _count(usage.get(key))

    def summary(self) -> dict[str, Any] | None:
        """What the calls spent, as :func:`summary` shapes it (None when no call counted)."""
        if not self.calls:
            return None
        return summary(self.cost, self.tokens, self.schema_retry_cost)
