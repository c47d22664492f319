"""A local HTTP server for a test: a threaded ``http.server`` on a free port."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving(
    handler: type[http.server.BaseHTTPRequestHandler] | object,
) -> Iterator[http.server.ThreadingHTTPServer]:
    """``handler`` (a request handler class, or a factory such as a ``functools.partial``
    of one) served on 127.0.0.1 at a free port for the block; the server is shut down and
    its thread joined after it. Its port: ``server.server_address[1]``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
