"""Hydra's sweeps, refused with one line that says how to write the comparison as variants.

A sweep (``--multirun``, ``key=a,b``, ``key=choice(a,b)``, ``key=range(1,4)``) would make one
batch per value, each drawing its own sample: the comparison would not be paired. One batch
with ``batch.variants`` runs every value on the same records instead. A sweep over a
flow parameter (``+batch.parameters.tone=a,b``) is shown as that very axis; a sweep over
flows needs separate batches.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

EXAMPLE = "'batch.variants={judge.model: [a, b]}'"
AXES = "an axis is AGENT.OPTION or a flow parameter"
_OVERRIDE = re.compile(r"^\+{0,2}(?P<key>[\w.@/-]+)=(?P<value>.*)$", re.DOTALL)
_CALL = re.compile(r"^(?P<fn>choice|range|glob)\((?P<args>.*)\)$", re.DOTALL)
_PARAMETER = "batch.parameters."


def _values(value: str) -> list[str] | None:
    """The values a sweep's value stands for (None: a sweep this cannot spell out)."""
    call = _CALL.match(value.strip())
    if call is None:
        return [v.strip() for v in value.split(",")] if "," in value else None
    args = [a.strip() for a in call["args"].split(",") if a.strip()]
    if call["fn"] == "choice":
        return args
    if call["fn"] == "range" and all(re.fullmatch(r"-?\d+", a) for a in args) and args:
        return [str(n) for n in range(*(int(a) for a in args[:3]))]
    return None


def is_sweep(override: str) -> bool:
    found = _OVERRIDE.match(override)
    if found is None or found["value"].startswith(("[", "{", "'", '"')):
        return False
    return "," in found["value"] or _CALL.match(found["value"].strip()) is not None


def variants_hint(overrides: Sequence[str]) -> str:
    """How to compare in one batch what ``overrides`` sweep over, in a few words."""
    for override in overrides:
        found = _OVERRIDE.match(override)
        if found is None or not is_sweep(override):
            continue
        key = found["key"]
        if key in ("flow", "batch.flow"):
            return (
                "compare flows with a batch of each, or values within one flow in one "
                f"batch with {EXAMPLE} ({AXES})"
            )
        values = _values(found["value"])
        if key.startswith(_PARAMETER) and values:
            axis = key.removeprefix(_PARAMETER)
            axis_values = ", ".join(values)
            return f"compare values in one batch with 'batch.variants={{{axis}: [{axis_values}]}}'"
    return f"compare values in one batch with {EXAMPLE} ({AXES})"


def multirun_refusal(overrides: Sequence[str]) -> str:
    return f"--multirun sweeps are not supported: {variants_hint(overrides)}"


def sweep_refusal(override: str) -> str:
    """The line for one sweep typed without --multirun (Hydra refuses it too)."""
    line = f"{override} is a sweep, and sweeps are not supported: {variants_hint([override])}"
    found = _OVERRIDE.match(override)
    plain = found is not None and found["key"] not in ("flow", "batch.flow")
    if plain and found is not None and "," in found["value"] and not _CALL.match(found["value"]):
        key, value = override.partition("=")[::2]
        line += f"; for a list write {key}=[{value}], for text quote it: {key}='{value}'"
    return line
