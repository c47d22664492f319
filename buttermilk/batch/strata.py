"""Stratified samples: ``batch.stratify=FIELD`` with ``max_records``, per group of FIELD.

Modes (``batch.stratify_mode``):

- ``proportional``: each group gets its share of ``max_records`` (n_g / N), rounded by
  the largest-remainder (Hamilton) method so that the shares add up to ``max_records``
  (ties drawn by the batch's seeded random generator, so no group is favoured for where
  it comes in the source);
- ``equal``: every group the same number, ``q``, the largest such that the groups'
  ``min(n_g, q)`` add up to at most ``max_records`` (a smaller group gives all it has);
  what is left (fewer than one per group) goes one each to the largest groups, ties
  drawn as above.

Within a group the rows are a uniform sample (a reservoir per group, Algorithm R, drawn
from the batch's seeded random generator), so a seed repeats the sample. Memory: at most
``max_records`` rows per group and at most ``MAX_GROUPS`` groups; every id read is kept
as 8 bytes for the duplicate check, as without strata.

FIELD names a record field (``ground_truth``, ``content``, ``uri``, ``record_id``), a
source field, or ``metadata.NAME`` / ``NAME.KEY`` into an object. Groups are told apart
by type and value (see :func:`group_key`): text ``"1"`` is not the number 1, and a row
without the field is in the group ``(missing)``, not ``null``; a FIELD that no row has
is refused.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

from buttermilk import values
from buttermilk.domain.requests import StratifyMode
from buttermilk.errors import DataSourceError
from buttermilk.flows.sources import SourceRow
from buttermilk.flows.where import MISSING, field_at

MAX_GROUPS = 1_000


def group_of(row: SourceRow, field: str) -> Any:
    """The value of ``field`` in ``row`` (see the module's doc), or MISSING."""
    if field == "record_id":
        return row.record_id
    mapped = {"content": row.content_field, "uri": row.uri_field, "ground_truth": row.truth_field}
    if field in mapped:
        source_field = mapped[field]
        return MISSING if source_field is None else row.fields.get(source_field, MISSING)
    found = field_at(row.fields, field)
    if found is MISSING and field.startswith("metadata."):
        found = field_at(row.fields, field.removeprefix("metadata."))
    return found


MISSING_GROUP = "(missing)"


def group_key(value: Any) -> str:
    """A group's name, one per type and value: a value other than text as its JSON
    (``1``, ``1.5``, ``true``, ``null``); text as it is, unless it reads as JSON or as
    ``(missing)`` (then as its JSON: ``"1"``, ``"null"``); a row without the field in
    ``(missing)``. So text ``"1"``, the number 1, JSON null and a missing field are
    groups of their own."""
    if value is MISSING:
        return MISSING_GROUP
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # any size (JSON text would wrap a long one)
    if not isinstance(value, str):
        return values.dumps_text(value)
    if value == MISSING_GROUP:
        return values.dumps_text(value)
    try:
        json.loads(value)
    except ValueError:
        return value
    return values.dumps_text(value)


def quotas(
    sizes: dict[str, int], max_records: int, mode: StratifyMode, rng: random.Random
) -> dict[str, int]:
    """How many rows each group gives (``sizes``: rows per group, in the order first seen;
    ``rng`` draws the ties, see the module's doc)."""
    total = sum(sizes.values())
    if total <= max_records:
        return dict(sizes)
    draw = {key: rng.random() for key in sizes}  # one per group, in a fixed order
    if mode == "proportional":
        exact = {key: size * max_records / total for key, size in sizes.items()}
        chosen = {key: int(share) for key, share in exact.items()}
        left = max_records - sum(chosen.values())
        order = sorted(sizes, key=lambda key: (chosen[key] - exact[key], draw[key]))
        for key in order[:left]:
            chosen[key] += 1
        return chosen
    level = 0
    while sum(min(size, level + 1) for size in sizes.values()) <= max_records:
        level += 1
    chosen = {key: min(size, level) for key, size in sizes.items()}
    left = max_records - sum(chosen.values())
    for key in sorted(sizes, key=lambda key: (-sizes[key], draw[key])):
        if left and chosen[key] < sizes[key]:
            chosen[key] += 1
            left -= 1
    return chosen


def stratified_sample(
    rows: Iterable[SourceRow],
    *,
    field: str,
    max_records: int,
    mode: StratifyMode,
    rng: random.Random,
    seen: Any,
) -> tuple[list[SourceRow], int, dict[str, int]]:
    """The chosen rows (in source order), how many rows were read, and the rows chosen
    per group. ``seen(record_id)`` is called for every row read (duplicate check).

    Raises DataSourceError for a field no row has, or more than MAX_GROUPS groups.
    """
    reservoirs: dict[str, list[tuple[int, SourceRow]]] = {}
    sizes: dict[str, int] = {}
    found = False
    read = 0
    for row in rows:
        seen(row.record_id)
        value = group_of(row, field)
        found = found or value is not MISSING
        key = group_key(value)
        size = sizes.get(key, 0)
        if size == 0:
            if len(sizes) == MAX_GROUPS:
                raise DataSourceError(
                    f"batch.stratify={field}: more than {MAX_GROUPS:,} groups (e.g. "
                    f"{key[:40]!r}); stratify by a field of fewer values"
                )
            reservoirs[key] = []
        kept = reservoirs[key]
        if size < max_records:
            kept.append((read, row))
        else:
            slot = rng.randrange(size + 1)
            if slot < max_records:
                kept[slot] = (read, row)
        sizes[key] = size + 1
        read += 1
    if read and not found:
        raise DataSourceError(
            f"batch.stratify={field}: no record has this field (a record field such as "
            "ground_truth, a source field, or NAME.KEY into an object)"
        )
    wanted = quotas(sizes, max_records, mode, rng)
    chosen: list[tuple[int, SourceRow]] = []
    for key, kept in reservoirs.items():
        # A reservoir is a uniform sample of its group; n drawn from it are one too (its
        # first n slots are not: an early row keeps its slot unless replaced).
        chosen.extend(rng.sample(kept, wanted[key]) if len(kept) > wanted[key] else kept)
    chosen.sort(key=lambda pair: pair[0])
    return [row for _, row in chosen], read, {key: wanted[key] for key in sizes}
