"""Bearer-token check for every ``/api`` route, when the server has a token."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

Check = Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_bearer = HTTPBearer(
    auto_error=False,
    description="The server's api.token (or BUTTERMILK_API_TOKEN), as Authorization: Bearer.",
)


def require_token(token: str) -> Check:
    """A dependency that answers 401 unless the request carries ``Bearer <token>``."""
    expected = token.encode()

    async def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        if credentials is None:
            raise HTTPException(
                401,
                "this server requires a token: send the header Authorization: Bearer <token>",
                headers=_CHALLENGE,
            )
        if not secrets.compare_digest(credentials.credentials.encode(), expected):
            raise HTTPException(401, "the bearer token is not valid", headers=_CHALLENGE)

    return check
