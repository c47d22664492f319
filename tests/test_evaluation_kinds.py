"""Interval and ordinal reports against the libraries, and labels read exactly as stored
(text "1", the number 1, true, a big integer, null, an absent key) on both stores."""

from __future__ import annotations

import json
import statistics
from typing import Any

import numpy as np
import pytest
from conftest import Env
from evaluation_expected import (
    alpha,
    approx,
    check_categorical,
    check_interval,
    exported,
    interval_figures,
    label_of,
    raters_matrix,
)
from sklearn.metrics import cohen_kappa_score, mean_absolute_error
from test_evaluation import (
    grid_request,
    on_backend,
    run_batch,
    scripted_flow,
    service_on,
    write_scripted,
)

from buttermilk.agents.testing import NO_LABEL
from buttermilk.domain import JobStatus
from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.errors import EvaluationError
from buttermilk.flows.models import FlowConfig

SCALE = [1, 2, 3, 4, 5]


@pytest.mark.backends("local")
def test_interval_and_ordinal_reports_match_the_libraries(env: Env) -> None:
    write_scripted(env.data / "numbers.jsonl", 50, seed=7, labels=SCALE)
    write_scripted(env.data / "records.jsonl", 30, seed=8)
    numbers = scripted_flow(env.data, name="numbers", evaluate="interval", file="numbers.jsonl")
    texts = scripted_flow(env.data)
    found: dict[str, Any] = {}
    ordinal = EvaluationSpec(label="judge.label", kind="ordinal")
    scale = ["pos", "neu", "neg"]  # a declared order, not the sorted one
    by_scale = EvaluationSpec(label="judge.label", kind="ordinal", categories=scale)

    async def main() -> None:
        async with service_on(env, numbers, texts) as (service, queue):
            batch_id = await run_batch(service, queue, env, grid_request("numbers"))
            text_id = await run_batch(service, queue, env, grid_request())
            await service.export(batch_id, env.home / "numbers.jsonl")
            await service.export(text_id, env.home / "texts.jsonl")
            found["interval"] = await service.report([batch_id])
            found["ordinal"] = await service.report([batch_id], ordinal)
            found["scale"] = await service.report([text_id], by_scale)
            with pytest.raises(EvaluationError) as caught:
                await service.report([text_id], ordinal)
            found["unordered"] = str(caught.value)

    on_backend(env, main)
    rows = exported(env.home / "numbers.jsonl")
    report = found["interval"]
    for score in [*report.combinations, report.overall]:
        of = [r for r in rows if score.variant in ("overall", r["variant"])]
        pairs = [
            (r["ground_truth"], label_of(r))
            for r in of
            if r["status"] == "completed"
            and label_of(r) is not None
            and r["ground_truth"] is not None
        ]
        assert score.scored == len(pairs)
        expected = interval_figures([float(t) for t, _ in pairs], [float(p) for _, p in pairs])
        assert score.mae == approx(expected["mae"])
        assert score.rmse == approx(expected["rmse"])
        check_interval(score.pearson, *expected["pearson"])
        assert score.spearman is not None and score.spearman.estimate == approx(
            expected["spearman"]
        )
        assert score.accuracy is None and score.confusion is None
    assert report.comparisons == []  # paired tests are for categories
    agreement = report.agreement
    matrix, records = raters_matrix(rows, float)
    assert agreement.krippendorff_alpha == approx(alpha(matrix, "interval"))
    assert agreement.fleiss_kappa is None
    # The majority vote of numbers is the median of a record's answers.
    medians, truths = [], []
    for i, rid in enumerate(records):
        answers = matrix[:, i][~np.isnan(matrix[:, i])]
        truth = next(r["ground_truth"] for r in rows if r["record_id"] == rid)
        if len(answers) and truth is not None:
            medians.append(statistics.median(answers))
            truths.append(truth)
    assert agreement.majority.scored == len(medians)
    assert agreement.majority.mae == approx(mean_absolute_error(truths, medians))

    ordinal_report = found["ordinal"]
    for score in ordinal_report.combinations:
        check_categorical(
            score, [r for r in rows if r["variant"] == score.variant], SCALE, kind="ordinal"
        )
    assert ordinal_report.agreement.krippendorff_alpha == approx(alpha(matrix, "ordinal"))

    text_rows = exported(env.home / "texts.jsonl")
    for score in found["scale"].combinations:
        of = [r for r in text_rows if r["variant"] == score.variant]
        check_categorical(score, of, scale, kind="ordinal")
    assert found["scale"].overall.confusion.labels == scale
    assert "the ordinal label 'neg' has no place on the scale" in found["unordered"]
    assert "evaluate.categories" in found["unordered"]
    # Linear weights matter: the weighted kappa is not the plain one here.
    pairs = [
        (r["ground_truth"], label_of(r))
        for r in rows
        if r["status"] == "completed" and label_of(r) is not None and r["ground_truth"] is not None
    ]
    assert ordinal_report.overall.cohen_kappa != approx(
        cohen_kappa_score([t for t, _ in pairs], [p for _, p in pairs])
    )


ODD_VALUES: list[Any] = ["1", 1, True, 1.5, 2**70, None, NO_LABEL, [1, "a"], {"x": 1}, 'é"q']


def test_labels_and_truths_are_read_exactly_as_stored(env: Env) -> None:
    with (env.data / "records.jsonl").open("w") as fh:
        for n, value in enumerate(ODD_VALUES):
            gold = {"value": value} if value != NO_LABEL else {}
            row = {"id": f"r{n}", "text": "x", "gold": gold, "answers": {"default": [value]}}
            fh.write(json.dumps(row) + "\n")
    flow = FlowConfig.model_validate(
        {
            "name": "odd",
            "data": {"records": {"type": "file", "path": str(env.data / "records.jsonl")}},
            "agents": [{"name": "judge", "_target_": "buttermilk.agents.testing.scripted"}],
        }
    )
    spec = EvaluationSpec(label="judge.label", truth="metadata.gold.value")
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env, flow) as (service, queue):
            request = grid_request("odd", variants={}, repeats=1)
            batch_id = await run_batch(service, queue, env, request)
            found["jobs"] = list(env.store().scored_jobs(batch_id, spec, chunk=3))
            found["report"] = await service.report([batch_id], spec)

    on_backend(env, main)
    jobs = found["jobs"]
    assert [job.record_id for job in jobs] == [f"r{n}" for n in range(len(ODD_VALUES))]
    assert all(job.status == JobStatus.COMPLETED for job in jobs)
    expected = [None if v == NO_LABEL else v for v in ODD_VALUES]
    assert [job.label for job in jobs] == expected
    assert [job.truth for job in jobs] == expected
    assert [type(job.label) for job in jobs] == [type(v) for v in expected]  # "1", 1, True
    report = found["report"]
    counts = report.overall.label_counts
    assert len(counts) == len(ODD_VALUES) - 2  # null and absent are no label
    # Each once; ties in the codebook's order: booleans, numbers, text, then the rest.
    assert [(type(label), label) for label, _ in counts[:6]] == [
        (bool, True),
        (int, 1),
        (float, 1.5),
        (int, 2**70),
        (str, "1"),
        (str, 'é"q'),
    ]
    assert report.overall.missing.no_label == 2
    assert report.overall.accuracy.estimate == 1.0  # each label equals its own truth only
    assert report.overall.confusion.labels[:2] == [True, 1]  # booleans, numbers, text, ...
