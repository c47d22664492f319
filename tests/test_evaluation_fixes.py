"""What a fresh-user trial of the evaluation found, each fixed for its whole kind, in this
process (no store: build_report on rows; the CLI's checks and views called directly):
label paths, the positive class, interval's MAE interval, histogram and stability, the
views' batch column, missing split, positive class and label order, the refusals' words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from rich.console import Console
from statsmodels.stats.weightstats import DescrStatsW

from buttermilk.domain import BatchInfo, BatchRequest, BatchStatus, JobStatus
from buttermilk.domain.evaluation import EvaluationSpec, Report, ScoredJob
from buttermilk.errors import EvaluationError, InvalidOptionError, UsageError
from buttermilk.evaluation.charts import CONFIG, labels_figure, report_charts
from buttermilk.evaluation.html import render_report_html
from buttermilk.evaluation.report import build_report
from buttermilk.evaluation.spec import spec_for
from buttermilk.runner.commands import check_output_use
from buttermilk.runner.report_command import evaluate_override
from buttermilk.runner.report_view import report_view
from buttermilk.runner.settings import BatchSettings, describe_validation_error

DONE = JobStatus.COMPLETED


def batch(
    batch_id: str = "b1", keys: tuple[str, ...] = ("m1", "m2"), repeats: int = 2, **request: Any
) -> BatchInfo:
    return BatchInfo(
        id=batch_id,
        flow="f",
        status=BatchStatus.COMPLETED,
        request=BatchRequest(flow="f", variants={"model": list(keys)}, repeats=repeats, **request),
        flow_snapshot={"name": "f", "agents": [{"name": "judge"}]},
        total=0,
        seed=0,
        published=True,
        created_at=0.0,
    )


def nominal_jobs(batch_id: str = "b1") -> list[ScoredJob]:
    """m1 right on every record; m2 answers "c" (a rare label) on r0 and fails on r1."""
    truths = ["a", "b", "a", "b"]
    jobs = []
    for r, truth in enumerate(truths):
        for repeat in (0, 1):
            jobs.append(ScoredJob(batch_id, f"r{r}", "m1", repeat, DONE, truth, truth))
            if r == 1 and repeat == 0:
                jobs.append(
                    ScoredJob(batch_id, f"r{r}", "m2", repeat, JobStatus.FAILED, None, truth)
                )
            else:
                answer = "c" if r == 0 else truth
                jobs.append(ScoredJob(batch_id, f"r{r}", "m2", repeat, DONE, answer, truth))
    jobs.append(ScoredJob(batch_id, "r9", "m2", 0, DONE, None, "a"))  # no label
    return jobs


def text_of(report: Report) -> str:
    console = Console(width=250, record=True, color_system=None)
    console.print(report_view(report))
    return console.export_text()


# -- 1. the label path -------------------------------------------------------------


@pytest.mark.parametrize("label", ["judge", "s"])
def test_a_label_without_a_key_is_refused_naming_the_form(label: str) -> None:
    with pytest.raises(ValidationError, match=f"names an agent but no key.*{label}.label"):
        EvaluationSpec(label=label)

    with pytest.raises(UsageError) as caught:
        evaluate_override(BatchSettings(evaluate={"label": label}))
    message = str(caught.value)
    assert message.startswith(f"batch.evaluate.label={label!r} is not allowed: ")
    assert "AGENT.KEY[.KEY...]" in message and "\n" not in message


# -- 3. the positive class ---------------------------------------------------------


def test_a_positive_class_no_job_has_is_refused_naming_the_classes_seen() -> None:
    spec = EvaluationSpec(label="judge.label", positive="postive")

    with pytest.raises(EvaluationError, match=r"positive='postive'.*classes seen: a, b, c"):
        build_report([batch()], spec, nominal_jobs())
    found = build_report(
        [batch()], EvaluationSpec(label="judge.label", positive="a"), nominal_jobs()
    )
    assert found.overall.positive is not None and found.overall.positive.label == "a"
    # Before any job has a truth or an answer, nothing can be said yet: accepted.
    pending = [ScoredJob("b1", "r0", "m1", 0, JobStatus.PENDING, None, None)]
    assert build_report([batch()], spec, pending).overall.scored == 0


def test_a_positive_class_with_kind_interval_is_refused_by_the_spec() -> None:
    with pytest.raises(ValidationError, match="kind interval scores numbers"):
        EvaluationSpec(label="judge.score", kind="interval", positive=1)
    with pytest.raises(UsageError, match=r"^batch\.evaluate\.positive=1 is not allowed: the pos"):
        evaluate_override(
            BatchSettings(evaluate={"label": "j.s", "kind": "interval", "positive": 1})
        )


# -- 4, 6, 7, 8, 13. the views -----------------------------------------------------


def test_the_per_class_table_names_the_batch_when_several_are_lined_up() -> None:
    jobs = nominal_jobs("b1") + nominal_jobs("b2")
    report = build_report([batch("b1"), batch("b2")], EvaluationSpec(label="j.l"), jobs)

    lines = text_of(report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "per class")
    rows = [line.split() for line in lines[start + 1 :] if line.strip()]
    assert rows[0][:3] == ["batch", "variant", "class"]
    assert [row[:3] for row in rows[2:5]] == [
        ["b1", "m1", "a"],
        ["b1", "m1", "b"],
        ["b1", "m2", "a"],
    ]
    assert [row[:3] for row in rows[7:8]] == [["b2", "m1", "a"]]


def test_html_shows_the_missing_split_the_positive_class_and_axes_as_name_value() -> None:
    spec = EvaluationSpec(label="j.l", positive="b")
    report = build_report([batch()], spec, nominal_jobs())
    html = render_report_html(report)

    assert '<td class="num missing">2 (1 failed, 1 no label)</td>' in html
    assert "<th>Precision (b)</th><th>Recall (b)</th><th>F1 (b)</th>" in html
    m2 = report.combinations[1].positive
    assert m2 is not None
    assert f'<td class="num positive">{m2.precision:.3f}</td>' in html
    assert '<span class="muted axes">model=m1</span>' in html
    assert "{&#34;model&#34;" not in html and '{"model"' not in html.split("<script")[0]


def test_labels_are_charted_in_the_reports_order_not_by_frequency() -> None:
    spec = EvaluationSpec(label="j.l", categories=["c", "b", "a"])
    report = build_report([batch()], spec, nominal_jobs())

    figure = labels_figure(report)
    assert [trace["x"] for trace in figure["data"]] == [["c", "b", "a"]] * 2
    assert report.combinations[0].confusion is not None
    assert report.combinations[0].confusion.labels == ["c", "b", "a"]
    assert figure["data"][0]["y"] == [0, 4, 4]


def test_chart_titles_sit_below_the_toolbar_shown_on_hover() -> None:
    report = build_report([batch()], EvaluationSpec(label="j.l"), nominal_jobs())

    assert CONFIG["displayModeBar"] == "hover"
    for chart in report_charts(report):
        title = chart.figure["layout"]["title"]
        assert (title["yref"], title["y"], title["yanchor"]) == ("container", 1, "top")
        assert title["pad"]["t"] >= 30  # the toolbar's row (about 25 px) is above it
        assert chart.figure["layout"]["margin"]["t"] >= title["pad"]["t"] + 30


# -- 5. interval -------------------------------------------------------------------


def interval_jobs() -> list[ScoredJob]:
    rng = np.random.default_rng(3)
    jobs = []
    for r in range(40):
        truth = float(r % 10)
        for key, noise in (("m1", 0.5), ("m2", 2.0)):
            for repeat in (0, 1):
                answer = round(truth + float(rng.normal(0, noise)), 6)
                jobs.append(ScoredJob("b1", f"r{r}", key, repeat, DONE, answer, truth))
    return jobs


def test_interval_has_an_mae_interval_a_histogram_and_no_exact_match_stability() -> None:
    jobs = interval_jobs()
    report = build_report([batch()], EvaluationSpec(label="j.s", kind="interval"), jobs)

    for score in report.combinations:
        mine = [j for j in jobs if j.variant == score.variant]
        errors = np.abs(np.array([j.label - j.truth for j in mine]))
        low, high = DescrStatsW(errors).tconfint_mean(alpha=0.05)
        assert score.mae_interval is not None
        assert score.mae_interval.estimate == pytest.approx(score.mae)
        assert (score.mae_interval.low, score.mae_interval.high) == pytest.approx((low, high))
        assert sum(n for _, _, n in score.label_histogram) == score.scored == len(mine)
        assert score.stability is None
    edges = [[(lo, hi) for lo, hi, _ in s.label_histogram] for s in report.combinations]
    assert edges[0] == edges[1]  # common bins: the combinations compare
    assert report.agreement is not None and report.agreement.stability is None
    assert any("stability not computed" in note for note in report.agreement.notes)

    charts = {c.id: c.figure for c in report_charts(report)}
    bars = charts["accuracy"]["data"][0]
    assert bars["y"] == [s.mae for s in report.combinations]
    assert bars["error_y"]["array"] == [
        s.mae_interval.high - s.mae
        for s in report.combinations
        if s.mae_interval and s.mae_interval.high and s.mae
    ]
    labels = charts["labels"]["data"]
    assert len(labels) == 2 and len(labels[0]["x"]) == len(report.combinations[0].label_histogram)
    assert labels[0]["y"] == [n for _, _, n in report.combinations[0].label_histogram]
    assert "MAE [95% CI]" in text_of(report)


# -- 12. refusals name what was given ----------------------------------------------


def test_batches_declaring_different_specs_are_each_named_with_their_spec() -> None:
    one = batch("b1", evaluate=EvaluationSpec(label="judge.label"))
    two = batch("b2", evaluate=EvaluationSpec(label="judge.answer", kind="ordinal"))

    with pytest.raises(EvaluationError) as caught:
        spec_for([one, two], None)
    assert (
        "batch b1: label=judge.label, kind=nominal; batch b2: label=judge.answer, kind=ordinal"
        in str(caught.value)
    )


def test_an_empty_output_is_refused_as_given_and_json_with_an_output_file_too() -> None:
    with pytest.raises(ValidationError) as caught:
        BatchSettings(output="")  # type: ignore[arg-type]
    assert describe_validation_error(caught.value, "batch.").startswith(
        "batch.output='' is not allowed: give a file name"
    )

    for command in ("report", "export"):
        with pytest.raises(InvalidOptionError, match=r"^batch\.format='json' is not allowed"):
            check_output_use(command, BatchSettings(output=Path("x.html"), format="json"))
    check_output_use("report", BatchSettings(output=Path("x.html")))
