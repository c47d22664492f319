"""How an estimate looks in a terminal: a row per LLM agent, or per combination of a grid.

Calls, input tokens and input cost show a range (``8-24``): one call per record up to
``schema_retries + 1``; the max columns take every retry.

A batch of one combination run once shows each LLM agent's calls, tokens and cost; a grid
(several combinations, or repeats) shows a row per combination with its axis values, so a
model axis shows what each model would cost. Both end with the total and what the
estimate leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from buttermilk.runner.render import money

if TYPE_CHECKING:
    from buttermilk.llm.estimate_rows import Estimate

FIGURES = [
    ("calls", "calls"),
    ("input tokens", "input_tokens"),
    ("input cost", "input_cost"),
    ("max output tokens", "max_output_tokens"),
    ("max cost", "max_cost"),
    ("unrenderable", "unrenderable"),
]


def _figure(key: str, value: Any) -> str:
    if key.endswith("cost"):
        return money(value)
    return "-" if value is None else f"{value:,}"


def _figures(row: Mapping[str, Any]) -> list[str]:
    """Each figure of ``row``; calls, input tokens and input cost as a range (``8-24``)
    when schema retries may add to them."""
    shown = []
    for _, key in FIGURES:
        low = _figure(key, row[key])
        high = _figure(key, row.get(f"max_{key}", row[key]))
        shown.append(low if high == low else f"{low}-{high}")
    return shown


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _table(first: list[str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for name in first:
        table.add_column(name)
    for name, _ in FIGURES:
        table.add_column(name, justify="right")
    return table


def _by_agent(e: Estimate) -> Table:
    table = _table(["agent", "model"])
    for row in e.agents():
        table.add_row(row["agent"], row["model"], *_figures(row))
    table.add_section()
    table.add_row("total", "", *_figures(e.total()))
    return table


def _by_combination(e: Estimate) -> Table:
    axes = list(e.variants)
    models = not any(axis.endswith(".model") for axis in axes)  # else the axis shows them
    table = _table(["combination", *axes, *(["models"] if models else [])])
    for c in e.combinations:
        values = [_shown(c.values.get(axis, "")) for axis in axes]
        if models:
            values.append(", ".join(c.models))
        table.add_row(c.variant, *values, *_figures(c.total()))
    table.add_section()
    table.add_row("total", *[""] * (len(axes) + models), *_figures(e.total()))
    return table


def estimate_view(e: Estimate) -> Group:
    """Calls, input tokens and cost per LLM agent (or per combination of a grid) and in
    total, and what they leave out."""
    planned = f"{e.records:,} records"
    if e.is_grid:
        combinations = f"{len(e.combinations):,} combination{'s' * (len(e.combinations) > 1)}"
        repeats = f"{e.repeats:,} repeat{'s' * (e.repeats > 1)}"
        planned += f" x {combinations} x {repeats} = {e.jobs:,} jobs"
    head = Text(
        f"estimate for flow {e.flow}: {planned} "
        f"(shuffle={str(e.shuffle).lower()} seed={e.seed} max_records={e.max_records})"
    )
    if not any(c.agents for c in e.combinations):
        return Group(head, Text("the flow has no LLM agent: nothing to estimate"))
    parts: list[Any] = [head, _by_combination(e) if e.is_grid else _by_agent(e)]
    for row in e.agents():
        if row["problem"]:
            problem = f"{row['unrenderable']:,} prompt(s) cannot be rendered, e.g. {row['problem']}"
            parts.append(Text(f"{row['agent']}: {problem}"))
    if e.other_agents:
        parts.append(Text(f"not LLM agents (no estimate): {', '.join(e.other_agents)}"))
    parts.extend(Text(f"note: {note}") for note in e.notes())
    return Group(*parts)
