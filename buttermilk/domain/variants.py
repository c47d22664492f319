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


PARAMETERS = "parameters."


def axis_name(name: str) -> str:
    """The one name of an axis: ``parameters.criteria`` is the parameter axis ``criteria``
    (a nested parameter, ``parameters.a.b``, keeps its prefix: ``a.b`` would name an agent)."""
    rest = name.removeprefix(PARAMETERS)
    return rest if rest != name and "." not in rest else name


def _first_duplicate(values: list[Any]) -> Any | None:
    """The first value equal to one before it (``1`` and ``1.0`` are equal), if any."""
    for index, value in enumerate(values):
        for earlier in values[:index]:
            if earlier == value and isinstance(earlier, bool) == isinstance(value, bool):
                return value
    return None


def check_axes(axes: Any, where: str = "variants") -> Axes:
    """``axes`` as a dict of non-empty lists of distinct values, by :func:`axis_name`, or
    ValueError naming what is wrong.

    Each axis name is an option path (``agent.option``) or a parameter name. Raises
    ValueError when a name is empty or given twice (``criteria`` and
    ``parameters.criteria``), an axis is not a list, is empty or repeats a value, a value is
    not finite, or the product of the lengths passes :data:`MAX_COMBINATIONS`.
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
        if not isinstance(given, list | tuple):
            raise ValueError(
                f"{where}.{name} must be a list of values, e.g. [{_shown(given)[:40]}], "
                f"not {type(given).__name__}"
            )
        listed = list(given)
        if not listed:
            raise ValueError(f"{where}.{name} is an empty list: give at least one value")
        refuse_non_finite(listed, f"{where}.{name}")
        twice = _first_duplicate(listed)
        if twice is not None:
            raise ValueError(
                f"{where}.{name} lists the value {_shown(twice)[:40]} twice: each value once"
            )
        canonical = axis_name(name)
        if canonical in checked:
            raise ValueError(
                f"{where}: {name!r} and another axis both vary the parameter {canonical!r}: "
                "give it once"
            )
        checked[canonical] = listed
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
