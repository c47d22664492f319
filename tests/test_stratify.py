"""Stratified samples (``batch.stratify``): exact group sizes, uniform within a group
(checked with a chi-square test over seeds), reproducible, and shown by status."""

from __future__ import annotations

import collections
import json
import random
from pathlib import Path

import pytest
from conftest import Env
from scipy.stats import chisquare

from buttermilk.batch.planner import plan_records
from buttermilk.batch.strata import quotas, stratified_sample
from buttermilk.domain.requests import StratifyMode
from buttermilk.errors import DataSourceError, InvalidOptionError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import SourceRow

SHARES = {"ok": 6, "toxic": 3, "spam": 1}  # of every ten rows


def labelled(path: Path, count: int) -> Path:
    cycle = [label for label, n in SHARES.items() for _ in range(n)]
    with path.open("w") as fh:
        for i in range(count):
            row = {"id": f"r{i}", "text": f"post {i}", "label": cycle[i % 10], "n": i}
            fh.write(json.dumps(row) + "\n")
    return path


def flow_over(path: Path) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"posts": {"path": str(path), "columns": {"ground_truth": "label"}}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )


def labels_of(plan_records_: list[object]) -> collections.Counter[str]:
    return collections.Counter(str(r.ground_truth) for r in plan_records_)  # type: ignore[attr-defined]


def test_quotas_add_up_proportionally_or_equally() -> None:
    rng = random.Random(0)
    assert quotas({"a": 6000, "b": 3000, "c": 1000}, 1000, "proportional", rng) == {
        "a": 600,
        "b": 300,
        "c": 100,
    }
    assert quotas({"a": 2, "b": 2, "c": 3}, 4, "proportional", rng) == {"a": 1, "b": 1, "c": 2}
    equal = quotas({"a": 6000, "b": 3000, "c": 10}, 1000, "equal", rng)
    assert equal == {"a": 495, "b": 495, "c": 10}
    assert sorted(quotas({"a": 50, "b": 50, "c": 50}, 100, "equal", rng).values()) == [33, 33, 34]
    assert quotas({"a": 5, "b": 1}, 100, "equal", rng) == {"a": 5, "b": 1}  # fewer than asked


@pytest.mark.parametrize("mode", ["proportional", "equal"])
def test_tied_groups_share_the_places_left_by_the_seed_not_by_source_order(
    mode: StratifyMode,
) -> None:
    # 30 groups of one row each, 12 places: every group must have the same chance (12/30),
    # the last one seen as much as the first; one seed always gives the same sample.
    sizes = {f"g{i:02}": 1 for i in range(30)}
    drawn = collections.Counter(
        key
        for seed in range(600)
        for key, n in quotas(sizes, 12, mode, random.Random(seed)).items()
        if n
    )
    assert sum(drawn.values()) == 600 * 12
    assert chisquare([drawn[key] for key in sizes]).pvalue > 0.001  # uniform over groups
    once, again = (quotas(sizes, 12, mode, random.Random(7)) for _ in range(2))
    assert once == again


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("proportional", {"ok": 600, "toxic": 300, "spam": 100}),
        ("equal", {"ok": 334, "toxic": 333, "spam": 333}),
    ],
)
def test_a_plan_has_exact_group_sizes_and_repeats_with_its_seed(
    tmp_path: Path, mode: str, expected: dict[str, int]
) -> None:
    flow = flow_over(labelled(tmp_path / "posts.jsonl", 10_000))
    plan = plan_records(
        flow,
        shuffle=True,
        max_records=1000,
        seed=5,
        stratify="ground_truth",
        stratify_mode=mode,
    )
    assert labels_of(plan.records) == expected
    assert plan.strata == expected and plan.rows_read == 10_000
    again = plan_records(
        flow,
        shuffle=True,
        max_records=1000,
        seed=5,
        stratify="label",
        stratify_mode=mode,
    )
    assert [r.record_id for r in again.records] == [r.record_id for r in plan.records]
    other = plan_records(
        flow,
        shuffle=True,
        max_records=1000,
        seed=6,
        stratify="label",
        stratify_mode=mode,
    )
    assert {r.record_id for r in other.records} != {r.record_id for r in plan.records}


def test_rows_of_a_group_are_drawn_uniformly() -> None:
    """Over 400 seeds, each of a group's 20 rows is drawn 5 in 20 times as often as any
    other (chi-square goodness of fit); a sample biased to early rows fails it."""
    rows = [
        SourceRow(f"r{i}", {"g": "big" if i < 20 else "small"}, None, None, None, None, f"x:{i}")
        for i in range(30)
    ]
    drawn: collections.Counter[str] = collections.Counter()
    seeds = 400
    for seed in range(seeds):
        chosen, _, strata = stratified_sample(
            rows, field="g", max_records=10, mode="equal", rng=random.Random(seed), seen=id
        )
        assert strata == {"big": 5, "small": 5}
        drawn.update(row.record_id for row in chosen if row.fields["g"] == "big")
    counts = [drawn[f"r{i}"] for i in range(20)]
    assert sum(counts) == seeds * 5
    assert chisquare(counts).pvalue > 0.001, counts


def test_stratify_needs_max_records_and_a_field_some_row_has(tmp_path: Path) -> None:
    flow = flow_over(labelled(tmp_path / "posts.jsonl", 20))
    with pytest.raises(InvalidOptionError, match=r"needs batch\.max_records"):
        plan_records(flow, shuffle=True, max_records=None, stratify="label")
    with pytest.raises(DataSourceError, match=r"batch\.stratify=lable: no record has this field"):
        plan_records(flow, shuffle=True, max_records=5, stratify="lable")
    with pytest.raises(DataSourceError, match="more than 1,000 groups"):
        big = flow_over(labelled(tmp_path / "many.jsonl", 1_100))
        plan_records(big, shuffle=True, max_records=5, stratify="n")


@pytest.mark.slow
@pytest.mark.backends("local")
def test_status_reports_records_per_group(env: Env) -> None:
    labelled(env.data / "records.jsonl", 100)
    env.extra["T_ECHO_DATA"] = str(env.data / "records.jsonl")
    created = env.create(
        "t_echo", "batch.max_records=12", "batch.stratify=label", "batch.stratify_mode=equal"
    )
    batch = env.store().get_batch(created)
    assert batch.request.strata == {"ok": 4, "toxic": 4, "spam": 4} and batch.total == 12
    shown = env.ok("batch.command=status", f"batch.batch_id={created}").stdout
    assert "label (equal): ok 4, toxic 4, spam 4" in shown


def test_groups_are_told_apart_by_type_and_value() -> None:
    """Text "1" and the number 1, text "null", JSON null and a missing field: five groups,
    each named distinctly (as status shows them)."""
    values: list[object] = ["1", 1, "null", None, True, "true", 1.0, "ok"]
    rows = [
        SourceRow(f"r{i}", {"g": value}, None, None, None, None, f"x:{i}")
        for i, value in enumerate(values)
    ]
    rows.append(SourceRow("gone", {}, None, None, None, None, "x:gone"))
    _, read, strata = stratified_sample(
        rows, field="g", max_records=100, mode="equal", rng=random.Random(1), seen=id
    )
    assert read == len(rows)
    assert strata == {
        '"1"': 1,
        "1": 1,
        '"null"': 1,
        "null": 1,
        "true": 1,
        '"true"': 1,
        "1.0": 1,
        "ok": 1,
        "(missing)": 1,
    }
