"""Reports on any mix of jobs (property test) and on the degenerate cases: nothing
finished, one class, one record, constant numbers. No store: build_report on rows."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buttermilk.domain import BatchInfo, BatchRequest, BatchStatus, JobStatus
from buttermilk.domain.evaluation import EvaluationSpec, ScoredJob
from buttermilk.evaluation.report import build_report, record_agreements

KEYS = ["a", "b"]


def batch(status: BatchStatus = BatchStatus.COMPLETED, repeats: int = 2) -> BatchInfo:
    request = BatchRequest(flow="f", variants={"model": KEYS}, repeats=repeats)
    return BatchInfo(
        id="b1",
        flow="f",
        status=status,
        request=request,
        flow_snapshot={},
        total=0,
        seed=0,
        published=True,
        created_at=0.0,
    )


def job(
    record: int, variant: str, repeat: int, status: JobStatus, label: Any, truth: Any
) -> ScoredJob:
    return ScoredJob("b1", f"r{record}", variant, repeat, status, label, truth)


values = st.one_of(st.none(), st.sampled_from(["x", "y", "z", "1", 1, True, 2.5]))
jobs_strategy = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(KEYS),
        st.integers(0, 1),
        st.sampled_from(list(JobStatus)),
        values,
        values,
    ),
    max_size=40,
    unique_by=lambda t: t[:3],
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=jobs_strategy, kind=st.sampled_from(["nominal", "interval"]))
def test_every_job_is_scored_or_counted_missing_whatever_the_mix(
    rows: list[tuple[Any, ...]], kind: str
) -> None:
    jobs = [job(*row) for row in rows]
    spec = EvaluationSpec(label="judge.label", kind=kind)  # type: ignore[arg-type]
    report = build_report([batch()], spec, jobs)
    assert report.jobs == len(jobs)
    scores = [*report.combinations, report.overall]
    if report.agreement is not None and report.agreement.majority is not None:
        scores.append(report.agreement.majority)
    for score in scores:
        assert score.scored + score.missing.total == score.jobs
        assert sum(n for _, n in score.label_counts) == score.scored or kind == "interval"
        if score.confusion is not None:
            assert sum(map(sum, score.confusion.matrix)) == score.scored
        if score.accuracy is not None and score.accuracy.estimate is not None:
            assert score.accuracy.low <= score.accuracy.estimate <= score.accuracy.high
    assert sum(s.jobs for s in report.combinations) == len(jobs)
    per_record = record_agreements(spec, jobs)
    assert sum(r.answers for r in per_record) <= len(jobs)
    assert len(per_record) == len({j.record_id for j in jobs})


def test_a_batch_with_nothing_finished_reports_every_job_missing() -> None:
    jobs = [
        job(r, v, n, JobStatus.PENDING, None, "x") for r in range(3) for v in KEYS for n in (0, 1)
    ]
    report = build_report([batch(BatchStatus.RUNNING)], EvaluationSpec(label="j.l"), jobs)
    assert report.live and report.finished == 0
    assert report.overall.scored == 0 and report.overall.missing.not_finished == 12
    assert report.overall.accuracy is None
    agreement = report.agreement
    assert agreement is not None and agreement.raters == 4
    assert agreement.krippendorff_alpha is None and agreement.fleiss_kappa is None
    assert agreement.stability is None
    assert agreement.majority is not None and agreement.majority.missing.not_finished == 3
    assert report.comparisons[0].records == 0 and report.comparisons[0].p_value is None


def test_one_class_everywhere_gives_none_where_a_statistic_is_undefined() -> None:
    jobs = [
        job(r, v, n, JobStatus.COMPLETED, "x", "x") for r in range(4) for v in KEYS for n in (0, 1)
    ]
    report = build_report([batch()], EvaluationSpec(label="j.l"), jobs)
    assert report.overall.accuracy is not None and report.overall.accuracy.estimate == 1.0
    assert report.overall.cohen_kappa is None  # one class: kappa is 0/0
    assert report.agreement is not None and report.agreement.krippendorff_alpha is None
    assert report.agreement.stability == 1.0
    assert report.comparisons[0].difference.estimate == 0.0
    assert report.comparisons[0].p_value == 1.0


def test_constant_numbers_have_no_correlation() -> None:
    jobs = [job(r, v, 0, JobStatus.COMPLETED, 3, r) for r in range(5) for v in KEYS]
    report = build_report([batch(repeats=1)], EvaluationSpec(label="j.l", kind="interval"), jobs)
    assert report.overall.pearson is not None and report.overall.pearson.estimate is None
    assert report.overall.mae == 1.4  # |3 - r| for r in 0..4: (3 + 2 + 1 + 0 + 1) / 5
    assert report.comparisons == []


def test_alpha_over_too_many_distinct_numbers_is_left_out_with_a_note() -> None:
    jobs = [
        job(r, v, 0, JobStatus.COMPLETED, r + (0.5 if v == "a" else 0.25), r)
        for r in range(400)
        for v in KEYS
    ]
    report = build_report([batch(repeats=1)], EvaluationSpec(label="j.l", kind="interval"), jobs)
    agreement = report.agreement
    assert agreement is not None and agreement.krippendorff_alpha is None
    assert agreement.notes and "400 records x 800 distinct values" in agreement.notes[0]
    assert report.overall.pearson is not None
    assert report.overall.pearson.estimate == pytest.approx(1.0, abs=1e-5)


def test_beyond_ten_combinations_the_most_accurate_is_compared_with_each_other() -> None:
    keys = [f"k{i:02d}" for i in range(12)]
    info = batch(repeats=1).model_copy(
        update={"request": BatchRequest(flow="f", variants={"model": keys}, repeats=1)}
    )
    jobs = [
        job(r, key, 0, JobStatus.COMPLETED, "x" if r < 2 + i % 5 or key == "k07" else "y", "x")
        for r in range(8)
        for i, key in enumerate(keys)
    ]
    report = build_report([info], EvaluationSpec(label="j.l"), jobs)
    assert [s.variant for s in report.combinations] == keys
    assert [(c.a, c.b) for c in report.comparisons] == [("k07", k) for k in keys if k != "k07"]
