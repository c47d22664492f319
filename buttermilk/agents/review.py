"""Ask a person at the console to judge each record (in interactive batches)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from buttermilk.errors import UsageError
from buttermilk.flows.agents import current_job
from buttermilk.records import Record


class ConsoleReview:
    """Show the record and earlier outputs, ask ``question``, store the chosen answer.

    In a batch that is not interactive no one is there to ask: the output says the review
    was skipped, and the job goes on.
    """

    def __init__(self, question: str, choices: list[str]) -> None:
        if len(choices) < 2:
            raise UsageError(f"ConsoleReview needs at least two choices, got {choices!r}")
        self.question = question
        self.choices = [str(c) for c in choices]

    async def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        job = current_job()
        if not job.interactive or job.console is None:
            return {"skipped": True, "reason": "batch is not interactive"}
        answer = await job.console.ask(record, outputs, self.question, self.choices)
        return {"skipped": False, "question": self.question, "answer": answer}
