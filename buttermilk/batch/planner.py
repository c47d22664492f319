"""Turn a flow's data sources into the ordered list of records a batch will run.

Expand every source, refuse duplicate ids, then shuffle and truncate. With
``max_records`` set and shuffling on, a reservoir sample keeps at most ``max_records``
rows in memory however large the sources are (plus 8 bytes per id read, for the
duplicate check); without shuffling, reading stops as soon as enough rows have been read.
"""

from __future__ import annotations

import itertools
import random
import secrets
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from buttermilk.batch.strata import stratified_sample
from buttermilk.domain.requests import StratifyMode
from buttermilk.errors import DuplicateRecordIdError, InvalidOptionError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import SourceRow, iter_flow_rows
from buttermilk.flows.where import closed_after
from buttermilk.records import Record

if TYPE_CHECKING:
    from buttermilk.store.store import Store

MAX_NAMED_DUPLICATES = 5
SMALL_ID_COUNT = 100_000  # ids checked for duplicates with a set (more: a numpy sort)


def _ignore(_record_id: str) -> None:
    return None


@dataclass(frozen=True)
class Plan:
    """The records chosen for a batch, in the order their jobs will be published."""

    records: list[Record]
    rows_read: int
    seed: int
    strata: dict[str, int] | None = None
    """Records planned per group, when stratified (see :mod:`buttermilk.batch.strata`)."""


class IdHashes:
    """Every record id seen, as an 8-byte hash: 8 MB per million ids, however long the ids.

    Hashes that occur twice mark suspects; a second pass over the rows tells true
    duplicates from the (rare) collisions of two different ids.
    """

    def __init__(self) -> None:
        self._hashes = array("q")

    def add(self, record_id: str) -> None:
        self._hashes.append(hash(record_id))  # stable within this process, all we need

    def repeated(self) -> set[int]:
        """The hashes seen more than once: by a set up to SMALL_ID_COUNT ids (numpy's import
        alone takes ~50 ms), by a sort of the packed hashes beyond (a set of a million
        ints would take ~60 MB of the planning's memory)."""
        if len(self._hashes) < 2:
            return set()
        if len(self._hashes) <= SMALL_ID_COUNT:
            seen: set[int] = set()
            twice: set[int] = set()
            for value in self._hashes:
                (twice if value in seen else seen).add(value)
            return twice
        import numpy as np

        values = np.frombuffer(self._hashes, dtype=np.int64).copy()
        values.sort()
        return set(values[1:][values[1:] == values[:-1]].tolist())


def raise_for_duplicates(rows: Iterable[SourceRow], suspects: set[int]) -> None:
    """Read the rows again; raise if any suspect hash belongs to one id seen twice."""
    if not suspects:
        return
    places: dict[str, list[SourceRow]] = {}
    for row in rows:
        if hash(row.record_id) in suspects:
            places.setdefault(row.record_id, []).append(row)
    repeated = {rid: found for rid, found in places.items() if len(found) > 1}
    if not repeated:
        return  # only hash collisions between different ids
    extra = sum(len(found) - 1 for found in repeated.values())
    shown = list(repeated.items())[:MAX_NAMED_DUPLICATES]
    named = "; ".join(_shared(rid, found) for rid, found in shown)
    more = f" and {extra - len(shown)} more" if extra > len(shown) else ""
    raise DuplicateRecordIdError(
        f"duplicate record ids: {named}{more}; record ids must be unique across a "
        "flow's data sources (map another column to record_id, or set id_prefix per source)"
    )


def _shared(record_id: str, rows: list[SourceRow]) -> str:
    """``f.csv:2 and f.csv:5 share the record id 'x'``, saying where a made id came from."""
    first, second = rows[0], rows[1]
    if first.id_field is None and second.id_field is None:
        how = " (a hash of their content: they have no id field and the same content)"
    elif first.id_field is None or second.id_field is None:
        how = " (one of them a hash of its content)"
    else:
        how = ""
    return f"{first.location} and {second.location} share the record id {record_id!r}{how}"


def sample_rows(
    rows: Iterable[SourceRow],
    *,
    shuffle: bool,
    max_records: int | None,
    rng: random.Random,
    ids: IdHashes | None = None,
) -> tuple[list[SourceRow], int]:
    """Choose rows: all, the first ``max_records``, or a uniform sample of that many.

    Returns the chosen rows (shuffled when asked) and how many rows were read. Every id
    read goes into ``ids`` when given, for the duplicate check.
    """
    seen = ids.add if ids is not None else _ignore
    chosen: list[SourceRow] = []
    read = 0
    if max_records is not None and not shuffle:
        for row in itertools.islice(rows, max_records):  # never reads the row after
            read += 1
            seen(row.record_id)
            chosen.append(row)
    elif max_records is not None:
        # Algorithm R: after i rows, each has had a max_records/i chance to be kept.
        for row in rows:
            seen(row.record_id)
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
            seen(row.record_id)
            chosen.append(row)
    if shuffle:
        rng.shuffle(chosen)
    return chosen, read


def plan_records(
    flow: FlowConfig,
    *,
    shuffle: bool,
    max_records: int | None,
    seed: int | None = None,
    store: Store | None = None,
    stratify: str | None = None,
    stratify_mode: StratifyMode = "proportional",
) -> Plan:
    """Plan a batch of ``flow``: read its sources and pick the records, in order.

    ``store``: where ``type: batch`` sources read earlier batches. ``stratify``: a field
    to sample ``max_records`` per group of (InvalidOptionError without max_records)."""
    if stratify is not None and max_records is None:
        raise InvalidOptionError(
            "batch.stratify",
            stratify,
            "a stratified sample needs batch.max_records (how many records in all)",
        )
    used_seed = seed if seed is not None else secrets.randbits(32)
    rng = random.Random(used_seed)
    ids = IdHashes()
    # Closed when done, so a source that was not read to its end (max_records without
    # shuffling) lets go of its file, cursor or connection now.
    with closed_after(iter_flow_rows(flow, store)) as source_rows:
        strata = None
        if stratify is not None and max_records is not None:
            rows, read, strata = stratified_sample(
                source_rows,
                field=stratify,
                max_records=max_records,
                mode=stratify_mode,
                rng=rng,
                seen=ids.add,
            )
            if shuffle:
                rng.shuffle(rows)
        else:
            rows, read = sample_rows(
                source_rows, shuffle=shuffle, max_records=max_records, rng=rng, ids=ids
            )
    suspects = ids.repeated()
    if suspects:
        with closed_after(iter_flow_rows(flow, store)) as again:
            raise_for_duplicates(itertools.islice(again, read), suspects)
    return Plan(
        records=[row.to_record() for row in rows], rows_read=read, seed=used_seed, strata=strata
    )
