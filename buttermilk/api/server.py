"""``ui=api``: serve the API and dashboard with uvicorn on ``api.host``:``api.port``."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import uvicorn

from buttermilk.api.app import create_app
from buttermilk.errors import UsageError
from buttermilk.flows.catalog import FlowCatalog
from buttermilk.runner.commands import EXIT_OK, open_app
from buttermilk.runner.settings import AppSettings

log = logging.getLogger("buttermilk")

SHUTDOWN_GRACE = 5  # seconds open requests (a long download) get on SIGINT/SIGTERM


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse to serve an address others can reach without a token."""
    if token is None and not is_loopback(host):
        raise UsageError(
            f"api.host={host} is reachable from other machines, so the API needs a token: "
            "set api.token=... (or BUTTERMILK_API_TOKEN), or serve on api.host=127.0.0.1"
        )


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family)
    except OSError as exc:
        raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: ``serve_api`` watches the signals."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _stop_on_signal(server: uvicorn.Server) -> None:
    """First SIGINT/SIGTERM: finish open requests, then stop; second: stop at once."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if server.should_exit:
                log.warning("%s again: stopping now", name)
                server.force_exit = True
            else:
                log.info("%s: stopping the API server", name)
                server.should_exit = True


async def serve_api(settings: AppSettings, flows: FlowCatalog) -> int:
    """Serve until SIGINT/SIGTERM; UsageError (exit 2) when it cannot start as configured."""
    api = settings.api
    token = api.token or None
    check_binding(api.host, token)
    settings.batch.to_request("any")  # the create defaults (batch.*) must be valid themselves
    sock = listen(api.host, api.port)
    try:
        async with open_app(settings, flows) as app:
            web = create_app(
                app.service,
                defaults=settings.batch.request,
                token=token,
                max_body_bytes=api.max_body_bytes,
                check_endpoints=settings.batch.check_endpoints,
            )
            config = uvicorn.Config(
                web,
                log_config=None,
                lifespan="off",
                server_header=False,
                timeout_graceful_shutdown=SHUTDOWN_GRACE,
            )
            server = _Server(config)
            host, port = sock.getsockname()[:2]
            log.info(
                "serving the API on http://%s:%d (dashboard at /, docs at /docs; %s)",
                f"[{host}]" if ":" in host else host,
                port,
                "a bearer token is required" if token else "no token is set",
            )
            async with anyio.create_task_group() as tg:
                tg.start_soon(_stop_on_signal, server)
                await server.serve(sockets=[sock])
                tg.cancel_scope.cancel()
    finally:
        sock.close()
    return EXIT_OK
