"""One self-contained HTML file of a report: plotly.js inline once, every chart embedded,
and tables of the figures (for a lab notebook; opens offline, from ``file://``)."""

from __future__ import annotations

import datetime as dt
from functools import cache
from typing import Any

import orjson
from markupsafe import Markup

from buttermilk.domain.evaluation import Interval, Report, Score
from buttermilk.domain.timeline import Timeline
from buttermilk.evaluation.charts import (
    CONFIG,
    axes_text,
    combination_name,
    plotly_js_path,
    report_charts,
    shown,
)

TEMPLATE = "report.html.j2"


NONE = "\u2013"  # an en dash: no figure


def _num(value: float | None, digits: int = 3) -> str:
    return NONE if value is None else f"{value:.{digits}f}"


def _interval(value: Interval | None) -> str:
    if value is None or value.estimate is None:
        return NONE
    if value.low is None or value.high is None:
        return _num(value.estimate)
    return f"{value.estimate:.3f} [{value.low:.3f}, {value.high:.3f}]"


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _script_json(value: Any) -> Markup:
    """JSON safe inside a <script> element: no ``<``, ``>`` or ``&`` that could end it."""
    text = orjson.dumps(value).decode()
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@cache
def _plotly_js() -> Markup:
    """plotly.js from the installed package, safe inline (a ``</script`` cannot end it)."""
    return Markup(plotly_js_path().read_text(encoding="utf-8").replace("</script", "<\\/script"))


@cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("buttermilk.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
    )
    env.filters.update(num=_num, interval=_interval, when=_when, shown=shown, axes=axes_text)
    return env


def render_report_html(report: Report, timeline: Timeline | None = None) -> str:
    """The report as one HTML document (text), needing no network: plotly.js from the
    installed ``plotly`` package inline, the charts of
    :func:`~buttermilk.evaluation.charts.report_charts` embedded as JSON and drawn on load,
    and tables of the scores, per-class figures, agreement, comparisons and (with a
    ``timeline``) throughput. Every value of the data is escaped (Jinja2 autoescape).

    Raises FileNotFoundError when the plotly package's plotly.min.js is missing.
    """
    charts = report_charts(report, timeline)
    scores: list[Score] = [*report.combinations, report.overall]
    if report.agreement and report.agreement.majority:
        scores.append(report.agreement.majority)
    rows = [{"name": combination_name(report, s), "score": s} for s in scores]
    return str(
        _environment()
        .get_template(TEMPLATE)
        .render(
            report=report,
            timeline=timeline,
            charts=charts,
            scores=rows,
            interval=report.evaluate.kind == "interval",
            positive=report.evaluate.positive,
            plotly_js=_plotly_js(),
            figures_json=_script_json([c.model_dump() for c in charts]),
            config_json=_script_json(CONFIG),
        )
    )
