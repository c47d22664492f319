"""The HTTP API and the live dashboard (``ui=api``), a thin layer over BatchService."""

from buttermilk.api.app import create_app

__all__ = ["create_app"]
