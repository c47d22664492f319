"""Variants x repeats: the combinations of a batch's axes, and each one's stable key.

A batch's *axes* map a name to the list of values it takes: ``judge.model`` (an option of
the agent ``judge``) or a plain name (a flow parameter). Every *combination* (one value per
axis, in the axes' order) runs ``repeats`` times on every record, so a batch holds
records x combinations x repeats jobs. A batch without axes has one combination, whose key
is :data:`DEFAULT_KEY`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from buttermilk.values import refuse_non_finite

DEFAULT_KEY = "default"
MAX_COMBINATIONS = 1_000
"""Most combinations one batch may have (the product of its axes' lengths)."""
MAX_REPEATS = 1_000
MAX_KEY = 64
"""Characters of a combination's key (the store's ``jobs.variant`` column holds 64)."""

Axes = dict[str, list[Any]]


@dataclass(frozen=True)
class Combination:
    """One value per axis, and the short key that names it in the store and in exports."""

    key: str
    values: dict[str, Any] = field(default_factory=dict)


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def check_axes(axes: Any, where: str = "variants") -> Axes:
    """``axes`` as a dict of non-empty lists, or ValueError naming what is wrong.

    Each axis name is an option path (``agent.option``) or a parameter name; a value that
    is not a list is an axis of one value. Raises ValueError when an axis is empty, a name is
    empty, or the product of the lengths passes :data:`MAX_COMBINATIONS`.
    """
    if axes is None:
        return {}
    if not isinstance(axes, dict):
        raise ValueError(
            f"{where} must map an axis name (AGENT.OPTION or a parameter) to a list of values, "
            f"not {type(axes).__name__}"
        )
    checked: Axes = {}
    for name, given in axes.items():
        if not isinstance(name, str) or not name.strip() or name.strip() != name:
            raise ValueError(f"{where}: axis name {name!r} must be a non-empty name")
        if name.startswith(".") or name.endswith(".") or ".." in name:
            raise ValueError(f"{where}: axis name {name!r} is not AGENT.OPTION or a parameter name")
        listed = list(given) if isinstance(given, list | tuple) else [given]
        if not listed:
            raise ValueError(f"{where}.{name} is an empty list: give at least one value")
        refuse_non_finite(listed, f"{where}.{name}")
        checked[name] = listed
    checked = {name: checked[name] for name in sorted(checked)}
    count = 1
    for listed in checked.values():
        count *= len(listed)
    if count > MAX_COMBINATIONS:
        raise ValueError(
            f"{where} make {count:,} combinations; at most {MAX_COMBINATIONS:,} are allowed"
        )
    return checked


def combinations(axes: Axes) -> list[Combination]:
    """Every combination of ``axes``, each with its key. Axes are taken in name order (a
    store may not keep a mapping's order: PostgreSQL's JSONB does not), the first varying
    slowest.

    A key joins the values shown as text with ``+`` (``strict+gpt-4o-mini`` for axes
    ``criteria`` and ``judge.model``); where the keys so made would be longer than
    :data:`MAX_KEY` or not all distinct (``1`` and ``"1"``), every key is ``v1``, ``v2``,
    ... in order instead. No axes: one combination, ``default``.
    """
    if not axes:
        return [Combination(DEFAULT_KEY)]
    names = sorted(axes)
    grid = [
        dict(zip(names, chosen, strict=True))
        for chosen in itertools.product(*(axes[name] for name in names))
    ]
    keys = ["+".join(_shown(v) for v in values.values()) for values in grid]
    readable = len(set(keys)) == len(keys) and all(0 < len(k) <= MAX_KEY for k in keys)
    if not readable:
        keys = [f"v{n}" for n in range(1, len(grid) + 1)]
    return [Combination(k, v) for k, v in zip(keys, grid, strict=True)]
