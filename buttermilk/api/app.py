"""``create_app``: the FastAPI application over one BatchService."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Depends, FastAPI

from buttermilk import __version__
from buttermilk.api import dashboard, docs, job_routes, report_routes, routes
from buttermilk.api.auth import require_token
from buttermilk.api.errors import documented, install_error_handlers
from buttermilk.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from buttermilk.batch.service import BatchService

DESCRIPTION = """\
Create, follow, cancel and read batches of a Buttermilk flow.

Every error answers with one shape: `{"error": {"code", "message", "field"}}`.
When the server has a token, every `/api` request needs `Authorization: Bearer <token>`.
"""


def create_app(
    service: BatchService,
    *,
    defaults: Mapping[str, Any] | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    check_endpoints: bool = False,
) -> FastAPI:
    """The API (``/api``, docs at ``/docs``) and the dashboard (``/``) over ``service``.

    ``defaults``: BatchRequest fields for what a create body leaves out (the server's
    ``batch.*`` settings). ``token``: when set, every ``/api`` request must carry it.
    ``max_body_bytes``: larger request bodies are refused with 413.
    ``check_endpoints``: a create first checks the flow's LLM endpoints, and answers 503
    naming one that cannot be reached (``batch.check_endpoints``).
    """
    app = FastAPI(
        title="Buttermilk batch",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,  # served by docs.py from local files
        redoc_url=None,
    )
    app.state.service = service
    app.state.defaults = dict(defaults or {})
    app.state.check_endpoints = check_endpoints
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    for router in (routes.router, job_routes.router, report_routes.router):
        if token:
            app.include_router(
                router, dependencies=[Depends(require_token(token))], responses=documented(401)
            )
        else:
            app.include_router(router)
    docs.install_docs(app)
    dashboard.install_dashboard(app)
    return app
