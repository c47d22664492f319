"""Ending the CLI process once its command is done, even when an agent's thread is not.

Python cannot stop a thread. A synchronous agent runs in a worker thread; when its job
times out or is cancelled, the worker stops waiting for it, fails or releases the job and
goes on, but the thread runs on, and the interpreter waits for every such thread before
it exits: a worker whose agent hangs would never end. Once the command has stored its
outcomes and closed the store and queue, nothing that thread could still do is kept, so
the process exits without it and says so.
"""

from __future__ import annotations

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
    """Exit with ``code``: normally, or at once (``os._exit``) when threads are left that
    the interpreter would wait for, e.g. a synchronous agent past its ``job_timeout``."""
    left = leftover_threads()
    if not left:
        sys.exit(code)
    log.warning(
        "%d thread(s) still running after the command ended (a synchronous agent past its "
        "job_timeout or cancellation: Python cannot stop a thread); exiting without them",
        len(left),
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
