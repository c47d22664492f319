"""Every error Buttermilk raises on purpose, rooted in one base class.

Errors that subclass :class:`UsageError` are the user's to fix (bad options, unknown
names, missing files): the CLI prints their message on one line and exits with code 2.
"""

from __future__ import annotations

import re


class ButtermilkError(Exception):
    """Raised for any failure Buttermilk detects itself (the root of this hierarchy)."""


class UsageError(ButtermilkError, ValueError):
    """Raised when a request, option or file given by the user cannot be used as it is."""


class InvalidOptionError(UsageError):
    """Raised when an option has a value outside what it allows."""

    def __init__(self, option: str, value: object, allowed: str) -> None:
        self.option = option
        self.value = value
        self.allowed = allowed
        super().__init__(f"{option}={value!r} is not allowed: {allowed}")


class VariantError(UsageError):
    """Raised when a batch's axes (``variants``) cannot be used with its flow: an agent
    or option the flow lacks, a value its agent refuses, or a grid too large."""


class UnknownFlowError(UsageError, LookupError):
    """Raised when a flow name matches no flow config."""

    def __init__(self, name: str | None, known: list[str]) -> None:
        self.name = name
        self.known = known
        listed = ", ".join(known) if known else "none found"
        if name is None:
            msg = f"no flow given: set flow=NAME (known flows: {listed})"
        else:
            msg = f"unknown flow {name!r}: known flows are {listed}"
        super().__init__(msg)


class UnknownBatchError(UsageError, LookupError):
    """Raised when a batch id (or id prefix) matches no batch, or more than one."""


class AmbiguousBatchIdError(UnknownBatchError):
    """Raised when a batch id prefix matches more than one batch."""


class DataSourceError(UsageError):
    """Raised when a flow's data source is missing, unreadable or inconsistent."""


class DuplicateRecordIdError(DataSourceError):
    """Raised when two records of one flow's data sources share a record id."""


class EvaluationError(UsageError):
    """Raised when a report cannot be made as asked: nothing declared to score, a label
    path naming no agent of the flow, batches of different flows, labels the kind cannot
    score (ordinal text without ``categories``)."""


class MissingPackageError(DataSourceError):
    """Raised when a source needs an optional package that is not installed (the error
    names the extra that brings it: ``pip install 'buttermilk-batch[gcs]'``)."""


class SourceUnavailableError(ButtermilkError):
    """Raised when a data source's service could not be reached (a host refusing
    connections, a name that does not resolve, a database down): exit 1, not 2."""


class BatchStateError(UsageError):
    """Raised when an operation does not fit the batch's current status."""


class QueueError(ButtermilkError):
    """Raised when the job queue cannot be reached or refuses an operation."""


class StoreError(ButtermilkError):
    """Raised when the batch store cannot be reached or refuses an operation."""


class EndpointUnreachableError(ButtermilkError):
    """Raised by ``create`` when an LLM endpoint its flow uses cannot be reached (or refuses
    its key): nothing was created (the CLI exits 1; the API answers 503)."""


class StoreValueError(StoreError, UsageError):
    """Raised when the batch store cannot hold or compare a value it was given (PostgreSQL:
    a NUL character in text, a number out of its column's range): retrying cannot help."""


class AgentError(ButtermilkError):
    """Raised by an agent for a failure that is worth retrying."""


class PermanentError(AgentError):
    """Raised by an agent when retrying the record cannot help (bad input, refused request).

    The job fails at once instead of spending its remaining attempts.
    """


class JobTimeoutError(AgentError, TimeoutError):
    """Raised when a job runs longer than its batch's ``job_timeout``."""


# What says nothing to a reader: aiohttp's note of the default TLS setting in a failed
# connection ("Cannot connect to host h:1 ssl:default [...]"), and the traceback a server
# (llama-cpp-python's) puts in its error message after the error itself.
_NOISE = (
    re.compile(r" ssl:(?:default|None|True|False)\b"),
    re.compile(r" ?(?:Traceback \(most|File \").*"),
)


def one_line(text: str, limit: int = 300) -> str:
    """A library's message ``text`` for one of ours: on one line, without the noise above,
    cut to ``limit`` characters (``...`` at the end when cut)."""
    flat = re.sub(r"\s+", " ", text).strip()
    for noise in _NOISE:
        flat = noise.sub("", flat)
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
