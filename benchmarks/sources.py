"""Benchmark of planning over large sources: peak memory with ``max_records=1000``.

Run ``python benchmarks/sources.py`` (1,000,000 rows per source) or ``--quick`` (10,000
rows: a smoke test). ``--no-postgres`` skips the PostgreSQL row. Each source is planned
in a fresh child process (``plan_records`` with shuffling on, so every row is read: a
reservoir sample plus the duplicate check's 8 bytes per id). The child prints its peak
resident memory (VmHWM of /proc/self/status; ``ru_maxrss`` would start at the parent's
peak) and its resident memory after the imports, before planning (``check_sources``:
SQLAlchemy's dialect; a Hugging Face source no longer imports ``datasets`` there, so
what its reader imports counts as planning). Sources: a SQLite table and a PostgreSQL
table (``type: sql``, a server-side cursor), a local Parquet file (``type: file``), and
a local Hugging Face dataset (``type: huggingface``, streamed): the ``parquet`` builder
over that file and a ``save_to_disk`` folder of the same rows, both read through pyarrow
alone, and the ``json`` builder over the same rows as JSON Lines, read through the
``datasets`` library (whose import alone takes about 190 MB; not in ``--quick``). Goal:
peak under 200 MB. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# core.py sits beside this file: run as a script, its folder is on the import path.
from core import BenchmarkError, Row, error_row, format_table, progress, verdict

ADMIN_URL = os.environ.get(
    "BUTTERMILK_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
GOAL_MB = 200
MAX_RECORDS = 1_000

CHILD = """
import json, sys, time
from buttermilk.batch.planner import plan_records
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.sources import check_sources

def status_kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

flow = FlowConfig.model_validate(json.loads(sys.argv[1]))
check_sources(flow)  # a source's own imports (SQLAlchemy's dialect) happen here
before = status_kib("VmRSS")
start = time.perf_counter()
plan = plan_records(flow, shuffle=True, max_records=int(sys.argv[2]), seed=1)
print(json.dumps({
    "read": plan.rows_read,
    "records": len(plan.records),
    "seconds": time.perf_counter() - start,
    "before_kib": before,
    "peak_kib": status_kib("VmHWM"),  # this process's own: ru_maxrss would start at the parent's
}))
"""


@dataclass(frozen=True, kw_only=True)
class Sizes:
    rows: int
    repeats: int
    quick: bool


FULL = Sizes(rows=1_000_000, repeats=1, quick=False)
QUICK = Sizes(rows=10_000, repeats=1, quick=True)


def flow(source: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "bench_sources",
        "data": {"big": source},
        "agents": [{"name": "noop", "_target_": "buttermilk.agents.testing.noop"}],
    }


def plan_in_child(name: str, source: dict[str, Any], rows: int, env: dict[str, str]) -> list[Row]:
    """Plan ``source`` in a fresh process: its peak resident memory, and the part of it
    that planning added to what the imports (the source's library included) took."""
    progress(f"{name}: planning {rows:,} rows with max_records={MAX_RECORDS:,}")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(flow(source)), str(MAX_RECORDS)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
    )
    if proc.returncode != 0:
        raise BenchmarkError(f"{name}: the planning process failed: {proc.stderr.strip()[-500:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    if found["read"] != rows or found["records"] != min(rows, MAX_RECORDS):
        raise BenchmarkError(f"{name}: read {found['read']:,} rows, planned {found['records']:,}")
    peak = found["peak_kib"] / 1024
    before = found["before_kib"] / 1024
    shape = f"{rows:,} rows read in {found['seconds']:.1f} s, max_records={MAX_RECORDS:,}"
    return [
        Row(
            f"planning peak RSS, {name}",
            f"{peak:.0f} MB",
            f"< {GOAL_MB} MB",
            verdict(peak < GOAL_MB),
            f"{shape}; of it {before:.0f} MB resident after the imports, before planning",
        ),
        Row(
            f"planning growth over imports, {name}",
            f"{peak - before:.0f} MB",
            f"< {GOAL_MB} MB",
            verdict(peak - before < GOAL_MB),
            "peak RSS less the RSS after the imports: what reading the rows added",
        ),
    ]


def sqlite_source(folder: Path, rows: int) -> dict[str, Any]:
    path = folder / "posts.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table posts (id integer primary key, body text, label text)")
        conn.execute(
            "with recursive n(i) as (select 1 union all select i + 1 from n where i < ?) "
            "insert into posts select i, 'post number ' || i || ' about the weather', "
            "case i % 3 when 0 then 'neg' when 1 then 'neu' else 'pos' end from n",
            (rows,),
        )
    conn.close()
    return {
        "type": "sql",
        "url": f"sqlite:///{path}",
        "query": "select id, body, label from posts",
        "columns": {"record_id": "id", "content": "body", "ground_truth": "label"},
    }


def postgres_source(url: str, rows: int) -> dict[str, Any]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table posts (id bigint primary key, body text, label text)"))
        conn.execute(
            sa.text(
                "insert into posts select g, 'post number ' || g || ' about the weather', "
                "(array['neg', 'neu', 'pos'])[g % 3 + 1] from generate_series(1, :n) g"
            ),
            {"n": rows},
        )
    engine.dispose()
    return {
        "type": "sql",
        "url": url,
        "query": "select id, body, label from posts",
        "columns": {"record_id": "id", "content": "body", "ground_truth": "label"},
    }


def hf_source(folder: Path, rows: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / "posts.parquet"
    with pq.ParquetWriter(path, pa.schema([("id", pa.int64()), ("text", pa.string())])) as out:
        for start in range(0, rows, 100_000):
            ids = list(range(start, min(rows, start + 100_000)))
            texts = [f"post number {i} about the weather" for i in ids]
            out.write_table(pa.table({"id": ids, "text": texts}))
    return {"type": "huggingface", "path": "parquet", "data_files": str(path), "split": "train"}


def hf_saved_source(folder: Path, rows: int) -> dict[str, Any]:
    """The same rows as a folder written by ``save_to_disk`` (several Arrow files)."""
    import datasets
    import pyarrow.parquet as pq

    parquet = hf_source(folder, rows)["data_files"]
    saved = folder / "saved"
    datasets.Dataset(pq.read_table(parquet)).save_to_disk(str(saved), max_shard_size="20MB")
    return {"type": "huggingface", "path": str(saved), "split": "train"}


def hf_json_source(folder: Path, rows: int) -> dict[str, Any]:
    """The same rows as JSON Lines, read by the ``json`` builder (through ``datasets``)."""
    path = folder / "posts.jsonl"
    with path.open("w") as out:
        for i in range(rows):
            out.write(json.dumps({"id": i, "text": f"post number {i} about the weather"}) + "\n")
    return {"type": "huggingface", "path": "json", "data_files": str(path), "split": "train"}


def benchmarks(
    postgres: bool, quick: bool = False
) -> list[tuple[str, Callable[[Sizes, Path, dict[str, str]], list[Row]]]]:
    found: list[tuple[str, Callable[[Sizes, Path, dict[str, str]], list[Row]]]] = [
        (
            "sql (sqlite)",
            lambda s, d, env: plan_in_child("sql (sqlite)", sqlite_source(d, s.rows), s.rows, env),
        ),
        (
            "file (local parquet)",
            lambda s, d, env: plan_in_child(
                "file (local parquet)",
                {"path": hf_source(d, s.rows)["data_files"]},
                s.rows,
                env,
            ),
        ),
        (
            "huggingface (local parquet, streamed)",
            lambda s, d, env: plan_in_child(
                "huggingface (local parquet, streamed)", hf_source(d, s.rows), s.rows, env
            ),
        ),
        (
            "huggingface (save_to_disk folder, streamed)",
            lambda s, d, env: plan_in_child(
                "huggingface (save_to_disk folder, streamed)",
                hf_saved_source(d, s.rows),
                s.rows,
                env,
            ),
        ),
    ]
    if postgres:
        found.insert(1, ("sql (postgres)", bench_postgres))
    if not quick:  # the library's own reader, for comparison (its import alone: ~5 s)
        found.append(
            (
                "huggingface (local jsonl, json builder through datasets, streamed)",
                lambda s, d, env: plan_in_child(
                    "huggingface (local jsonl, json builder through datasets, streamed)",
                    hf_json_source(d, s.rows),
                    s.rows,
                    env,
                ),
            )
        )
    return found


def bench_postgres(sizes: Sizes, folder: Path, env: dict[str, str]) -> list[Row]:
    from buttermilk.devservices import throwaway_database

    with throwaway_database(ADMIN_URL, prefix="bm_bench") as url:
        progress(f"sql (postgres): filling a table of {sizes.rows:,} rows")
        return plan_in_child("sql (postgres)", postgres_source(url, sizes.rows), sizes.rows, env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="10,000 rows per source")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL row")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    start = time.perf_counter()
    rows: list[Row] = []
    failed = False
    with tempfile.TemporaryDirectory(prefix="buttermilk-bench-") as tmp:
        env = dict(os.environ, HF_HOME=f"{tmp}/hf", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        for name, bench in benchmarks(not args.no_postgres, sizes.quick):
            folder = Path(tmp) / name.split()[0]
            folder.mkdir(exist_ok=True)
            try:
                rows.extend(bench(sizes, folder, env))
            except Exception as exc:  # report it in the table, go on
                failed = True
                rows.append(error_row(f"planning peak RSS, {name}", exc))
    print(format_table(rows, sizes, time.perf_counter() - start, "Buttermilk sources benchmark"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
