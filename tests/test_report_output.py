"""The report's surfaces, on reports built by hand: the terminal tables, the .json and .csv
files (written whole or not at all), and the refusals of bad options. In-process: no
batch or statistics are needed to check how a given report is shown."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from rich.console import Console

from buttermilk.domain.evaluation import (
    Agreement,
    ClassScore,
    Comparison,
    EvaluationSpec,
    Interval,
    Missing,
    Report,
    Score,
)
from buttermilk.errors import InvalidOptionError, UsageError
from buttermilk.evaluation.score_rows import FIGURES
from buttermilk.runner import report_command
from buttermilk.runner.commands import check_report_options
from buttermilk.runner.report_command import evaluate_override, write_report
from buttermilk.runner.report_view import report_view, summary_line
from buttermilk.runner.settings import BatchSettings


def nominal_score(variant: str, axes: dict[str, object], accuracy: float, **more: object) -> Score:
    return Score(
        batch_id="b1",
        variant=variant,
        axes=axes,
        jobs=10,
        scored=8,
        missing=Missing(failed=1, no_label=1),
        label_counts=[("positive", 5), ("negative", 3)],
        accuracy=Interval(estimate=accuracy, low=accuracy - 0.2, high=1.0, method="wilson"),
        macro_f1=0.7,
        cohen_kappa=0.55,
        classes=[
            ClassScore(label="positive", precision=0.8, recall=0.9, f1=0.847, support=5),
            ClassScore(label="negative", precision=0.6, recall=0.5, f1=0.545, support=3),
        ],
        positive=ClassScore(label="positive", precision=0.8, recall=0.9, f1=0.847, support=5),
        **more,  # type: ignore[arg-type]
    )


def nominal_report(live: bool = False) -> Report:
    a = nominal_score("0.05", {"vader.threshold": 0.05}, 0.75, stability=0.9)
    b = nominal_score("0.3", {"vader.threshold": 0.3}, 0.625, stability=1.0)
    overall = nominal_score("overall", {}, 0.6875)
    majority = nominal_score("majority", {}, 0.7)
    return Report(
        batch_ids=["b1"],
        flow="sentiment_thresholds",
        evaluate=EvaluationSpec(label="vader.label", positive="positive"),
        live=live,
        jobs=20,
        finished=18,
        combinations=[a, b],
        overall=overall,
        agreement=Agreement(
            raters=4,
            records=5,
            krippendorff_alpha=0.4321,
            fleiss_kappa=0.3456,
            stability=0.95,
            majority=majority,
            notes=["alpha left out: too many distinct values"],
        ),
        comparisons=[
            Comparison(
                a="0.05",
                b="0.3",
                records=8,
                both_correct=5,
                only_a_correct=2,
                only_b_correct=1,
                neither_correct=0,
                difference=Interval(estimate=0.125, low=-0.2, high=0.45, method="wald"),
                p_value=0.00042,
            )
        ],
        generated_at=1_700_000_000.0,
    )


def interval_report() -> Report:
    def score(variant: str) -> Score:
        return Score(
            batch_id="b1",
            variant=variant,
            jobs=4,
            scored=4,
            missing=Missing(),
            mae=0.25,
            rmse=0.5,
            pearson=Interval(estimate=0.9, low=0.1, high=0.99, method="fisher-z"),
            spearman=Interval(estimate=0.8, low=None, high=None, method="fisher-z"),
        )

    return Report(
        batch_ids=["b1", "b2"],
        flow="f",
        evaluate=EvaluationSpec(label="judge.score", kind="interval"),
        live=False,
        jobs=4,
        finished=4,
        combinations=[score("default")],
        overall=score("overall"),
        generated_at=1_700_000_000.0,
    )


def shown(report: Report) -> str:
    console = Console(record=True, width=250)
    console.print(report_view(report))
    return console.export_text()


def test_the_table_shows_scores_classes_agreement_and_comparisons() -> None:
    text = shown(nominal_report())

    for part in (
        "vader.label against ground_truth (nominal), positive class positive",
        "18 of 20 finished",
        "accuracy [95% CI]",
        "0.750 [0.550, 1.000]",  # the first combination's accuracy with its CI
        "0.625 [0.425, 1.000]",
        "8 of 10",
        "2 (1 failed, 1 no label)",  # missing, by reason
        "Cohen's kappa",
        "per class",
        "0.847",
        "Krippendorff's alpha (nominal)",
        "0.432",
        "0.346",
        "majority vote accuracy",
        "0.700 [0.500, 1.000]",
        "McNemar",
        "0.125 [-0.200, 0.450]",
        "<0.001",
        "vader.threshold",
        "note: alpha left out: too many distinct values",
    ):
        assert part in text, f"{part!r} not in\n{text}"
    assert "live" not in text


def test_a_running_batch_says_its_report_covers_the_jobs_so_far() -> None:
    report = nominal_report(live=True)

    assert "18 of 20 jobs finished" in shown(report)
    assert summary_line(report).endswith("live: 18 of 20 jobs finished; figures cover those so far")


def test_an_interval_report_shows_errors_and_correlations_not_accuracy() -> None:
    text = shown(interval_report())

    for part in ("MAE", "RMSE", "0.250", "0.500", "0.900 [0.100, 0.990]", "batches", "b1, b2"):
        assert part in text, f"{part!r} not in\n{text}"
    assert "accuracy" not in text and "per class" not in text


def test_the_json_file_is_the_reports_json(tmp_path: Path) -> None:
    report = nominal_report()
    out = tmp_path / "deep" / "report.json"

    write_report(report, out)

    assert json.loads(out.read_text()) == report.model_dump(mode="json")
    assert Report.model_validate_json(out.read_text()) == report


def test_the_csv_file_has_a_row_per_score_with_flat_columns(tmp_path: Path) -> None:
    report = nominal_report()
    out = tmp_path / "report.csv"

    write_report(report, out)

    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["batch_id", "variant", "axes.vader.threshold", *FIGURES]
    assert [row["variant"] for row in rows] == ["0.05", "0.3", "overall", "majority"]
    first = rows[0]
    assert first["axes.vader.threshold"] == "0.05"
    assert (first["jobs"], first["scored"], first["missing"]) == ("10", "8", "2")
    assert (first["missing_failed"], first["missing_no_label"]) == ("1", "1")
    assert float(first["accuracy"]) == 0.75 and float(first["accuracy_low"]) == 0.55
    assert first["accuracy_method"] == "wilson"
    assert float(first["precision"]) == 0.8 and float(first["stability"]) == 0.9
    assert first["mae"] == "" and first["pearson"] == ""  # not figures of a nominal kind
    assert rows[2]["axes.vader.threshold"] == ""


@pytest.mark.parametrize("name", ["report.txt", "report.jsonl", "report"])
def test_a_report_file_of_another_kind_is_refused_naming_the_kinds(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        write_report(nominal_report(), tmp_path / name)

    assert "batch.output=" in str(caught.value)
    assert "the file must end in .json, .csv or .html" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_report_file_that_fails_midway_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half(report: Report, path: Path) -> None:
        path.write_text("batch_id,variant\nb1,")
        raise OSError("disk full")

    monkeypatch.setattr(report_command, "write_csv", half)
    out = tmp_path / "report.csv"
    out.write_text("the old report")

    with pytest.raises(OSError, match="disk full"):
        write_report(nominal_report(), out)

    assert out.read_text() == "the old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


@pytest.mark.parametrize(
    ("evaluate", "expected"),
    [
        ({"lable": "vader.label"}, "batch.evaluate.lable is not a known option (did you mean"),
        ({"label": "vader..label"}, "is not a dotted path"),
        ({"label": "vader.label", "kind": "ratio"}, "batch.evaluate.kind='ratio' is not allowed"),
        ({"label": "vader.label", "truth": "content"}, "must be ground_truth"),
    ],
)
def test_a_bad_evaluate_is_one_usage_error_naming_it(
    evaluate: dict[str, object], expected: str
) -> None:
    with pytest.raises(UsageError) as caught:
        evaluate_override(BatchSettings(evaluate=evaluate))

    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_batch_ids_and_evaluate_are_refused_where_nothing_reads_them() -> None:
    check_report_options("report", BatchSettings(batch_ids=["a", "b"], evaluate={"label": "x.y"}))
    check_report_options("create", BatchSettings(evaluate={"label": "x.y"}))

    with pytest.raises(InvalidOptionError, match=r"batch\.batch_ids is for report"):
        check_report_options("status", BatchSettings(batch_ids=["a"]))
    with pytest.raises(InvalidOptionError, match=r"batch\.evaluate is for report"):
        check_report_options("export", BatchSettings(evaluate={"label": "x.y"}))


def test_an_html_report_is_refused_in_one_line_where_no_writer_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report_command, "HTML_MODULE", "buttermilk.evaluation.no_such_module")

    with pytest.raises(InvalidOptionError, match=r"cannot write HTML reports: use a \.json"):
        write_report(nominal_report(), tmp_path / "report.html")

    assert list(tmp_path.iterdir()) == []


def test_an_html_report_is_one_self_contained_file(tmp_path: Path) -> None:
    pytest.importorskip(report_command.HTML_MODULE)
    out = tmp_path / "report.html"

    write_report(nominal_report(), out)

    text = out.read_text()
    assert text.lstrip().lower().startswith("<!doctype html")
    assert "vader.label" in text and "0.750" in text
    assert "<script src=" not in text  # plotly.js inline: it opens offline
