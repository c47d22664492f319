"""One JSON error shape for every failure: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException

from buttermilk.api.schemas import api_field
from buttermilk.errors import (
    AmbiguousBatchIdError,
    BatchStateError,
    ButtermilkError,
    QueueError,
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
    (StoreError, 503, "unavailable"),
)


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
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), **(exc.headers or {}))


async def _buttermilk_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ButtermilkError)
    if isinstance(exc, FieldError):
        return error_response(422, exc.code, str(exc), exc.field)
    for kind, status, code in STATUS_OF_ERROR:
        if isinstance(exc, kind):
            return error_response(status, code, str(exc))
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return error_response(500, "internal_error", str(exc))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this answer, so the server logs its traceback.
    return error_response(500, "internal_error", "internal error: see the server's log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ButtermilkError, _buttermilk_error)
    app.add_exception_handler(Exception, _unexpected)
