"""The terminal a person answers review questions at (interactive workers)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import anyio
import orjson
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

from buttermilk.domain.variants import DEFAULT_KEY
from buttermilk.flows.agents import current_job
from buttermilk.records import Record


def job_title(record: Record) -> str:
    """``record r1``, with the job's combination and repeat where a batch compares them, so
    the person answering knows which of a record's jobs is asking."""
    title = f"record {record.record_id}"
    try:
        job = current_job()
    except LookupError:
        return title
    shown = [f"combination {job.variant}"] if job.variant != DEFAULT_KEY else []
    if job.repeat:
        shown.append(f"repeat {job.repeat}")
    return f"{title} ({', '.join(shown)})" if shown else title


class TerminalConsole:
    """Asks one question at a time on stdin/stdout, whatever the number of running jobs."""

    def __init__(self) -> None:
        self._lock: anyio.Lock | None = None
        self._out = Console(highlight=False)

    async def ask(
        self, record: Record, outputs: Mapping[str, Any], question: str, choices: list[str]
    ) -> str:
        if self._lock is None:
            self._lock = anyio.Lock()
        title = job_title(record)
        async with self._lock:
            return await anyio.to_thread.run_sync(
                self._ask, record, title, outputs, question, choices
            )

    def _ask(
        self,
        record: Record,
        title: str,
        outputs: Mapping[str, Any],
        question: str,
        choices: list[str],
    ) -> str:
        out = self._out
        out.print(Panel(str(record.content), title=title, title_align="left"))
        if record.metadata:
            out.print(f"metadata: {orjson.dumps(record.metadata).decode()}")
        if outputs:
            text = orjson.dumps(dict(outputs), option=orjson.OPT_INDENT_2).decode()
            out.print(Syntax(text, "json", theme="ansi_dark", background_color="default"))
        options = "  ".join(f"{i}) {c}" for i, c in enumerate(choices, start=1))
        lowered = {c.lower(): c for c in choices}
        while True:
            out.print(f"[bold]{question}[/bold]  {options}")
            sys.stdout.write(f"answer [1-{len(choices)}]: ")
            sys.stdout.flush()
            line = sys.stdin.readline()
            if not line:
                raise EOFError("the console closed while waiting for an answer")
            answer = line.strip()
            if answer.isdigit() and 1 <= int(answer) <= len(choices):
                return choices[int(answer) - 1]
            if answer.lower() in lowered:
                return lowered[answer.lower()]
            out.print(f"[red]{answer!r} is not one of the choices[/red]")
