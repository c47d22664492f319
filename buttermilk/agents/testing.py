"""Agents for tests and benchmarks: do nothing, wait, or fail on chosen records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from buttermilk.errors import AgentError, PermanentError
from buttermilk.flows.agents import current_job
from buttermilk.records import Record


async def noop(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Return at once: measures the batch machinery's own overhead."""
    return {"ok": True}


class Sleep:
    """Wait ``seconds`` (or ``parameters["sleep"]`` when set), then answer."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds

    async def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        seconds = float(parameters.get("sleep", self.seconds))
        await anyio.sleep(seconds)
        return {"slept": seconds}


class FailOn:
    """Raise on the chosen records.

    ``records``: record ids to fail on (``parameters["fail_on"]`` adds more).
    ``times``: fail only the first N attempts, then succeed (null: always fail).
    ``permanent``: raise :class:`PermanentError`, which skips the remaining attempts.
    ``parameters["fail_while"]``: a file path; fail only while that file exists (lets a
    test "fix" a record between a run and its retry).
    """

    def __init__(
        self,
        records: list[str] | None = None,
        times: int | None = None,
        permanent: bool = False,
        message: str = "failing on purpose",
    ) -> None:
        self.records = set(records or [])
        self.times = times
        self.permanent = permanent
        self.message = message

    async def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        chosen = self.records | set(parameters.get("fail_on", []))
        switch = parameters.get("fail_while")
        if record.record_id in chosen and (switch is None or await anyio.Path(switch).exists()):
            attempt = current_job().attempt
            if self.times is None or attempt <= self.times:
                error = PermanentError if self.permanent else AgentError
                raise error(f"{self.message} (record {record.record_id}, attempt {attempt})")
        return {"failed": False}


def tally(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Append the record id to the file ``parameters["tally_file"]``: counts runs per record."""
    path = parameters.get("tally_file")
    if path:
        with open(path, "a") as fh:  # one short append per run: atomic on local files
            fh.write(f"{record.record_id}\n")
    return {"tallied": bool(path)}


def tally_jobs(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Append the job's key (record id, combination key, repeat) to the file
    ``parameters["tally_file"]``: counts runs per job of a grid."""
    path = parameters.get("tally_file")
    job = current_job()
    if path:
        with open(path, "a") as fh:  # one short append per run: atomic on local files
            fh.write(f"{record.record_id} {job.variant} {job.repeat}\n")
    return {"variant": job.variant, "repeat": job.repeat}


def echo(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the record's values as the agent received them, with their Python types: tests
    compare them with what the source file held."""
    fields = {"content": record.content, "ground_truth": record.ground_truth, **record.metadata}
    return {
        "record_id": record.record_id,
        "content": record.content,
        "ground_truth": record.ground_truth,
        "metadata": dict(record.metadata),
        "types": {name: type(value).__name__ for name, value in fields.items()},
    }


class Tag:
    """Return its ``label`` option, the ``criteria`` parameter, and its job's combination
    and repeat (or fail, with ``fail``): tests check that each combination's values reach
    its agents."""

    def __init__(self, label: str = "", fail: bool = False) -> None:
        self.label = label
        self.fail = fail

    async def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        job = current_job()
        if self.fail:
            raise PermanentError(f"told to fail (variant {job.variant})")
        return {
            "label": self.label,
            "criteria": parameters.get("criteria"),
            "variant": job.variant,
            "repeat": job.repeat,
            "agent_id": id(self),
        }


NO_LABEL = "$no-label"
FAIL = "$fail"


def scripted(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """Answer what the record scripts for this job: ``metadata["answers"][VARIANT][REPEAT]``
    as ``{"label": value}``. The value ``"$fail"`` fails the job (permanently) and
    ``"$no-label"`` answers without a label; a job the record does not script answers
    ``{}``. Known-answer tests of reports choose every job's answer this way."""
    job = current_job()
    script = record.metadata.get("answers")
    answers = script.get(job.variant) if isinstance(script, Mapping) else None
    if not isinstance(answers, list) or job.repeat >= len(answers):
        return {}
    chosen = answers[job.repeat]
    if chosen == FAIL:
        raise PermanentError(f"scripted to fail (record {record.record_id}, {job.variant})")
    if chosen == NO_LABEL:
        return {"other": 1}
    return {"label": chosen}
