"""``type: batch``: a flow over what an earlier batch decided (both backends)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import Env
from pydantic import ValidationError

from buttermilk.batch.planner import plan_records
from buttermilk.errors import DataSourceError
from buttermilk.flows.models import FlowConfig

ROWS = [
    {"id": "p1", "text": "you are great", "label": "ok", "lang": "en"},
    {"id": "p2", "text": "go away", "label": "toxic", "lang": "en"},
    {"id": "p3", "text": "get lost", "label": "toxic", "lang": "fr"},
    {"id": "p4", "text": "thanks", "label": "ok", "lang": "fr"},
]


def second_round(env: Env, tmp_path: Path, where: str) -> None:
    """A flow ``round2`` over the batch whose id is in $ROUND1, with ``where``."""
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    (flows / "round2.yaml").write_text(
        "name: round2\n"
        "data:\n"
        f"  round1: {{type: batch, batch_id: '${{oc.env:ROUND1}}', where: {where}}}\n"
        "agents:\n"
        "  - {name: echo, _target_: buttermilk.agents.testing.echo}\n"
    )
    env.base_args = ["--config-dir", str(tmp_path / "myconf")]


@pytest.mark.slow
def test_a_flow_runs_over_an_earlier_batchs_decisions(env: Env, tmp_path: Path) -> None:
    (env.data / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    first = env.ok(
        "flow=t_echo", "batch.wait=true", "batch.format=json", "batch.shuffle=false"
    ).json()["batch_id"]
    env.extra["ROUND1"] = first[:6]  # a unique prefix is enough
    second_round(env, tmp_path, "{status: completed, echo.metadata.label: [toxic]}")

    done = env.ok("flow=round2", "batch.wait=true", "batch.format=json", "batch.shuffle=false")

    second = done.json()["batch_id"]
    assert done.json()["counts"]["completed"] == 2
    jobs = list(env.store().iter_jobs(second))
    assert [job.record_id for job in jobs] == ["p2", "p3"]  # the earlier batch's planned order
    first_jobs = {job.record_id: job for job in env.store().iter_jobs(first)}
    record = jobs[0].record
    assert record is not None and record.content == "go away"
    assert record.metadata["lang"] == "en" and record.metadata["label"] == "toxic"
    earlier = first_jobs["p2"].result
    assert earlier is not None
    assert record.metadata["previous"] == {
        "batch_id": first,
        "variant": "default",
        "repeat": 0,
        "status": "completed",
        "outputs": earlier["outputs"],
    }
    # The next agents see the earlier outputs too.
    assert jobs[0].result is not None
    seen = jobs[0].result["outputs"]["echo"]["metadata"]["previous"]["outputs"]["echo"]
    assert seen["content"] == "go away"


def flow_over_batch(batch_id: str, where: dict[str, Any]) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": "round2",
            "data": {"round1": {"type": "batch", "batch_id": batch_id, "where": where}},
            "agents": [{"name": "echo", "_target_": "buttermilk.agents.testing.echo"}],
        }
    )


@pytest.mark.slow
@pytest.mark.backends("local")
def test_bad_batch_sources_are_refused_in_one_line(env: Env, tmp_path: Path) -> None:
    (env.data / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    first = env.ok(
        "flow=t_echo", "batch.wait=true", "batch.format=json", "batch.shuffle=false"
    ).json()["batch_id"]
    env.extra["ROUND1"] = "zzzz"
    second_round(env, tmp_path, "{}")
    refused = env.cli("flow=round2")
    assert refused.returncode == 2, str(refused)
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith("error: data source 'round1': unknown batch id 'zzzz': no batch has this id")
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"judge.label": "x"}, f"data source 'round1': where.judge.label: batch {first}'s flow"),
        ({"status": "done"}, "data source 'round1': where.status='done' is not a job status"),
        ({"variant": "b"}, "data source 'round1': where.variant='b': batch "),
        ({"echo.verdict": "x"}, f"data source 'round1': where: no job of batch {first} has"),
    ]
    for where, message in cases:
        with pytest.raises(DataSourceError) as bad:
            plan_records(
                flow_over_batch(first, where), shuffle=False, max_records=None, store=env.store()
            )
        assert str(bad.value).startswith(message), str(bad.value)
    assert len(env.store().list_batches()) == 1  # nothing created


@pytest.mark.slow
@pytest.mark.backends("local")
def test_a_batch_of_several_combinations_gives_a_record_per_kept_job(env: Env) -> None:
    (env.data / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:2]))
    first = env.ok(
        "flow=t_grid", "batch.wait=true", "batch.format=json", "batch.shuffle=false"
    ).json()["batch_id"]
    a, b = [c.key for c in env.store().get_batch(first).combinations()]

    every = plan_records(
        flow_over_batch(first, {}), shuffle=False, max_records=None, store=env.store()
    )
    ids = [record.record_id for record in every.records]
    assert len(ids) == 8 and ids[:4] == [f"p1/{a}/0", f"p1/{b}/0", f"p1/{a}/1", f"p1/{b}/1"]
    one = plan_records(
        flow_over_batch(first, {"variant": b}), shuffle=False, max_records=None, store=env.store()
    )
    assert [record.record_id for record in one.records] == ["p1/0", "p1/1", "p2/0", "p2/1"]
    previous = one.records[1].metadata["previous"]
    assert (previous["variant"], previous["repeat"], previous["status"]) == (b, 1, "completed")


def test_a_one_segment_where_path_is_refused_as_a_label_path_is() -> None:
    with pytest.raises(ValidationError) as error:
        flow_over_batch("b1", {"vader": "x"})
    assert "where: 'vader' is not status, variant or an output path; an output path is " in (
        str(error.value)
    )
    assert flow_over_batch("b1", {"status": "completed", "judge.label": "x"})  # accepted
