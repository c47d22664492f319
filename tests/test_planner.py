"""Planning a batch: shuffle, truncation, reservoir sampling and duplicate ids.

Every test plans over real files in ``tmp_path``; ``sample_rows`` is also driven directly
with in-memory rows where thousands of seeded runs are needed.
"""

from __future__ import annotations

import json
import random
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import write_records

from buttermilk.batch import planner
from buttermilk.batch.planner import IdHashes, plan_records, raise_for_duplicates, sample_rows
from buttermilk.errors import DataSourceError, DuplicateRecordIdError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import SourceRow


def flow_over(**sources: dict[str, Any] | str | Path) -> FlowConfig:
    """A flow with one no-op agent over the given sources (a path or a source dict each)."""
    data = {
        name: {"path": str(src)} if isinstance(src, str | Path) else src
        for name, src in sources.items()
    }
    return FlowConfig.model_validate(
        {
            "name": "t",
            "data": data,
            "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
        }
    )


def ids_of(plan: Any) -> list[str]:
    return [r.record_id for r in plan.records]


def rows(n: int) -> list[SourceRow]:
    return [
        SourceRow(
            record_id=f"r{i:03d}",
            fields={"id": f"r{i:03d}"},
            content_field=None,
            uri_field=None,
            truth_field=None,
            id_field="id",
            location=f"mem:{i}",
        )
        for i in range(n)
    ]


# -- shuffle ---------------------------------------------------------------------------


def test_shuffle_plans_every_record_once_in_a_new_order(tmp_path: Path) -> None:
    source_ids = write_records(tmp_path / "r.jsonl", 300)
    plan = plan_records(flow_over(a=tmp_path / "r.jsonl"), shuffle=True, max_records=None, seed=7)

    planned = ids_of(plan)
    assert sorted(planned) == sorted(source_ids)
    assert len(set(planned)) == len(planned)
    assert planned != source_ids
    assert plan.rows_read == 300
    assert plan.seed == 7


def test_shuffle_with_the_same_seed_repeats_the_order_and_another_seed_changes_it(
    tmp_path: Path,
) -> None:
    write_records(tmp_path / "r.jsonl", 200)
    flow = flow_over(a=tmp_path / "r.jsonl")

    first = ids_of(plan_records(flow, shuffle=True, max_records=None, seed=11))
    again = ids_of(plan_records(flow, shuffle=True, max_records=None, seed=11))
    other = ids_of(plan_records(flow, shuffle=True, max_records=None, seed=12))

    assert first == again
    assert other != first
    assert sorted(other) == sorted(first)


def test_a_plan_without_a_seed_records_the_seed_it_drew_so_it_can_be_repeated(
    tmp_path: Path,
) -> None:
    write_records(tmp_path / "r.jsonl", 100)
    flow = flow_over(a=tmp_path / "r.jsonl")

    drawn = plan_records(flow, shuffle=True, max_records=None)
    repeated = plan_records(flow, shuffle=True, max_records=None, seed=drawn.seed)

    assert ids_of(repeated) == ids_of(drawn)


def test_without_shuffle_every_record_is_planned_in_source_order(tmp_path: Path) -> None:
    source_ids = write_records(tmp_path / "r.jsonl", 50)
    plan = plan_records(flow_over(a=tmp_path / "r.jsonl"), shuffle=False, max_records=None)
    assert ids_of(plan) == source_ids


# -- truncation without shuffle --------------------------------------------------------


def test_truncation_without_shuffle_takes_the_first_records_in_order(tmp_path: Path) -> None:
    source_ids = write_records(tmp_path / "r.jsonl", 100)
    plan = plan_records(flow_over(a=tmp_path / "r.jsonl"), shuffle=False, max_records=10)

    assert ids_of(plan) == source_ids[:10]
    assert plan.rows_read == 10


def test_truncation_without_shuffle_stops_reading_long_before_a_bad_line_far_below(
    tmp_path: Path,
) -> None:
    path = tmp_path / "r.jsonl"
    source_ids = write_records(path, 20)
    with path.open("a") as fh:
        fh.write("{this is not json\n" * 3)

    plan = plan_records(flow_over(a=path), shuffle=False, max_records=5)

    assert ids_of(plan) == source_ids[:5]
    assert plan.rows_read == 5


def test_truncation_without_shuffle_never_reads_the_row_after_the_last_one_it_needs(
    tmp_path: Path,
) -> None:
    # Five good lines, then a broken one: a planner that stops "as soon as enough rows
    # have been read" never parses line 6.
    path = tmp_path / "r.jsonl"
    source_ids = write_records(path, 5)
    with path.open("a") as fh:
        fh.write("{this is not json\n")

    plan = plan_records(flow_over(a=path), shuffle=False, max_records=5)

    assert ids_of(plan) == source_ids
    assert plan.rows_read == 5


def test_the_same_bad_line_fails_planning_when_every_record_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, 5)
    with path.open("a") as fh:
        fh.write("{this is not json\n")

    with pytest.raises(DataSourceError, match=r"r\.jsonl:6"):
        plan_records(flow_over(a=path), shuffle=False, max_records=None)


def test_max_records_larger_than_the_source_plans_every_record(tmp_path: Path) -> None:
    source_ids = write_records(tmp_path / "r.jsonl", 8)
    flow = flow_over(a=tmp_path / "r.jsonl")

    unshuffled = plan_records(flow, shuffle=False, max_records=1000)
    shuffled = plan_records(flow, shuffle=True, max_records=1000, seed=3)

    assert ids_of(unshuffled) == source_ids
    assert sorted(ids_of(shuffled)) == source_ids


# -- reservoir sampling (shuffle + max_records) ----------------------------------------


def test_reservoir_sample_keeps_exactly_n_distinct_records_from_the_whole_file(
    tmp_path: Path,
) -> None:
    source_ids = write_records(tmp_path / "r.jsonl", 1000)
    flow = flow_over(a=tmp_path / "r.jsonl")

    plan = plan_records(flow, shuffle=True, max_records=50, seed=5)
    picked = ids_of(plan)

    assert len(picked) == 50
    assert len(set(picked)) == 50
    assert set(picked) <= set(source_ids)
    assert plan.rows_read == 1000  # the whole file was read
    assert any(int(rid[1:]) >= 500 for rid in picked), "nothing from the second half"
    assert picked != sorted(picked), "a sample should come out shuffled"
    # Same seed, same sample in the same order.
    assert ids_of(plan_records(flow, shuffle=True, max_records=50, seed=5)) == picked


def test_reservoir_sample_picks_every_record_about_equally_often() -> None:
    # 2,000 seeded runs choosing 5 of 20 rows: each row is expected 500 times, with a
    # standard deviation of about 19.4. The seeds are fixed, so the outcome is
    # deterministic; the bounds would hold for any seeds with overwhelming probability.
    population, keep, runs = 20, 5, 2000
    counts: Counter[str] = Counter()
    first_slot: Counter[str] = Counter()
    for seed in range(runs):
        chosen, read = sample_rows(
            rows(population), shuffle=True, max_records=keep, rng=random.Random(seed)
        )
        ids = [row.record_id for row in chosen]
        assert read == population
        assert len(set(ids)) == keep
        counts.update(ids)
        first_slot[ids[0]] += 1

    expected = runs * keep / population
    assert set(counts) == {f"r{i:03d}" for i in range(population)}
    for rid, n in counts.items():
        assert abs(n - expected) < 6 * 19.4, f"{rid} picked {n} times, expected ~{expected}"
    chi_square = sum((n - expected) ** 2 / expected for n in counts.values())
    assert chi_square < 60, f"chi-square {chi_square:.1f} over {population} rows"
    # The order of the sample is shuffled too: any row can come first.
    expected_first = runs / population
    for rid in counts:
        assert abs(first_slot[rid] - expected_first) < 50, (rid, first_slot[rid])


class _TrackedFields(dict[str, Any]):
    """A row's fields that can be watched with a weak reference."""


def test_reservoir_sample_holds_only_n_rows_in_memory_while_reading() -> None:
    live = 0
    peak = 0
    keep: list[weakref.ref[_TrackedFields]] = []

    def freed(_ref: object) -> None:
        nonlocal live
        live -= 1

    def stream(n: int) -> Iterator[SourceRow]:
        nonlocal live, peak
        for i in range(n):
            fields = _TrackedFields(id=f"r{i:05d}", text="x" * 100)
            keep.append(weakref.ref(fields, freed))
            live += 1
            peak = max(peak, live)
            yield SourceRow(f"r{i:05d}", fields, "text", None, None, "id", f"mem:{i}")
            del fields

    chosen, read = sample_rows(stream(3000), shuffle=True, max_records=10, rng=random.Random(1))

    assert read == 3000
    assert len(chosen) == 10
    # The reservoir (10) plus the row being looked at; dropped rows are freed at once.
    assert peak <= 12, f"{peak} rows were alive at once"


# -- duplicates ------------------------------------------------------------------------


def test_duplicate_ids_in_one_source_raise_an_error_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [{"id": "a"}, {"id": "b"}, {"id": "a"}, {"id": "c"}, {"id": "b"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))

    with pytest.raises(DuplicateRecordIdError) as caught:
        plan_records(flow_over(a=path), shuffle=False, max_records=None)

    message = str(caught.value)
    assert "'a'" in message and "'b'" in message
    assert "'c'" not in message
    assert f"{path}:3" in message  # where the repeat is


@pytest.mark.parametrize(("shuffle", "max_records"), [(True, None), (True, 2), (False, None)])
def test_duplicate_ids_are_found_whatever_the_sampling(
    tmp_path: Path, shuffle: bool, max_records: int | None
) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, 30)
    with path.open("a") as fh:
        fh.write(json.dumps({"id": "r00003", "text": "again"}) + "\n")

    with pytest.raises(DuplicateRecordIdError, match="r00003"):
        plan_records(flow_over(a=path), shuffle=shuffle, max_records=max_records, seed=1)


def test_many_duplicates_name_a_few_and_count_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_records(path, 20)
    write_records(tmp_path / "again.jsonl", 20)
    with path.open("a") as fh:
        fh.write((tmp_path / "again.jsonl").read_text())

    with pytest.raises(DuplicateRecordIdError) as caught:
        plan_records(flow_over(a=path), shuffle=False, max_records=None)

    message = str(caught.value)
    assert "and 15 more" in message
    assert "\n" not in message


def test_the_same_ids_in_two_sources_are_duplicates(tmp_path: Path) -> None:
    write_records(tmp_path / "one.jsonl", 5)
    write_records(tmp_path / "two.jsonl", 5)

    with pytest.raises(DuplicateRecordIdError, match="r00000"):
        plan_records(
            flow_over(one=tmp_path / "one.jsonl", two=tmp_path / "two.jsonl"),
            shuffle=False,
            max_records=None,
        )


# -- several sources -------------------------------------------------------------------


def test_several_sources_are_planned_together_in_config_order(tmp_path: Path) -> None:
    first = write_records(tmp_path / "one.jsonl", 4, prefix="a")
    second = write_records(tmp_path / "two.jsonl", 3, prefix="b")
    flow = flow_over(one=tmp_path / "one.jsonl", two=tmp_path / "two.jsonl")

    in_order = plan_records(flow, shuffle=False, max_records=None)
    shuffled = plan_records(flow, shuffle=True, max_records=None, seed=2)
    truncated = plan_records(flow, shuffle=False, max_records=5)

    assert ids_of(in_order) == first + second
    assert sorted(ids_of(shuffled)) == sorted(first + second)
    assert ids_of(truncated) == [*first, second[0]]


def test_id_prefixes_keep_two_sources_with_the_same_ids_apart(tmp_path: Path) -> None:
    write_records(tmp_path / "one.jsonl", 3)
    write_records(tmp_path / "two.jsonl", 3)
    flow = flow_over(
        one={"path": str(tmp_path / "one.jsonl"), "id_prefix": "one:"},
        two={"path": str(tmp_path / "two.jsonl"), "id_prefix": "two:"},
    )

    plan = plan_records(flow, shuffle=False, max_records=None)

    assert ids_of(plan) == [
        "one:r00000",
        "one:r00001",
        "one:r00002",
        "two:r00000",
        "two:r00001",
        "two:r00002",
    ]


def test_planned_records_carry_content_and_unmapped_fields(tmp_path: Path) -> None:
    write_records(tmp_path / "r.jsonl", 2)
    plan = plan_records(flow_over(a=tmp_path / "r.jsonl"), shuffle=False, max_records=None)

    record = plan.records[1]
    assert record.record_id == "r00001"
    assert record.content == "record r00001: love it, great value"
    assert record.metadata == {"n": 1}


def test_a_hash_shared_by_two_different_ids_is_not_a_duplicate() -> None:
    def stream() -> Iterator[SourceRow]:
        for rid in ("a", "b", "c"):
            yield SourceRow(rid, {"id": rid}, None, None, None, "id", f"mem:{rid}")

    # Pretend every id's hash was seen twice (a collision): the second pass clears them.
    suspects = {hash(rid) for rid in ("a", "b", "c")}
    raise_for_duplicates(stream(), suspects)

    with pytest.raises(DuplicateRecordIdError, match=r"mem:a and mem:a2 share the record id 'a'"):
        raise_for_duplicates(
            iter([*stream(), SourceRow("a", {"id": "a"}, None, None, None, "id", "mem:a2")]),
            {hash("a")},
        )


@pytest.mark.parametrize("small", [True, False])
def test_id_hashes_find_the_repeated_ids_by_a_set_or_by_a_sort_alike(
    small: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to SMALL_ID_COUNT ids a set finds the repeats (no numpy import); beyond, a sort."""
    ids = [f"r{i}" for i in range(500)] + ["r7", "r42", "r7"]
    monkeypatch.setattr(planner, "SMALL_ID_COUNT", 10_000 if small else 10)
    hashes = IdHashes()
    for record_id in ids:
        hashes.add(record_id)

    assert hashes.repeated() == {hash("r7"), hash("r42")}
