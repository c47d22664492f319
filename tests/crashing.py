"""Agents for the tests of lost workers: one takes its whole worker process down on
chosen records, as the kernel's out-of-memory killer would; one blocks its thread for
good. The CLI finds them when ``tests/`` is on PYTHONPATH (see ``with_crashing_agent``)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from buttermilk.records import Record


def kill_worker_on(
    record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
) -> dict[str, Any]:
    """SIGKILL this process on the records in ``parameters["kill_on"]``."""
    if record.record_id in parameters.get("kill_on", []):
        os.kill(os.getpid(), signal.SIGKILL)
    return {"survived": True}


def hang(record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]) -> None:
    """Block this worker thread for an hour: a synchronous agent that nothing can stop
    (Python cannot cancel a thread; job_timeout only stops waiting for it)."""
    time.sleep(3600)
