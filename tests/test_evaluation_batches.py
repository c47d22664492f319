"""Reports across batches, while a batch runs, and which spec a report uses; the CLI
refuses a label naming no agent of the flow. In-process over SQLite (the store read is
checked on both stores in test_evaluation.py and test_evaluation_kinds.py)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Env
from evaluation_expected import approx, check_categorical, check_interval, exported, paired
from test_evaluation import (
    LABELS,
    grid_request,
    on_backend,
    run_batch,
    scripted_flow,
    service_on,
    write_scripted,
)

from buttermilk.domain import BatchRequest
from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.errors import EvaluationError


@pytest.mark.backends("local")
def test_a_report_over_two_batches_lines_up_their_combinations_and_pairs_records(
    env: Env,
) -> None:
    write_scripted(env.data / "records.jsonl", 60, seed=3)
    flow = scripted_flow(env.data)
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env, flow) as (service, queue):
            first = await run_batch(
                service, queue, env, grid_request(variants={"model": ["a", "b"]})
            )
            second = await run_batch(service, queue, env, grid_request(variants={"model": ["c"]}))
            for batch_id in (first, second):
                await service.export(batch_id, env.home / f"{batch_id}.jsonl")
            found["ids"] = [first, second]
            found["report"] = await service.report([first, second])

    on_backend(env, main)
    first, second = found["ids"]
    report = found["report"]
    rows = exported(env.home / f"{first}.jsonl") + exported(env.home / f"{second}.jsonl")
    assert report.batch_ids == [first, second]
    assert [(s.batch_id, s.variant) for s in report.combinations] == [
        (first, "a"),
        (first, "b"),
        (second, "c"),
    ]
    for score in report.combinations:
        of = [r for r in rows if (r["batch_id"], r["variant"]) == (score.batch_id, score.variant)]
        check_categorical(score, of, LABELS)
    assert report.overall.batch_id is None
    check_categorical(report.overall, rows, LABELS)
    assert report.agreement is not None
    assert (report.agreement.raters, report.agreement.records) == (6, 60)
    names = [(c.a, c.b) for c in report.comparisons]
    assert names == [
        (f"{first}:a", f"{first}:b"),
        (f"{first}:a", f"{second}:c"),
        (f"{first}:b", f"{second}:c"),
    ]
    for comparison in report.comparisons:
        expected = paired(
            rows, lambda r: f"{r['batch_id']}:{r['variant']}", comparison.a, comparison.b, LABELS
        )
        assert comparison.records == expected["records"] > 40  # the same record ids paired
        assert comparison.p_value == approx(expected["p"])
        check_interval(comparison.difference, *expected["difference"])


@pytest.mark.backends("local")
def test_a_report_while_a_batch_runs_covers_the_jobs_done_so_far(env: Env) -> None:
    write_scripted(env.data / "records.jsonl", 40, seed=5)
    flow = scripted_flow(env.data)
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env, flow) as (service, queue):
            batch_id = await run_batch(service, queue, env, grid_request(), max_jobs=100)
            await service.export(batch_id, env.home / "part.jsonl")
            found["report"] = await service.report([batch_id])

    on_backend(env, main)
    report = found["report"]
    rows = exported(env.home / "part.jsonl")
    done = [r for r in rows if r["status"] in ("completed", "failed")]
    assert report.live is True
    assert report.jobs == 240 and report.finished == len(done)
    assert 0 < len(done) < 240
    assert report.overall.missing.not_finished == 240 - len(done)
    check_categorical(report.overall, rows, LABELS)
    for score in report.combinations:
        check_categorical(score, [r for r in rows if r["variant"] == score.variant], LABELS)


@pytest.mark.backends("local")
def test_which_spec_a_report_uses_and_what_it_refuses(env: Env) -> None:
    write_scripted(env.data / "records.jsonl", 10, seed=1)
    declared = scripted_flow(env.data)
    bare = scripted_flow(env.data, name="bare", evaluate=None)
    neg = EvaluationSpec(label="judge.label", positive="neg")
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env, declared, bare) as (service, queue):
            flow_s = await run_batch(service, queue, env, grid_request())
            request_s = await run_batch(service, queue, env, grid_request(evaluate=neg))
            nothing = await run_batch(service, queue, env, grid_request("bare"))
            found["flow"] = (await service.report([flow_s])).evaluate
            found["request"] = (await service.report([request_s])).evaluate
            explicit = EvaluationSpec(label="judge.label", positive="pos")
            found["explicit"] = (await service.report([request_s], explicit)).evaluate
            for name, call in {
                "nothing": service.report([nothing]),
                "agents": service.report([flow_s], EvaluationSpec(label="nobody.label")),
                "flows": service.report([flow_s, nothing]),
                "different": service.report([flow_s, request_s]),
            }.items():
                with pytest.raises(EvaluationError) as caught:
                    await call
                found[f"error {name}"] = str(caught.value)
            with pytest.raises(EvaluationError) as caught:
                await service.create(grid_request(evaluate=EvaluationSpec(label="nobody.label")))
            found["error create"] = str(caught.value)
            found["batches"] = len(env.store().list_batches(limit=100))

    on_backend(env, main)
    assert found["flow"] == EvaluationSpec(label="judge.label", truth="ground_truth")
    assert found["request"].positive == "neg"  # the request's over the flow's
    assert found["explicit"].positive == "pos"  # an explicit spec over both
    assert (
        "declares nothing to score: set batch.evaluate={label: AGENT.KEY}" in found["error nothing"]
    )
    assert "has no agent 'nobody' (its agents: judge)" in found["error agents"]
    assert "different flows (bare, scored)" in found["error flows"]
    assert "different evaluate specs" in found["error different"]
    assert "has no agent 'nobody' (its agents: judge)" in found["error create"]
    assert found["batches"] == 3, "the refused create made nothing"


@pytest.mark.backends("local")
def test_the_cli_takes_batch_evaluate_and_refuses_a_label_of_no_agent(env: Env) -> None:
    write_scripted(env.data / "records.jsonl", 4, seed=2)
    refused = env.cli("flow=t_scored", "batch.evaluate={label: nobody.label}")
    assert refused.returncode == 2, str(refused)
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: evaluate.label='nobody.label': flow 't_scored' has no agent 'nobody' "
        "(its agents: judge); the label is AGENT.KEY[.KEY...]"
    )
    assert env.store().list_batches() == []
    batch_id = env.create(
        "t_scored",
        "batch.evaluate={label: judge.label, kind: ordinal, categories: [neg, neu, pos]}",
    )
    stored = env.store().get_batch(batch_id)
    assert stored.request.evaluate == EvaluationSpec(
        label="judge.label", kind="ordinal", categories=["neg", "neu", "pos"]
    )
    assert stored.flow_snapshot["evaluate"]["label"] == "judge.label"
    assert BatchRequest.model_validate(stored.request.model_dump()).evaluate is not None
