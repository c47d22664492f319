"""One JSON error shape for every failure: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from buttermilk.api.schemas import api_field
from buttermilk.errors import (
    AmbiguousBatchIdError,
    BatchStateError,
    ButtermilkError,
    EndpointUnreachableError,
    QueueError,
    SourceUnavailableError,
    StoreError,
    UnknownBatchError,
    UsageError,
)

log = logging.getLogger(__name__)

BODY_HINT = "send a JSON object with Content-Type: application/json"
MAX_SHOWN = 120  # characters of a rejected value quoted in a message

# Most specific first: the first matching type decides the status and code.
STATUS_OF_ERROR: tuple[tuple[type[ButtermilkError], int, str], ...] = (
    (AmbiguousBatchIdError, 400, "ambiguous_id"),
    (UnknownBatchError, 404, "not_found"),
    (BatchStateError, 409, "conflict"),
    (UsageError, 400, "bad_request"),
    (QueueError, 503, "unavailable"),
    (EndpointUnreachableError, 503, "unavailable"),
    (StoreError, 503, "unavailable"),
    (SourceUnavailableError, 503, "unavailable"),
)

# The endpoint check's hint names command-line options; through the API they are these.
API_ENDPOINT_HINT = (
    " (through this API: a base_url axis is the create body's variants, "
    '{"AGENT.base_url": [URL]}; the check is the server\'s batch.check_endpoints option)'
)

# Codes that must not change with Python's HTTP phrases (413 was renamed in 3.13).
CODE_OF_STATUS = {413: "payload_too_large"}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class FieldError(UsageError):
    """Raised when one field of a request body cannot be used (answered with 422)."""

    def __init__(self, field: str, message: str, code: str = "invalid") -> None:
        self.field = field
        self.code = code
        super().__init__(message)


def error_response(
    status: int, code: str, message: str, field: str | None = None, **headers: str
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for its OpenAPI docs."""
    return {s: {"model": ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}


def _shown(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _field(loc: Sequence[Any]) -> str | None:
    """``("body", "concurrency")`` -> ``concurrency``; None for the body as a whole."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or None


def as_body_errors(exc: ValidationError) -> RequestValidationError:
    """BatchRequest's errors as errors of the create body, under the API's field names."""
    errors = [
        {**error, "loc": ("body", api_field(str(error["loc"][0])), *error["loc"][1:])}
        if error["loc"]
        else {**error, "loc": ("body",)}
        for error in exc.errors()
    ]
    return RequestValidationError(errors)


def _problem(error: Mapping[str, Any]) -> tuple[str | None, str]:
    """The API field an error is about (None: the whole body) and what is wrong with it."""
    kind = error["type"]
    if kind == "json_invalid":
        detail = error.get("ctx", {}).get("error", "")
        return None, f"the body is not valid JSON ({detail}): {BODY_HINT}"
    field = _field(error["loc"])
    reason = str(error["msg"]).removeprefix("Value error, ")
    reason = reason[:1].lower() + reason[1:]
    if field is None:
        if kind == "missing":
            return None, f"the body is missing: {BODY_HINT}"
        return None, f"the body is not a JSON object ({reason}): {BODY_HINT}"
    if kind == "missing":
        return field, f"{field} is required"
    if kind == "extra_forbidden":
        return field, f"{field} is not a known field"
    if field == "flow_parameters":  # BatchRequest names a _target_ key's path by its own name
        reason = reason.replace("(found at parameters", "(found at flow_parameters")
    return field, f"{field}={_shown(error.get('input'))} is not allowed: {reason}"


def validation_response(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    if not errors:
        return error_response(422, "invalid", "the request is not valid")
    field, message = _problem(errors[0])
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return error_response(422, "invalid", message, field)


async def _request_invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_response(exc.errors())


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = CODE_OF_STATUS.get(exc.status_code) or (
        HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    )
    return error_response(exc.status_code, code, str(exc.detail), **(exc.headers or {}))


async def _buttermilk_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ButtermilkError)
    if isinstance(exc, FieldError):
        return error_response(422, exc.code, str(exc), exc.field)
    for kind, status, code in STATUS_OF_ERROR:
        if isinstance(exc, kind):
            if status >= 500:  # the server's own trouble (a service down): its log says so
                log.error("%s %s failed: %s", request.method, request.url.path, exc)
            message = str(exc)
            if isinstance(exc, EndpointUnreachableError):
                message += API_ENDPOINT_HINT
            return error_response(status, code, message)
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(500, "internal_error", str(exc))


# What a store call raises when the database cannot be reached or refuses the call, before
# (or instead of) the store turning it into a StoreError: SQLAlchemy's wrappers of the
# driver's errors, its pool's timeout, and psycopg's own errors from raw-driver fast paths.
STORE_FAILURES: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
    psycopg.Error,
)
# A value of the request the database cannot hold or compare (PostgreSQL: a NUL character
# in text, a number out of its range): the client's to change, not a reason to retry.
VALUE_FAILURES: tuple[type[Exception], ...] = (sa_exc.DataError, psycopg.DataError)


def _driver_reason(exc: Exception) -> str:
    """The driver's own message, first line only: later lines (psycopg's DETAIL) and
    SQLAlchemy's wrapper text carry the statement and the values bound to it."""
    reason = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
    if isinstance(reason, sa_exc.StatementError):  # no driver error to quote
        return type(reason).__name__
    lines = str(reason).strip().splitlines()
    return (lines[0].strip() if lines else "") or type(reason).__name__


def _store_url(request: Request) -> str:
    service = getattr(request.app.state, "service", None)
    store = getattr(service, "store", None)
    return str(getattr(store, "safe_url", "(unknown)"))


async def _store_failed(request: Request, exc: Exception) -> JSONResponse:
    reason = _driver_reason(exc)
    if isinstance(exc, VALUE_FAILURES):
        message = f"the batch store cannot take a value of this request: {reason}"
        return error_response(400, "bad_request", message)
    message = f"cannot reach the batch store at {_store_url(request)}: {reason}"
    log.error("%s %s failed: %s", request.method, request.url.path, message)
    return error_response(503, "unavailable", message)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this answer, so the server logs its traceback.
    return error_response(500, "internal_error", "internal error: see the server's log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ButtermilkError, _buttermilk_error)
    for kind in STORE_FAILURES:
        app.add_exception_handler(kind, _store_failed)
    app.add_exception_handler(Exception, _unexpected)
