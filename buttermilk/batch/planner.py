"""Turn a flow's data sources into the ordered list of records a batch will run.

Expand every source, refuse duplicate ids, then shuffle and truncate. With
``max_records`` set and shuffling on, a reservoir sample keeps at most ``max_records``
rows in memory however large the sources are; without shuffling, reading stops as soon
as enough rows have been read.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from buttermilk.errors import DuplicateRecordIdError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import SourceRow, iter_flow_rows
from buttermilk.records import Record

MAX_NAMED_DUPLICATES = 5


@dataclass(frozen=True)
class Plan:
    """The records chosen for a batch, in the order their jobs will be published."""

    records: list[Record]
    rows_read: int
    seed: int


class _DuplicateTracker:
    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.duplicates: dict[str, str] = {}
        self.count = 0

    def add(self, row: SourceRow) -> None:
        if row.record_id in self.seen:
            self.count += 1
            if len(self.duplicates) < MAX_NAMED_DUPLICATES:
                self.duplicates.setdefault(row.record_id, row.location)
        else:
            self.seen.add(row.record_id)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        named = ", ".join(f"{rid!r} (again at {loc})" for rid, loc in self.duplicates.items())
        more = (
            f" and {self.count - len(self.duplicates)} more"
            if self.count > len(self.duplicates)
            else ""
        )
        raise DuplicateRecordIdError(
            f"duplicate record ids: {named}{more}; record ids must be unique across a "
            "flow's data sources (map another column to record_id, or set id_prefix per source)"
        )


def sample_rows(
    rows: Iterable[SourceRow], *, shuffle: bool, max_records: int | None, rng: random.Random
) -> tuple[list[SourceRow], int]:
    """Choose rows: all, the first ``max_records``, or a uniform sample of that many.

    Returns the chosen rows (shuffled when asked) and how many rows were read.
    """
    tracker = _DuplicateTracker()
    chosen: list[SourceRow] = []
    read = 0
    if max_records is not None and not shuffle:
        for row in rows:
            if read >= max_records:
                break
            read += 1
            tracker.add(row)
            chosen.append(row)
    elif max_records is not None:
        # Algorithm R: after i rows, each has had a max_records/i chance to be kept.
        for row in rows:
            tracker.add(row)
            if read < max_records:
                chosen.append(row)
            else:
                slot = rng.randrange(read + 1)
                if slot < max_records:
                    chosen[slot] = row
            read += 1
    else:
        for row in rows:
            read += 1
            tracker.add(row)
            chosen.append(row)
    tracker.raise_if_any()
    if shuffle:
        rng.shuffle(chosen)
    return chosen, read


def plan_records(
    flow: FlowConfig, *, shuffle: bool, max_records: int | None, seed: int | None = None
) -> Plan:
    """Plan a batch of ``flow``: read its sources and pick the records, in order."""
    used_seed = seed if seed is not None else secrets.randbits(32)
    rng = random.Random(used_seed)
    rows, read = sample_rows(
        iter_flow_rows(flow), shuffle=shuffle, max_records=max_records, rng=rng
    )
    return Plan(records=[row.to_record() for row in rows], rows_read=read, seed=used_seed)
