"""Ending the CLI process once its command is done: at once, and even when an agent's
thread is not.

Python cannot stop a thread. A synchronous agent runs in a worker thread; when its job
times out or is cancelled, the worker stops waiting for it, fails or releases the job and
goes on, but the thread runs on, and the interpreter waits for every such thread before
it exits: a worker whose agent hangs would never end. Once the command has stored its
outcomes and closed the store and queue, nothing that thread could still do is kept, so
the process exits without it and says so.

Nor does the process wait for the interpreter's own teardown, which frees every module
and object one by one: 0.1-0.2 s after a command that imported SQLAlchemy, Hydra and
aiohttp (measured on 2 cores: `list` took 0.69 s, 0.125 s of it after its last line), for
nothing the command keeps. The exit handlers registered with :mod:`atexit` still run.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from typing import NoReturn

log = logging.getLogger("buttermilk")

JOIN_WAIT = 0.5  # seconds a thread ending on its own right now gets, in all


def leftover_threads(wait: float = JOIN_WAIT) -> list[threading.Thread]:
    """Threads the interpreter would wait for at exit that are still running after
    ``wait`` seconds (in all) to end."""
    deadline = time.monotonic() + wait
    found = []
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            found.append(thread)
    return found


def exit_process(code: int) -> NoReturn:
    """Exit with ``code`` without the interpreter's teardown: threads it would wait for get
    :data:`JOIN_WAIT` seconds to end (one still running then, e.g. a synchronous agent past
    its ``job_timeout``, is left behind with a warning), then the :mod:`atexit` handlers
    run (logging's flush among them), stdout and stderr are flushed, and ``os._exit``."""
    left = leftover_threads()
    if left:
        log.warning(
            "%d thread(s) still running after the command ended (a synchronous agent past "
            "its job_timeout or cancellation: Python cannot stop a thread); exiting without "
            "them",
            len(left),
        )
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone, a closed stream
            stream.flush()
    os._exit(code)
