"""The benchmark scripts run end to end in quick mode and print their full tables.

Only the shape of the output is checked: the figures depend on the machine and its load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "core.py"
ROWS = (
    "concurrency efficiency (worker elapsed)",
    "concurrency efficiency (process wall)",
    "create rate (in-process)",
    "create rate (CLI process)",
    "run rate (concurrency=5)",
    "run rate (concurrency=50)",
    "planning peak memory (CLI create)",
    "planning time",
)


VARIANT_ROWS = (
    "create rate, plain (sqlite)",
    "create rate, grid (sqlite)",
    "create rate, grid / plain (sqlite)",
    "create rate, plain (postgres)",
    "create rate, grid (postgres)",
    "create rate, grid / plain (postgres)",
    "planning peak RSS, grid / plain",
    "planning peak traced, grid / plain",
)


def check_quick_run(script: Path, rows: tuple[str, ...], cwd: Path) -> None:
    """Run ``script --quick``: exit 0, a QUICK MODE title, the header, one row each."""
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, report
    lines = proc.stdout.splitlines()
    assert "QUICK MODE" in lines[0], report
    header = next(line for line in lines if line.startswith("benchmark"))
    assert header.split() == ["benchmark", "measured", "goal", "result", "notes"], report
    for row in rows:
        matching = [line for line in lines if line.startswith(row + " ")]
        assert len(matching) == 1, f"no single row {row!r}\n{report}"
        assert "ERROR" not in matching[0].split(), report


@pytest.mark.slow
def test_quick_benchmarks_exit_0_and_print_a_row_per_benchmark(tmp_path: Path) -> None:
    check_quick_run(SCRIPT, ROWS, tmp_path)


@pytest.mark.slow
def test_quick_variant_benchmarks_exit_0_and_print_a_row_per_figure(tmp_path: Path) -> None:
    check_quick_run(BENCHMARKS / "variants.py", VARIANT_ROWS, tmp_path)


LLM_ROWS = (
    "CLI records/s (50 ms, c=100)",
    "CLI efficiency / baseline's (50 ms, c=100)",
    "CLI CPU per 1,000 calls (50 ms, c=100)",
)


@pytest.mark.slow
def test_the_quick_llm_benchmark_measures_the_cli_against_its_baseline(tmp_path: Path) -> None:
    check_quick_run(BENCHMARKS / "llm.py", LLM_ROWS, tmp_path)


STARTUP_ROWS = (
    "python -c pass (baseline)",
    "list",
    "status",
    "--help",
    "unknown option (error)",
)


@pytest.mark.slow
def test_the_quick_startup_benchmark_times_each_command_against_python(tmp_path: Path) -> None:
    check_quick_run(BENCHMARKS / "startup.py", STARTUP_ROWS, tmp_path)


REPORT_ROWS = ("report, 600 jobs (sqlite)", "report, 600 jobs (postgres)")


@pytest.mark.slow
def test_the_quick_report_benchmark_times_a_report_on_both_stores(tmp_path: Path) -> None:
    check_quick_run(BENCHMARKS / "report.py", REPORT_ROWS, tmp_path)


SOURCE_ROWS = tuple(
    f"{figure}, {source}"
    for source in (
        "sql (sqlite)",
        "sql (postgres)",
        "file (local parquet)",
        "huggingface (local parquet, streamed)",
        "huggingface (save_to_disk folder, streamed)",
    )
    for figure in ("planning peak RSS", "planning growth over imports")
)


@pytest.mark.slow
def test_the_quick_sources_benchmark_plans_each_large_source_in_a_child(tmp_path: Path) -> None:
    check_quick_run(BENCHMARKS / "sources.py", SOURCE_ROWS, tmp_path)
