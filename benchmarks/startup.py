"""How fast the CLI answers the commands a person types and waits on: ``list``, ``status``,
``--help`` and a command line refused for an unknown option.

Run ``python benchmarks/startup.py`` (each command run 5 times, the median kept;
``--repeats N`` for another count) or ``--quick`` (one run each: a smoke test). Every command
is the real CLI in a subprocess, in a fresh temporary ``BUTTERMILK_HOME`` holding one small
batch (also its working folder); the baseline, plain ``python -c pass``, is measured in the
same run. ``--before REV`` also times the CLI of git revision REV (its package laid out as
installed, first on ``PYTHONPATH``), each of its runs next to the same run of this one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Version:
    """A version of the CLI to time: its name in the table and its environment."""

    label: str  # "" for the installed one
    env: dict[str, str]


def run(argv: list[str], env: dict[str, str], expect: int) -> float:
    """Wall seconds of one process; raises if its exit code is not ``expect``."""
    start = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, cwd=env["BUTTERMILK_HOME"], capture_output=True, text=True, timeout=TIMEOUT
    )
    seconds = time.perf_counter() - start
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(argv[2:])}: exit {proc.returncode}: {proc.stderr[-400:]}")
    return seconds


def medians_of(argv: list[str], versions: list[Version], expect: int, repeats: int) -> list[float]:
    """The median wall seconds of ``argv`` under each version, their runs taken in turn,
    after one untimed run of each (it writes any bytecode missing and warms the file cache)."""
    for version in versions:
        run(argv, version.env, expect)
    times: list[list[float]] = [[] for _ in versions]
    for _ in range(repeats):
        for seconds, version in zip(times, versions, strict=True):
            seconds.append(run(argv, version.env, expect))
    return [statistics.median(seconds) for seconds in times]


def package_of(rev: str, into: Path) -> Path:
    """A folder holding the ``buttermilk`` package of git revision ``rev``, laid out as
    installed (``conf/`` as ``buttermilk/conf``), for ``PYTHONPATH``."""
    source = into / "source"
    source.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "buttermilk", "conf"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    package = into / "package"
    package.mkdir()
    shutil.move(source / "buttermilk", package / "buttermilk")
    shutil.move(source / "conf", package / "buttermilk" / "conf")
    return package


def make_batch(env: dict[str, str]) -> str:
    """Run one small batch to completion; its id."""
    argv = [*CLI, "flow=sentiment", "batch.max_records=3", "batch.wait=true"]
    proc = subprocess.run(
        argv, env=env, cwd=env["BUTTERMILK_HOME"], capture_output=True, text=True, timeout=TIMEOUT
    )
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


def bytecode_row() -> Row:
    """Whether the CLI's modules are compiled from source in every process."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return Row(
            "bytecode cache",
            "off",
            notes="PYTHONDONTWRITEBYTECODE is set: "
            "modules without a cached .pyc are compiled in every run",
        )
    return Row("bytecode cache", "on", notes="the first run writes what is missing")


def measure(sizes: Sizes, before: str | None = None) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bm-startup-") as home:
        env = {**os.environ, "BUTTERMILK_HOME": home}
        versions = [Version("", env)]
        if before is not None:
            package = package_of(before, Path(home))
            path = os.pathsep.join(p for p in (str(package), env.get("PYTHONPATH")) if p)
            versions.append(Version(f" (before: {before})", {**env, "PYTHONPATH": path}))
        batch_id = make_batch(env)
        base = medians_of([sys.executable, "-c", "pass"], versions[:1], 0, sizes.repeats)[0]
        rows = [Row("python -c pass (baseline)", f"{base:.3f} s"), bytecode_row()]
        for name, argv, expect in commands(batch_id):
            try:
                medians = medians_of(argv, versions, expect, sizes.repeats)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # a row, and go on
                rows.append(Row(name, "ERROR", "-", "ERROR", str(exc).splitlines()[0]))
                continue
            for version, seconds in zip(versions, medians, strict=True):
                rows.append(
                    Row(
                        name + version.label,
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
    parser.add_argument("--repeats", type=int, help="runs of each command (default 5)")
    parser.add_argument(
        "--before", metavar="REV", help="also time the CLI of this git revision (e.g. main)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error("--repeats must be at least 1")
        sizes = Sizes(repeats=args.repeats, quick=sizes.quick)
    start = time.perf_counter()
    rows = measure(sizes, args.before)
    print(format_table(rows, sizes, time.perf_counter() - start, "Buttermilk CLI start-up"))
    return 1 if any(row.result == "ERROR" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
