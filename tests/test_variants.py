"""Variants x repeats: the grid's combinations and keys, axes checked against the flow,
each combination's values reaching its agents, and exactly one job per (record,
combination, repeat) in interleaved order, on both stores."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import Env, write_records

from buttermilk.batch.export import export_jobs
from buttermilk.batch.grid import grid_for
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.domain.variants import MAX_COMBINATIONS, check_axes, combinations
from buttermilk.errors import BatchStateError, VariantError
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.variants import flow_for
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store


def flow(data: Path, **extra: Any) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "f",
            "data": {"records": {"type": "file", "path": str(data / "records.jsonl")}},
            "agents": [{"name": "judge", "_target_": "buttermilk.agents.testing.Tag"}],
            "parameters": {"criteria": "flow's own", "other": {"kept": 1}},
            **extra,
        }
    )


# -- combinations and keys ----------------------------------------------------------


def test_combinations_take_axes_in_name_order_the_last_fastest_with_readable_keys() -> None:
    got = combinations({"judge.model": ["a", "b"], "criteria": ["ordinary", "strict"]})
    assert [c.key for c in got] == ["ordinary+a", "ordinary+b", "strict+a", "strict+b"]
    assert got[1].values == {"criteria": "ordinary", "judge.model": "b"}
    assert [c.key for c in combinations({})] == ["default"]
    assert [c.key for c in combinations({"t": [0.05, 0.3]})] == ["0.05", "0.3"]


def test_keys_that_would_collide_or_run_long_are_numbered() -> None:
    assert [c.key for c in combinations({"x": [1, "1"]})] == ["v1", "v2"]
    assert [c.key for c in combinations({"x": ["y" * 80, "z"]})] == ["v1", "v2"]


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"judge.model": []}, "variants.judge.model is an empty list"),
        (["judge.model"], "must map an axis name"),
        ({"": [1]}, "must be a non-empty name"),
        ({"judge..model": [1]}, "is not AGENT.OPTION"),
        ({"x": [1.0, math.nan]}, "variants.x[1] is not a finite number"),
        ({f"a{n}": [1, 2] for n in range(10)}, f"at most {MAX_COMBINATIONS:,}"),
    ],
)
def test_bad_axes_are_refused_naming_them(axes: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        check_axes(axes)


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"criteria": "strict"}, "variants.criteria must be a list of values, e.g. [strict]"),
        ({"t": [0.1, 0.1]}, "variants.t lists the value 0.1 twice"),
        ({"t": [1, 1.0]}, "variants.t lists the value 1.0 twice"),
        ({"c": ["a", "b", "a"]}, "variants.c lists the value a twice"),
        (
            {"criteria": ["x"], "parameters.criteria": ["y"]},
            "both vary the parameter 'criteria'",
        ),
    ],
)
def test_axes_that_would_run_a_value_twice_or_hide_one_are_refused(
    axes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_axes(axes)


def test_true_and_1_are_different_values_of_an_axis() -> None:
    assert check_axes({"x": [True, 1]}) == {"x": [True, 1]}


# -- axes against the flow ------------------------------------------------------------


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        ({"judges.label": ["a"]}, r"has no agent 'judges' \(its agents: judge\)"),
        ({"judge.lable": ["a"]}, r"has no option 'lable' \(its options: label, fail\)"),
        ({"judge._target_": ["x"]}, "an agent's _target_ cannot vary"),
        ({"judge.label": [5]}, re.escape("variants.judge.label: 5 (int) is not a str")),
        ({"judge.fail": ["yes"]}, re.escape("variants.judge.fail: 'yes' (str) is not a bool")),
        (
            {"parameters.other": [1], "parameters.other.new": [2]},
            "the axis 'parameters.other.new' sets part of what the axis 'other' sets",
        ),
    ],
)
def test_axes_naming_what_the_flow_lacks_are_refused(
    tmp_path: Path, axes: dict[str, Any], message: str
) -> None:
    with pytest.raises(VariantError, match=message):
        grid_for(flow(tmp_path), BatchRequest(flow="f", variants=axes))


def test_the_requests_axes_replace_the_flows_one_by_one_and_its_repeats_too(
    tmp_path: Path,
) -> None:
    f = flow(tmp_path, variants={"judge.label": ["a", "b"], "criteria": ["x"]}, repeats=2)
    assert grid_for(f, BatchRequest(flow="f")).keys == ["x+a", "x+b"]
    grid = grid_for(f, BatchRequest(flow="f", variants={"criteria": ["y", "z"]}, repeats=3))
    assert grid.keys == ["y+a", "y+b", "z+a", "z+b"] and grid.repeats == 3
    # parameters.criteria is the axis criteria: it replaces the flow's, never runs beside it
    named = BatchRequest(flow="f", variants={"parameters.criteria": ["w"]})
    assert grid_for(f, named).keys == ["w+a", "w+b"]
    assert grid_for(f, BatchRequest(flow="f")).repeats == 2


def test_flow_for_sets_agent_options_and_parameters_without_touching_the_flow(
    tmp_path: Path,
) -> None:
    f = flow(tmp_path)
    grid = grid_for(
        f, BatchRequest(flow="f", variants={"judge.label": ["A"], "parameters.other.new": [2]})
    )
    varied = flow_for(f, grid.combinations[0])
    assert varied.agents[0].kwargs == {"label": "A"}
    assert varied.parameters == {"criteria": "flow's own", "other": {"kept": 1, "new": 2}}
    assert f.agents[0].kwargs == {} and f.parameters["other"] == {"kept": 1}


# -- batches of a grid, on both stores --------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    url = (
        str(request.getfixturevalue("postgres_url"))
        if request.param == "postgres"
        else f"sqlite:///{tmp_path}/batches.db"
    )
    s = Store(url)
    yield s
    s.close()


def run_grid(store: Store, tmp_path: Path, request: BatchRequest) -> str:
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    service = BatchService(store, queue, StaticFlowCatalog({"f": flow(tmp_path)}))
    created = anyio.run(service.create, request)
    stats = anyio.run(Worker(store, queue, WorkerOptions(idle_timeout=0.5)).run)
    assert stats.completed == created.batch.total
    return created.batch.id


def test_every_record_runs_once_per_combination_and_repeat_in_interleaved_order(
    store: Store, tmp_path: Path
) -> None:
    ids = write_records(tmp_path / "records.jsonl", 30)
    axes = {"judge.label": ["A", "B", "C"], "criteria": ["ordinary", "strict"]}
    request = BatchRequest(flow="f", variants=axes, repeats=2, max_records=7, seed=3)
    batch_id = run_grid(store, tmp_path, request)

    batch = store.get_batch(batch_id)
    assert batch.total == 7 * 6 * 2 and batch.repeats == 2
    jobs = list(store.iter_jobs(batch_id))
    assert len(jobs) == 84 and {j.status for j in jobs} == {JobStatus.COMPLETED}
    keys = Counter((j.record_id, j.variant, j.repeat) for j in jobs)
    assert set(keys.values()) == {1}
    # Paired: the same 7 records for every combination and repeat.
    chosen = {j.record_id for j in jobs}
    assert len(chosen) == 7 and chosen <= set(ids)
    for variant in ("ordinary+A", "strict+C"):
        for repeat in (0, 1):
            ran = {j.record_id for j in jobs if (j.variant, j.repeat) == (variant, repeat)}
            assert ran == chosen
    # Interleaved: a record's 12 jobs are next to each other in planned order.
    records_in_order = [j.record_id for j in jobs]
    assert all(len(set(records_in_order[i : i + 12])) == 1 for i in range(0, 84, 12))
    assert [(j.variant, j.repeat) for j in jobs[:4]] == [
        ("ordinary+A", 0),
        ("ordinary+B", 0),
        ("ordinary+C", 0),
        ("strict+A", 0),
    ]
    # Each combination's values reached its agent; one agent per combination per worker.
    for job in jobs:
        out = job.result["outputs"]["judge"]  # type: ignore[index]
        criteria, label = job.variant.split("+")
        assert (out["label"], out["criteria"]) == (label, criteria)
        assert (out["variant"], out["repeat"]) == (job.variant, job.repeat)
    agents = {(j.variant, j.result["outputs"]["judge"]["agent_id"]) for j in jobs}  # type: ignore[index]
    assert len(agents) == 6
    counts = store.variant_counts(batch_id)
    assert counts == {key: {JobStatus.COMPLETED: 14} for key in counts} and len(counts) == 6


def test_retry_of_one_combination_requeues_only_its_jobs(store: Store, tmp_path: Path) -> None:
    write_records(tmp_path / "records.jsonl", 4)
    queue = LocalQueue(tmp_path / "queue.db", lease_seconds=30)
    service = BatchService(store, queue, StaticFlowCatalog({"f": flow(tmp_path)}))
    request = BatchRequest(flow="f", variants={"judge.fail": [False, True]}, max_attempts=1)
    batch_id = anyio.run(service.create, request).batch.id
    anyio.run(Worker(store, queue, WorkerOptions(idle_timeout=0.5)).run)
    assert store.variant_counts(batch_id) == {
        "false": {JobStatus.COMPLETED: 4},
        "true": {JobStatus.FAILED: 4},
    }

    with pytest.raises(VariantError, match=r"no such combination \(its combinations: false, true"):
        anyio.run(lambda: service.retry(batch_id, variant="maybe"))
    with pytest.raises(BatchStateError, match=r"combination 'false' of batch .* nothing to retry"):
        anyio.run(lambda: service.retry(batch_id, variant="false"))
    _, count = anyio.run(lambda: service.retry(batch_id, variant="true"))

    assert count == 4 and queue.depth() == 4
    assert store.variant_counts(batch_id) == {
        "false": {JobStatus.COMPLETED: 4},
        "true": {JobStatus.PENDING: 4},
    }


def test_an_export_has_a_row_per_job_with_its_variant_repeat_and_axis_values(
    tmp_path: Path,
) -> None:
    write_records(tmp_path / "records.jsonl", 3)
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    axes = {"judge.label": ["A", "B"], "criteria": ["strict"]}
    batch_id = run_grid(store, tmp_path, BatchRequest(flow="f", variants=axes, repeats=2))

    out = tmp_path / "out.csv"
    assert export_jobs(store, batch_id, out) == 12
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {
        (r["variant"], r["repeat"], r["axes.judge.label"], r["axes.criteria"]) for r in rows
    } == {
        (f"strict+{label}", str(repeat), label, "strict")
        for label in ("A", "B")
        for repeat in (0, 1)
    }
    assert (
        Counter((r["record_id"], r["variant"], r["repeat"]) for r in rows).most_common(1)[0][1] == 1
    )


def test_a_grid_runs_end_to_end_through_the_cli_on_each_transport(env: Env) -> None:
    ids = write_records(env.data / "records.jsonl", 5)
    batch_id = env.create("t_work", "batch.variants={sleep: [0, 0.001]}", "batch.repeats=2")
    env.ok("batch.command=run", "batch.idle_timeout=2")

    status = env.status(batch_id)
    assert status["status"] == "completed" and status["total"] == 20
    jobs = list(env.store().iter_jobs(batch_id))
    assert Counter((j.record_id, j.variant, j.repeat) for j in jobs) == Counter(
        {(rid, v, r): 1 for rid in ids for v in ("0", "0.001") for r in (0, 1)}
    )
    assert {j.status for j in jobs} == {JobStatus.COMPLETED}
