"""The dashboard: one static page (HTML, CSS, a little JavaScript) that reads ``/api``.

The page itself holds no data, so it is served without a token (and so is plotly.js, from
the installed ``plotly`` package, for its charts); when the server has one,
the page asks for it once and sends it with every ``/api`` call.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PAGE = STATIC / "index.html"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def batches_page() -> FileResponse:
    return FileResponse(PAGE)


@router.get("/batches/{batch_id}")
async def batch_page(batch_id: str) -> FileResponse:
    return FileResponse(PAGE)


@router.get("/vendor/plotly.min.js")
async def plotly_js() -> FileResponse:
    """plotly.js from the installed ``plotly`` package: the charts need no CDN."""
    from buttermilk.evaluation.charts import plotly_js_path

    return FileResponse(
        plotly_js_path(),
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=86400"},
    )


def install_dashboard(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
