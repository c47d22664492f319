"""How fast the CLI answers the commands a person types and waits on: ``list``, ``status``,
``--help`` and a command line refused for an unknown option.

Run ``python benchmarks/startup.py`` (each command run 5 times, the median kept) or
``--quick`` (one run each: a smoke test). Every command is the real CLI in a subprocess, in a
fresh temporary ``BUTTERMILK_HOME`` holding one small batch; the baseline, plain
``python -c pass``, is measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from core import Row, format_table, verdict

GOAL_SECONDS = 0.4  # issue 13: a command a person waits on answers at once
CLI = [sys.executable, "-m", "buttermilk.runner.cli", "ui=batch"]
TIMEOUT = 120.0  # seconds any one process may take before it is killed
_BATCH_ID = re.compile(r"batch (\S+) completed")


@dataclass(frozen=True)
class Sizes:
    """How often each command is timed (the median is reported)."""

    repeats: int
    quick: bool


FULL = Sizes(repeats=5, quick=False)
QUICK = Sizes(repeats=1, quick=True)


def run(argv: list[str], env: dict[str, str], expect: int) -> float:
    """Wall seconds of one process; raises if its exit code is not ``expect``."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(argv[2:])}: exit {proc.returncode}: {proc.stderr[-400:]}")
    return seconds


def median_of(argv: list[str], env: dict[str, str], expect: int, repeats: int) -> float:
    return statistics.median(run(argv, env, expect) for _ in range(repeats))


def make_batch(env: dict[str, str]) -> str:
    """Run one small batch to completion; its id."""
    argv = [*CLI, "flow=sentiment", "batch.max_records=3", "batch.wait=true"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    found = _BATCH_ID.search(proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"the small batch failed: exit {proc.returncode}: {proc.stderr[-400:]}")
    return found.group(1)


def commands(batch_id: str) -> list[tuple[str, list[str], int]]:
    """Each timed command: its name in the table, its argv, its expected exit code."""
    return [
        ("list", [*CLI, "batch.command=list"], 0),
        ("status", [*CLI, "batch.command=status", f"batch.batch_id={batch_id}"], 0),
        ("--help", [*CLI, "--help"], 0),
        ("unknown option (error)", [*CLI, "batch.no_such_option=1"], 2),
    ]


def measure(sizes: Sizes) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bm-startup-") as home:
        env = {**os.environ, "BUTTERMILK_HOME": home}
        batch_id = make_batch(env)
        base = median_of([sys.executable, "-c", "pass"], env, 0, sizes.repeats)
        rows = [Row("python -c pass (baseline)", f"{base:.3f} s")]
        for name, argv, expect in commands(batch_id):
            try:
                seconds = median_of(argv, env, expect, sizes.repeats)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # a row, and go on
                rows.append(Row(name, "ERROR", "-", "ERROR", str(exc).splitlines()[0]))
                continue
            rows.append(
                Row(
                    name,
                    f"{seconds:.3f} s",
                    f"<= {GOAL_SECONDS} s",
                    verdict(seconds <= GOAL_SECONDS),
                    f"{seconds - base:.3f} s over the baseline",
                )
            )
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one run of each command")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    rows = measure(sizes)
    print(format_table(rows, sizes, time.perf_counter() - start, "Buttermilk CLI start-up"))
    return 1 if any(row.result == "ERROR" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
