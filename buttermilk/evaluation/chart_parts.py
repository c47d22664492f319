"""What every results chart shares: colours, the base layout and plotly.js's config, the
title's place, the empty figure, and how labels and combinations are named."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from buttermilk.domain.evaluation import Report, Score

ACCENT = "#0969da"
COST = "#bf8700"
FAILED = "#cf222e"
TITLE_TOP = 34
"""Pixels above a chart's title: the row of plotly's toolbar (shown on hover, top right),
so a long title runs under it, never into it."""
BASE_LAYOUT: dict[str, Any] = {
    "margin": {"l": 60, "r": 30, "t": TITLE_TOP + 36, "b": 60},
    "height": 340,
    "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#ffffff",
    "font": {"family": "system-ui, sans-serif", "size": 12},
}
CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True, "displayModeBar": "hover"}
"""plotly.js's config for every chart: no link to plotly's site (pages work offline), the
toolbar only while the pointer is over the chart."""


class Chart(BaseModel):
    """One chart: a stable id (the div it is drawn in), a title, and its plotly figure."""

    id: str
    title: str
    figure: dict[str, Any]


def shown(value: Any) -> str:
    """A label as a chart or table names it: text as is, anything else as its JSON."""
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def axes_text(axes: dict[str, Any]) -> str:
    """``model=m1, prompt=short``: a combination's axis values (text as is)."""
    return ", ".join(f"{name}={shown(value)}" for name, value in axes.items())


def combination_name(report: Report, score: Score) -> str:
    """The combination's key, with its batch's id in front when the report lines up several."""
    if len(report.batch_ids) > 1 and score.batch_id:
        return f"{score.batch_id[:8]} · {score.variant}"
    return score.variant


def chart_layout(title: str, **extra: Any) -> dict[str, Any]:
    # Title on the left, below the toolbar's row (see TITLE_TOP).
    placed = {
        "text": title,
        "x": 0.01,
        "xanchor": "left",
        "yref": "container",
        "y": 1,
        "yanchor": "top",
        "pad": {"t": TITLE_TOP},
    }
    return {**BASE_LAYOUT, "title": placed, **extra}


def empty(title: str, why: str) -> dict[str, Any]:
    """A figure with no data and a note saying why (still drawn: axes and the note)."""
    note = {"text": why, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}
    return {
        "data": [],
        "layout": chart_layout(
            title, annotations=[note], xaxis={"visible": False}, yaxis={"visible": False}
        ),
    }
