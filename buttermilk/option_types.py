"""Number types for the options users give (CLI overrides, config files, API bodies).

Every numeric option takes one of these, so a bad value is refused where it is given, with
a message naming it, instead of being stored and failing later: no ``inf`` or ``nan`` (JSON
cannot hold them: the store would keep ``null``), no ``true``/``false`` taken for 1/0, and
whole numbers within what the store's columns and the JSON encoder can hold.

A field with its own range spells the whole type, bounds first and :data:`NotABool` last,
e.g. ``Annotated[float, Field(gt=0, le=60, allow_inf_nan=False), NotABool] | None``:
bounds given after the validator (or on an optional field's ``Field``) still validate, but
come out of the JSON schema under pydantic's names instead of JSON Schema's.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _not_a_bool(value: Any) -> Any:
    # bool is an int in Python: without this, ``concurrency=true`` would be stored as 1.
    if isinstance(value, bool):
        raise ValueError("input should be a number, not true or false")
    return value


NotABool = BeforeValidator(_not_a_bool)
"""Refuses ``True``/``False`` where a number is meant (numeric strings still parse)."""

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False), NotABool]
"""A duration in seconds, 0 or more, finite."""

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False), NotABool]
"""A duration in seconds, more than 0, finite."""

Count = Annotated[int, Field(ge=1, le=INT32_MAX), NotABool]
"""A whole number from 1 to 2**31 - 1 (records, jobs, attempts, slots, rows)."""

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX), NotABool]
"""A whole number that a 64-bit column (and the JSON encoder) can hold."""
