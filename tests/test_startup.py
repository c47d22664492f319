"""``list`` and ``status``, the commands a person waits on, start without the heavy packages
other commands need (issue 13: they answer in 0.4 s or less), on the embedded default and
with ``queue=pubsub`` (they never open the queue). An import added on their path by a
module-level import somewhere fails here, naming the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from buttermilk.domain import BatchRequest
from buttermilk.records import Record
from buttermilk.store.store import Store

# What create, run, export, report or the API need, and list and status never do.
HEAVY = (
    "pyarrow",
    "pandas",
    "numpy",
    "openai",
    "aiohttp",
    "httpx",
    "google.cloud.pubsub",
    "google.pubsub_v1",
    "grpc",
    "fastapi",
    "uvicorn",
    "jinja2",
    "jsonschema",
    "PIL",
    "scipy",
    "statsmodels",
    "sklearn",
    "plotly",
    "sqlalchemy.dialects.postgresql",  # a SQLite store needs SQLite's dialect only
    "buttermilk.batch.planner",  # the sources, the planner and the worker: create and run
    "buttermilk.flows.sources",
    "buttermilk.batch.worker",
)

# The commands in one interpreter, each as the CLI runs it; then every module it holds.
COMMANDS = (
    ["batch.command=list"],
    ["batch.command=status"],
    ["batch.command=status", "queue=pubsub", "queue.project=p"],  # nothing sent to Pub/Sub
)
DRIVER = """
import json, sys
from buttermilk.runner import cli

out, commands = sys.argv[1], json.loads(sys.argv[2])
cli.exit_process = sys.exit  # one interpreter runs them all: each ends with SystemExit
codes = []
for command in commands:
    sys.argv[1:] = ["ui=batch", *command]
    try:
        cli.main()
    except SystemExit as exc:
        codes.append(exc.code)
with open(out, "w") as f:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, f)
"""


def test_list_and_status_on_the_embedded_default_import_no_heavy_package(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path}/batches.db").create_batch(
        batch_id="kstart000000",
        request=BatchRequest(flow="f"),
        flow_snapshot={"name": "f"},
        seed=1,
        records=[Record(record_id="r1", content="a review")],
    )
    found = tmp_path / "modules.json"
    env = {**os.environ, "BUTTERMILK_HOME": str(tmp_path)}

    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(found), json.dumps(COMMANDS)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr
    result = json.loads(found.read_text())
    assert result["codes"] == [0, 0, 0], proc.stderr
    assert proc.stdout.count("kstart000000") == 3  # listed, then shown by status twice
    modules = set(result["modules"])
    assert {"sqlalchemy", "rich", "buttermilk.store.store"} <= modules  # what they do need
    imported = [name for name in HEAVY if name in modules]
    assert imported == [], f"list/status imported {imported}"
    assert not any(name.startswith("google") for name in modules)


def test_the_cli_ends_without_the_interpreters_teardown_but_runs_exit_handlers_and_flushes(
    tmp_path: Path,
) -> None:
    """exit_process ends with os._exit: the exit code stands, output still buffered is
    written (stdout to a pipe is block-buffered), and atexit handlers run."""
    code = (
        "import atexit, sys\n"
        "from buttermilk.runner.process_exit import exit_process\n"
        "atexit.register(lambda: print('handler ran', file=sys.stderr))\n"
        "print('buffered output', end='')\n"
        "exit_process(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )

    assert proc.returncode == 3
    assert proc.stdout == "buffered output"
    assert proc.stderr == "handler ran\n"
