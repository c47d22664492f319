"""Which errors of an OpenAI-compatible endpoint are worth retrying, and how long to wait.

Transient: 408, 409, 425, 429, every 5xx, timeouts, failed connections, and responses that
are not valid chat completions. Permanent: every other 4xx (400, 401, 403, 404, 422 ...).
The wait honours ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP date), else
grows exponentially with jitter; every wait is capped.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import openai

from buttermilk.errors import AgentError, PermanentError

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


def classify(exc: BaseException, now: float | None = None) -> Failure | None:
    """What a failed call means, or None when ``exc`` is not an endpoint error."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        transient = status in TRANSIENT_STATUSES or status >= 500
        wait = parse_retry_after(exc.response.headers, now) if transient else None
        detail = _server_message(exc.body)
        reason = f"HTTP {status}" + (f": {detail}" if detail else "")
        return Failure(transient, reason, status, wait)
    refused = _refused_connection(exc) if isinstance(exc, openai.APIConnectionError) else None
    if refused is not None:
        return Failure(True, f"connection failed ({_one_line(str(refused), 200)})")
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return Failure(True, "the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        return Failure(True, f"connection failed ({_one_line(str(cause or exc), 200)})")
    if isinstance(exc, openai.APIResponseValidationError):
        return Failure(True, "the response is not a valid chat completion")
    return None


def _refused_connection(exc: BaseException) -> OSError | None:
    """The socket error under ``exc``, if the call failed to connect rather than timed out.

    The aiohttp transport reports a refused connection as a connect *timeout* (its error
    map), so the chain of causes is what tells them apart.
    """
    seen: BaseException | None = exc
    for _ in range(10):  # a chain of causes is short; never loop on a cycle
        if seen is None:
            return None
        if isinstance(seen, OSError) and not isinstance(seen, TimeoutError):
            return seen
        seen = seen.__cause__ or seen.__context__
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
                return _one_line(str(message), 300)
        elif error:
            return _one_line(str(error), 300)
        return ""
    return _one_line(str(body), 300) if body else ""


def _one_line(text: str, limit: int) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
