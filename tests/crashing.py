"""An agent for the tests of lost workers: it takes its whole worker process down on
chosen records, as the kernel's out-of-memory killer would. The CLI finds it when
``tests/`` is on PYTHONPATH (see ``with_crashing_agent``)."""

from __future__ import annotations

import os
import signal
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
