"""How batches look in a terminal (rich tables) and to scripts (JSON)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from buttermilk.domain import (
    BatchInfo,
    BatchStatus,
    BatchSummary,
    CombinationProgress,
    JobStatus,
)
from buttermilk.domain.concurrency import ConcurrencyLevel

STATUS_STYLE = {
    BatchStatus.PENDING: "yellow",
    BatchStatus.RUNNING: "cyan",
    BatchStatus.COMPLETED: "green",
    BatchStatus.FAILED: "red",
    BatchStatus.CANCELLED: "magenta",
}


def stdout_console() -> Console:
    # Pipes and files get a fixed width, so that scripts see whole lines.
    return Console(width=None if sys.stdout.isatty() else 160, soft_wrap=not sys.stdout.isatty())


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def concurrency_line(level: ConcurrencyLevel, now: float) -> str:
    """One model's adaptive level: ``<model> @ <endpoint>: 4.5 in flight at most (of 16,
    2 workers)``, and how long the endpoint asked to wait, if it did."""
    workers = f"{level.workers} worker{'s' if level.workers != 1 else ''}"
    line = f"{level.model} @ {level.endpoint}: {level.level:g} in flight at most "
    line += f"(of {level.ceiling}, {workers})"
    if level.paused_until and level.paused_until > now:
        line += f"; paused {level.paused_until - now:.1f}s more (Retry-After)"
    return line


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def rate(value: float | None) -> str:
    return f"{value:.1f}/s" if value else "-"


def money(usd: float | None) -> str:
    """USD, with the digits that matter for small sums: $0.000354, $0.5, $12.30."""
    if usd is None:
        return "-"
    if usd == 0:
        return "$0"
    if abs(usd) < 1:
        return f"${usd:.3g}"
    return f"${usd:,.2f}"


def tokens(count: float | None) -> str:
    """A token count, short: 950, 12.3k, 4.56M."""
    if count is None:
        return "-"
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= size:
            return f"{count / size:.3g}{suffix}"
    return f"{count:.0f}"


def spending(b: BatchInfo) -> str:
    """Tokens and cost of a batch, and its cost cap."""
    cap = b.request.max_cost
    cached = f" ({b.cached_input_tokens:,} cached)" if b.cached_input_tokens else ""
    reasoning = f" ({b.reasoning_tokens:,} reasoning)" if b.reasoning_tokens else ""
    text = (
        f"{b.input_tokens:,} input{cached} + {b.output_tokens:,} output{reasoning} tokens, "
        f"cost {money(b.cost)}"
    )
    return f"{text} (max_cost {money(cap)})" if cap is not None else text


def schema_retries(b: BatchInfo) -> str:
    """What asking again for answers that did not fit a schema cost, beside the batch's
    totals: ``6 calls asked again for an answer that fits the schema: 480 of 1,080 input
    and 60 of 120 output tokens, cost $0.0006 of $0.0013``."""
    calls = b.schema_retry_calls
    text = (
        f"{calls:,} call{'s' if calls != 1 else ''} asked again for an answer that fits the schema"
    )
    if not calls:
        return text
    text += (
        f": {b.schema_retry_input_tokens:,} of {b.input_tokens:,} input and "
        f"{b.schema_retry_output_tokens:,} of {b.output_tokens:,} output tokens"
    )
    if b.schema_retry_cost is not None:
        text += f", cost {money(b.schema_retry_cost)} of {money(b.cost)}"
    return text


def in_flight(s: BatchSummary) -> str | None:
    """How far the running jobs may still carry the cost (None when they cannot):
    ``up to $0.4 more: 4 running jobs x $0.1 (the dearest job so far); cap $0.5, spent
    $0.62, up to $1.02``."""
    more = s.in_flight_cost
    if more is None:
        return None
    b = s.batch
    running = s.counts.get(JobStatus.RUNNING, 0)
    text = (
        f"up to {money(more)} more: {running} running job{'s' if running != 1 else ''} "
        f"x {money(b.max_job_cost)} (the dearest job so far)"
    )
    if b.request.max_cost is not None:
        text += (
            f"; cap {money(b.request.max_cost)}, spent {money(b.cost)}, "
            f"up to {money((b.cost or 0.0) + more)}"
        )
    return text


def status_text(status: BatchStatus) -> Text:
    return Text(status.value, style=STATUS_STYLE[status])


def progress_line(s: BatchSummary) -> str:
    c = s.counts
    return (
        f"{s.done}/{s.batch.total} done ({s.progress:.0%}): "
        f"{c.get(JobStatus.COMPLETED, 0)} completed, "
        f"{c.get(JobStatus.FAILED, 0)} failed, {c.get(JobStatus.RUNNING, 0)} running, "
        f"rate {rate(s.rate)}, eta {duration(s.eta)}"
    )


def status_view(s: BatchSummary) -> Group:
    b = s.batch
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    info.add_row("batch", b.id)
    info.add_row("flow", b.flow)
    info.add_row("status", status_text(b.status))
    info.add_row("progress", f"{s.done}/{b.total} ({s.progress:.1%})")
    info.add_row("rate", rate(s.rate))
    info.add_row("eta", duration(s.eta))
    info.add_row("created", when(b.created_at))
    info.add_row("started", when(b.started_at))
    info.add_row("finished", when(b.finished_at))
    info.add_row("elapsed", duration(s.elapsed))
    if b.input_tokens or b.output_tokens or b.cost is not None or b.request.max_cost is not None:
        info.add_row("spent", spending(b))
    if b.schema_retry_calls or b.input_tokens:
        info.add_row("schema retries", schema_retries(b))
    flight = in_flight(s)
    if flight is not None:
        info.add_row("in flight", flight)
    r = b.request
    info.add_row(
        "options",
        f"concurrency={r.concurrency} error_policy={r.error_policy} max_attempts={r.max_attempts} "
        f"interactive={str(r.interactive).lower()} shuffle={str(r.shuffle).lower()} seed={b.seed}",
    )
    if r.strata is not None:
        groups = ", ".join(f"{key} {count:,}" for key, count in r.strata.items())
        info.add_row("strata", f"{r.stratify} ({r.stratify_mode}): {groups}")
    if b.compares:
        info.add_row("variants", axes_text(b.request.variants))
        info.add_row("repeats", str(b.repeats))
    for down in s.endpoints_down or []:
        workers = f"{down.workers} worker{'s' if down.workers != 1 else ''}"
        line = f"{down.endpoint} down since {when(down.since)} ({workers}): {down.error}"
        info.add_row("endpoint", Text(line + "; its jobs wait", style="red"))
    for level in s.concurrency or []:
        info.add_row("llm calls", concurrency_line(level, s.now))
    if b.error:
        info.add_row("error", Text(b.error, style="red"))
    if not b.published:
        info.add_row(
            "warning", Text("not every job was published: run batch.command=retry", style="yellow")
        )
    counts = Table(box=box.SIMPLE, title="jobs", title_justify="left")
    for status in JobStatus:
        counts.add_column(status.value, justify="right")
    counts.add_row(*(str(s.counts.get(status, 0)) for status in JobStatus))
    parts: list[Any] = [info, counts]
    if b.compares and s.combinations:
        parts.append(combinations_view(s.combinations, list(b.request.variants)))
    if s.common_errors:
        errors = Table(box=box.SIMPLE, title="most common errors", title_justify="left")
        errors.add_column("count", justify="right")
        errors.add_column("type")
        errors.add_column("message", overflow="fold")
        for e in s.common_errors:
            errors.add_row(str(e.count), e.error_type, e.error_message)
        parts.append(errors)
    return Group(*parts)


def value_text(value: Any) -> str:
    """An axis value as its combination's key shows it: text as is, the rest as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def axes_text(axes: dict[str, list[Any]]) -> str:
    return "; ".join(f"{name}: {', '.join(map(value_text, vals))}" for name, vals in axes.items())


def combinations_view(found: Sequence[CombinationProgress], axes: Sequence[str]) -> Table:
    """One row per combination: its key, its value on each axis, its progress and counts."""
    table = Table(box=box.SIMPLE, title="combinations", title_justify="left")
    table.add_column("variant")
    for axis in axes:
        table.add_column(axis)
    table.add_column("done/total", justify="right")
    table.add_column("progress", justify="right")
    for status in JobStatus:
        table.add_column(status.value, justify="right")
    for c in found:
        table.add_row(
            c.variant,
            *(value_text(c.values[axis]) if axis in c.values else "-" for axis in axes),
            f"{c.done}/{c.total}",
            f"{c.progress:.0%}",
            *(str(c.counts.get(status, 0)) for status in JobStatus),
        )
    return table


def grid_text(b: BatchInfo) -> str:
    """Combinations x repeats of a batch, short (``6x3``); ``-`` for a plain batch."""
    return f"{b.combination_count}x{b.repeats}" if b.compares else "-"


def list_view(summaries: Sequence[BatchSummary]) -> Table | Text:
    if not summaries:
        return Text("no batches yet: create one with ui=batch flow=NAME")
    table = Table(box=box.SIMPLE_HEAD)
    for name, justify in [
        ("batch", "left"),
        ("flow", "left"),
        ("status", "left"),
        ("grid", "right"),
        ("progress", "right"),
        ("done/total", "right"),
        ("failed", "right"),
        ("rate", "right"),
        ("tokens", "right"),
        ("cost", "right"),
        ("created", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in summaries:
        table.add_row(
            s.batch.id,
            s.batch.flow,
            status_text(s.batch.status),
            grid_text(s.batch),
            f"{s.progress:.0%}",
            f"{s.done}/{s.batch.total}",
            str(s.counts.get(JobStatus.FAILED, 0)),
            rate(s.rate),
            tokens(s.batch.input_tokens + s.batch.output_tokens),
            money(s.batch.cost),
            when(s.batch.created_at),
        )
    return table
