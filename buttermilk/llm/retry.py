"""Which errors of an OpenAI-compatible endpoint are worth retrying, and how long to wait.

Transient: 408, 409, 425, 429, every 5xx, timeouts, failed connections, and responses that
are not valid chat completions (see :mod:`buttermilk.llm.completion`). Permanent: every
other 4xx (400, 401, 403, 404, 422 ...).
The wait honours ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP date), else
grows exponentially with jitter; every wait is capped.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from buttermilk.errors import AgentError, PermanentError, one_line

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})


class LLMUnavailableError(AgentError):
    """Raised when the endpoint kept failing with transient errors (rate limits, server
    errors, timeouts, lost connections) through ``max_retries`` retries; the batch may
    try the job again later."""


class LLMRefusedError(PermanentError):
    """Raised when the endpoint refuses the request itself (400, 401, 403, 404, 422 ...):
    sending it again cannot help."""


@dataclass(frozen=True)
class Failure:
    """One failed call, classified."""

    transient: bool
    reason: str  # one line, from the status and the server's message
    status: int | None = None
    retry_after: float | None = None  # seconds the server asked us to wait
    names_response_format: bool = False  # the error body names the request's response_format
    connection: bool = False  # the connection failed or broke (no HTTP answer, no timeout)

    @property
    def outage(self) -> bool:
        """Whether it says the endpoint is away: a transient failed connection or 5xx (not a
        timeout, a 429, or a 5xx that names a refused request and so is not transient)."""
        return (
            self.transient
            and not self.names_response_format
            and (self.connection or (self.status or 0) >= 500)
        )


def status_failure(
    status: int, headers: Mapping[str, str], body: Any, now: float | None = None
) -> Failure:
    """What an answer with an error ``status`` means; ``body`` is its parsed JSON (or text)."""
    transient = status in TRANSIENT_STATUSES or status >= 500
    wait = parse_retry_after(headers, now) if transient else None
    detail = _server_message(body)
    reason = f"HTTP {status}" + (f": {detail}" if detail else "")
    return Failure(transient, reason, status, wait, "response_format" in str(body))


def classify(exc: BaseException) -> Failure | None:
    """What a call that raised ``exc`` means, or None when it is not an endpoint error.

    Timeouts (of the call, or of aiohttp's socket reads) are told apart from connections
    that failed or broke (refused, reset, closed mid-answer, a bad answer's framing).
    """
    if isinstance(exc, TimeoutError):  # aiohttp's own timeouts subclass it too
        return Failure(True, "the request timed out")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Failure(
            True,
            f"connection failed ({one_line(str(exc) or type(exc).__name__, 200)})",
            connection=True,
        )
    return None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff(
    retry: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...).

    The server's ``retry_after`` when given, else ``base * 2**(retry-1)`` with jitter
    (between half and all of it); never more than ``cap``.
    """
    if retry_after is not None:
        return min(retry_after, cap)
    ceiling = min(base * 2.0 ** (retry - 1), cap)
    jitter: float = (rng or random).random()
    return ceiling * (0.5 + jitter / 2)


def _server_message(body: Any) -> str:
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            message = error.get("message") or error.get("detail")
            if message:
                return one_line(str(message), 300)
        elif error:
            return one_line(str(error), 300)
        return ""
    return one_line(str(body), 300) if body else ""
