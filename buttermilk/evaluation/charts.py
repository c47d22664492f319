"""The results' charts as plotly figure specs: one implementation for the dashboard and the
HTML report.

Each figure is a plain plotly JSON dict (``{"data": [...], "layout": {...}}``) that
plotly.js draws as is (``Plotly.react(div, figure.data, figure.layout)``). Plain dicts
rather than ``plotly.graph_objects``: the API serves them as JSON on every poll and the
HTML report embeds them, so building them must be cheap (no plotly import, no validation
pass over every trace) and their shape is pinned by plotly.js's documented schema, which
is what draws them in both places.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from buttermilk.domain.evaluation import Report, Score
from buttermilk.domain.timeline import Timeline
from buttermilk.evaluation.chart_parts import (
    ACCENT,
    BASE_LAYOUT,
    CONFIG,
    COST,
    FAILED,
    Chart,
    axes_text,
    chart_layout,
    combination_name,
    empty,
    shown,
)

__all__ = ["CONFIG", "Chart", "axes_text", "combination_name", "report_charts", "shown"]

MAX_CONFUSIONS = 24
"""Most confusion-matrix heatmaps drawn (one per combination; the rest are in the tables)."""


def accuracy_figure(report: Report) -> dict[str, Any]:
    """Accuracy (nominal, ordinal) or MAE (interval) per combination with its 95% CI as
    error bars; ``n`` scored in the hover."""
    scores = report.combinations
    names = [combination_name(report, s) for s in scores]
    if report.evaluate.kind == "interval":
        title = "MAE per combination (95% CI; lower is better)"
        intervals = [s.mae_interval for s in scores]
        axis: dict[str, Any] = {"title": {"text": "MAE"}, "rangemode": "tozero"}
    else:
        title = "Accuracy per combination (95% CI)"
        intervals = [s.accuracy for s in scores]
        axis = {"title": {"text": "accuracy"}, "range": [0, 1]}
    values = [i.estimate if i else None for i in intervals]
    if all(v is None for v in values):
        return empty(title, "no scored jobs yet")
    plus = [
        (i.high - i.estimate) if i and i.high is not None and i.estimate is not None else None
        for i in intervals
    ]
    minus = [
        (i.estimate - i.low) if i and i.low is not None and i.estimate is not None else None
        for i in intervals
    ]
    trace: dict[str, Any] = {
        "type": "bar",
        "x": names,
        "y": values,
        "marker": {"color": ACCENT},
        "error_y": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus},
    }
    trace["customdata"] = [[s.scored, s.missing.total] for s in scores]
    trace["hovertemplate"] = (
        "%{x}: %{y:.3f}<br>n=%{customdata[0]} scored, %{customdata[1]} missing<extra></extra>"
    )
    return {
        "data": [trace],
        "layout": chart_layout(
            title, yaxis=axis, xaxis={"title": {"text": "combination"}, "type": "category"}
        ),
    }


def confusion_figure(report: Report, score: Score) -> dict[str, Any]:
    """The combination's confusion matrix as a heatmap: rows the truth, columns the answer."""
    title = f"Confusion: {combination_name(report, score)}"
    confusion = score.confusion
    if confusion is None or not confusion.labels:
        return empty(title, "no scored jobs yet")
    labels = [shown(label) for label in confusion.labels]
    trace = {
        "type": "heatmap",
        "x": labels,
        "y": labels,
        "z": confusion.matrix,
        "text": [[str(n) for n in row] for row in confusion.matrix],
        "texttemplate": "%{text}",
        "colorscale": "Blues",
        "reversescale": True,  # plotly.js's Blues runs dark to light: more jobs, darker
        "hovertemplate": "truth %{y}, answer %{x}: %{z}<extra></extra>",
    }
    layout = chart_layout(
        title,
        height=320,
        xaxis={"title": {"text": "answer"}, "type": "category"},
        yaxis={"title": {"text": "truth"}, "type": "category", "autorange": "reversed"},
    )
    return {"data": [trace], "layout": layout}


def label_order(report: Report) -> list[str]:
    """The report's labels (as :func:`shown`) in its order: the confusion matrices' (the
    codebook's: ``evaluate.categories``, then the rest sorted), then any other label given."""
    order: dict[str, None] = {}
    for score in [report.overall, *report.combinations]:
        if score.confusion is not None:
            order.update(dict.fromkeys(shown(label) for label in score.confusion.labels))
    for score in report.combinations:
        order.update(dict.fromkeys(shown(label) for label, _ in sorted_counts(score)))
    return list(order)


def sorted_counts(score: Score) -> list[tuple[Any, int]]:
    return sorted(score.label_counts, key=lambda pair: shown(pair[0]))


def _answers_histogram(report: Report, title: str) -> dict[str, Any]:
    """Interval: each combination's answers over the report's common bins, overlaid."""
    scores = [s for s in report.combinations if s.label_histogram]
    if not scores:
        return empty(title, "no scored jobs yet")
    traces = [
        {
            "type": "bar",
            "name": combination_name(report, score),
            "x": [(low + high) / 2 for low, high, _ in score.label_histogram],
            "width": [high - low for low, high, _ in score.label_histogram],
            "y": [n for _, _, n in score.label_histogram],
            "customdata": [[low, high] for low, high, _ in score.label_histogram],
            "opacity": 0.6 if len(scores) > 1 else 1,
            "hovertemplate": "%{customdata[0]:.3g} to %{customdata[1]:.3g}: %{y} jobs"
            f"<extra>{combination_name(report, score)}</extra>",
        }
        for score in scores
    ]
    layout = chart_layout(
        title,
        barmode="overlay",
        xaxis={"title": {"text": "answer"}},
        yaxis={"title": {"text": "jobs"}},
    )
    return {"data": traces, "layout": layout}


def labels_figure(report: Report) -> dict[str, Any]:
    """How often each combination gave each label (scored jobs), grouped bars in the
    report's label order (:func:`label_order`); for interval a histogram of the answers
    per combination over common bins."""
    if report.evaluate.kind == "interval":
        return _answers_histogram(report, "Answers per combination (histogram)")
    title = "Labels given per combination"
    scores = [s for s in report.combinations if s.label_counts]
    if not scores:
        return empty(title, "no scored jobs yet")
    order = label_order(report)
    traces = []
    for score in scores:
        counts = {shown(label): n for label, n in score.label_counts}
        traces.append(
            {
                "type": "bar",
                "name": combination_name(report, score),
                "x": order,
                "y": [counts.get(label, 0) for label in order],
            }
        )
    layout = chart_layout(
        title,
        barmode="group",
        xaxis={"title": {"text": "label"}, "type": "category"},
        yaxis={"title": {"text": "jobs"}},
    )
    return {"data": traces, "layout": layout}


def stability_figure(report: Report) -> dict[str, Any]:
    """Records per bin of their stability (share of answers agreeing with the record's
    majority), from the report's histogram."""
    title = "Per-record stability across combinations and repeats"
    agreement = report.agreement
    if report.evaluate.kind == "interval":
        return empty(title, "not defined for interval answers (see Krippendorff's alpha)")
    if agreement is None or not agreement.stability_histogram:
        return empty(title, "needs two or more answers per record")
    bins = agreement.stability_histogram
    trace = {
        "type": "bar",
        "x": [(low + high) / 2 for low, high, _ in bins],
        "width": [high - low for low, high, _ in bins],
        "y": [n for _, _, n in bins],
        "customdata": [[low, high] for low, high, _ in bins],
        "marker": {"color": ACCENT},
        "hovertemplate": "%{customdata[0]:.2f} to %{customdata[1]:.2f}: %{y} records"
        "<extra></extra>",
    }
    layout = chart_layout(
        title,
        xaxis={"title": {"text": "share agreeing with the majority"}, "range": [0, 1.02]},
        yaxis={"title": {"text": "records"}},
        bargap=0.05,
    )
    return {"data": [trace], "layout": layout}


def timeline_figure(timeline: Timeline) -> dict[str, Any]:
    """Jobs ended per time bucket (completed and failed, stacked) and their cost (USD,
    right axis)."""
    title = f"Throughput and cost over time ({timeline.bucket_seconds:g} s buckets)"
    if not timeline.buckets:
        return empty(title, "no job has ended yet")
    times = [b.start * 1000 for b in timeline.buckets]  # plotly dates: ms since the epoch
    traces: list[dict[str, Any]] = [
        {
            "type": "bar",
            "name": "completed",
            "x": times,
            "y": [b.completed for b in timeline.buckets],
            "marker": {"color": "#2da44e"},
        },
        {
            "type": "bar",
            "name": "failed",
            "x": times,
            "y": [b.failed for b in timeline.buckets],
            "marker": {"color": FAILED},
        },
    ]
    if any(b.cost is not None for b in timeline.buckets):
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "cost (USD)",
                "x": times,
                "y": [b.cost or 0.0 for b in timeline.buckets],
                "yaxis": "y2",
                "line": {"color": COST},
            }
        )
    layout = chart_layout(
        title,
        barmode="stack",
        xaxis={"type": "date", "title": {"text": "time"}},
        yaxis={"title": {"text": "jobs ended"}},
        yaxis2={
            "title": {"text": "USD"},
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
        },
        legend={"orientation": "h", "y": -0.25},
        margin={**BASE_LAYOUT["margin"], "r": 70},
    )
    return {"data": traces, "layout": layout}


def report_charts(report: Report, timeline: Timeline | None = None) -> list[Chart]:
    """Every chart of the results, in page order: accuracy (or MAE), labels, stability,
    throughput/cost (with a timeline), then a confusion matrix per combination (nominal and
    ordinal, up to :data:`MAX_CONFUSIONS`)."""
    charts = [
        Chart(id="accuracy", title="Accuracy", figure=accuracy_figure(report)),
        Chart(id="labels", title="Labels", figure=labels_figure(report)),
        Chart(id="stability", title="Stability", figure=stability_figure(report)),
    ]
    if report.evaluate.kind == "interval":
        charts[0].title = "Mean absolute error"
    if timeline is not None:
        charts.append(Chart(id="timeline", title="Throughput", figure=timeline_figure(timeline)))
    if report.evaluate.kind != "interval":
        for i, score in enumerate(report.combinations[:MAX_CONFUSIONS]):
            charts.append(
                Chart(
                    id=f"confusion-{i}",
                    title=f"Confusion: {combination_name(report, score)}",
                    figure=confusion_figure(report, score),
                )
            )
    return charts


def plotly_js_path() -> Path:
    """plotly.js as the installed ``plotly`` package ships it (``package_data/plotly.min.js``),
    found without importing plotly. Raises FileNotFoundError when it is not there."""
    spec = importlib.util.find_spec("plotly")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise FileNotFoundError("plotly.min.js: the plotly package is not installed")
