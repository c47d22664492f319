"""``BodyLimit``: refuse request bodies over a size cap with 413, before they are read whole.

One create with tens of MB of ``flow_parameters`` would be stored in the batch and sent
back by every later read of it, so the cap stops it at the door. A declared
``Content-Length`` over the cap is refused before any byte of the body is read; a body
sent without one (chunked) is counted as it arrives and refused once it passes the cap.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from buttermilk.api.errors import error_response

DEFAULT_MAX_BODY_BYTES = 1_048_576  # 1 MiB: a create body is a few hundred bytes


class BodyTooLargeError(HTTPException):
    """Raised (from ``receive``) when a streamed request body passes the cap."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large(max_bytes))


def too_large(max_bytes: int) -> str:
    return (
        f"the request body is larger than {max_bytes} bytes, the most this server "
        "accepts (api.max_body_bytes)"
    )


class BodyLimit:
    """Pure ASGI middleware: 413 ``payload_too_large`` for bodies over ``max_bytes``.

    ``max_bytes``: the largest body accepted, in bytes (>= 1).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            # Connection: close, so the server does not wait to read the body it refused.
            response = error_response(
                413, "payload_too_large", too_large(self.max_bytes), Connection="close"
            )
            await response(scope, receive, send)
            return

        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged and
                    # is answered by the app's handler in the API's error shape.
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counted, send)
