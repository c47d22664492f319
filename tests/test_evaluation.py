"""Reports on known-answer batches: every figure equals what scikit-learn, statsmodels,
scipy and krippendorff compute in the test from the batch's exported rows.

A scripted agent answers what each record chooses for each job (combination x repeat):
a label, no label, JSON null, or a failure. Batches are created and worked in-process
(BatchService and Worker over the backend's real store and queue: SQLite, or PostgreSQL
with Pub/Sub), exported with BatchService.export, then reported with BatchService.report.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from backends import patched_environ
from conftest import Env
from evaluation_expected import (
    alpha,
    approx,
    check_categorical,
    check_interval,
    exported,
    fleiss,
    label_of,
    paired,
    raters_matrix,
    stability,
    vote,
)

from buttermilk.agents.testing import FAIL, NO_LABEL
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.domain.evaluation import EvaluationSpec, Report
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.base import Queue
from buttermilk.queue.local import LocalQueue

LABELS = ["neg", "neu", "pos"]
VARIANTS = ["a", "b", "c"]
ACCURACY = {"a": 0.8, "b": 0.6, "c": 0.4}


def scripted_flow(
    data: Path, name: str = "scored", evaluate: Any = "nominal", file: str = "records.jsonl"
) -> FlowConfig:
    """The judge answers what each record scripts; ``evaluate``: its kind (None: none)."""
    spec = {"label": "judge.label", "truth": "ground_truth", "kind": evaluate}
    return FlowConfig.model_validate(
        {
            "name": name,
            "data": {
                "records": {
                    "type": "file",
                    "path": str(data / file),
                    "columns": {"record_id": "id", "content": "text", "ground_truth": "truth"},
                }
            },
            "agents": [{"name": "judge", "_target_": "buttermilk.agents.testing.scripted"}],
            "parameters": {"model": "a"},
            "evaluate": spec if evaluate else None,
        }
    )


def write_scripted(
    path: Path, count: int, *, seed: int, repeats: int = 2, labels: list[Any] = LABELS
) -> None:
    """Records with a truth (a few without) and each job's answer: right with its
    combination's accuracy, else another label; 4% fail, 3% no label, 2% JSON null."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for n in range(count):
            truth = rng.choice(labels)
            answers: dict[str, list[Any]] = {}
            for variant in VARIANTS:
                answers[variant] = []
                for _ in range(repeats):
                    roll = rng.random()
                    if roll < 0.04:
                        answers[variant].append(FAIL)
                    elif roll < 0.07:
                        answers[variant].append(NO_LABEL)
                    elif roll < 0.09:
                        answers[variant].append(None)
                    elif rng.random() < ACCURACY[variant]:
                        answers[variant].append(truth)
                    else:
                        answers[variant].append(rng.choice([x for x in labels if x != truth]))
            row: dict[str, Any] = {"id": f"r{n:04d}", "text": f"record {n}", "answers": answers}
            if n % 17 != 5:  # a few records have no truth
                row["truth"] = truth
            fh.write(json.dumps(row) + "\n")


@asynccontextmanager
async def service_on(env: Env, *flows: FlowConfig) -> AsyncIterator[tuple[BatchService, Queue]]:
    queue: Queue
    if env.backend.name == "local":
        queue = LocalQueue(env.home / "queue.db", lease_seconds=10)
    else:
        queue = env.backend.pubsub_queue()
    async with queue:
        catalog = StaticFlowCatalog({flow.name: flow for flow in flows})
        yield BatchService(env.store(), queue, catalog), queue


def on_backend(env: Env, main: Callable[[], Awaitable[None]]) -> None:
    with patched_environ(env.backend.environ):
        anyio.run(main)


async def run_batch(
    service: BatchService,
    queue: Queue,
    env: Env,
    request: BatchRequest,
    max_jobs: int | None = None,
) -> str:
    created = await service.create(request)
    batch_id = created.batch.id
    options = WorkerOptions(batch_id=batch_id, idle_timeout=30, max_jobs=max_jobs)
    with anyio.fail_after(120):
        await Worker(env.store(), queue, options).run()
    return batch_id


def grid_request(flow: str = "scored", **more: Any) -> BatchRequest:
    """The scripted flow over every record (file order) x 3 combinations x 2 repeats."""
    given: dict[str, Any] = {"variants": {"model": VARIANTS}, "repeats": 2, "shuffle": False}
    return BatchRequest(flow=flow, **{**given, **more})


# -- one batch, nominal: every figure ---------------------------------------------------


def test_a_report_matches_the_libraries_on_the_exported_rows(env: Env) -> None:
    write_scripted(env.data / "records.jsonl", 80, seed=11)
    flow = scripted_flow(env.data)
    export = env.home / "out.jsonl"
    found: dict[str, Any] = {}

    async def main() -> None:
        async with service_on(env, flow) as (service, queue):
            batch_id = await run_batch(service, queue, env, grid_request())
            await service.export(batch_id, export)
            positive = EvaluationSpec(label="judge.label", positive="pos")
            found["report"] = await service.report([batch_id[:6]], positive)
            found["records"] = await service.record_agreements(batch_id)

    on_backend(env, main)
    report: Report = found["report"]
    rows = exported(export)
    assert len(rows) == 80 * 3 * 2 and report.jobs == len(rows)
    assert report.live is False and report.finished == len(rows)
    order = LABELS  # every label and truth seen, sorted
    assert [s.variant for s in report.combinations] == VARIANTS
    for score in report.combinations:
        of = [r for r in rows if r["variant"] == score.variant]
        assert score.batch_id == report.batch_ids[0]
        assert score.axes == {"model": score.variant}
        check_categorical(score, of, order, positive="pos")
        assert score.stability == approx(stability(of, order))
    check_categorical(report.overall, rows, order, positive="pos")
    assert report.overall.variant == "overall" and report.overall.stability is None
    missing = report.overall.missing
    assert missing.failed and missing.no_label and missing.no_truth, "missing jobs counted"
    assert report.overall.scored + missing.total == report.overall.jobs

    # Agreement: 3 combinations x 2 repeats = 6 raters.
    agreement = report.agreement
    assert agreement is not None and agreement.raters == 6 and agreement.records == 80
    matrix, records = raters_matrix(rows, order.index)
    assert agreement.krippendorff_alpha == approx(alpha(matrix, "nominal"))
    assert agreement.fleiss_kappa == approx(fleiss(matrix))
    per_record = {
        rid: [
            label_of(r)
            for r in rows
            if r["record_id"] == rid and label_of(r) is not None and r["status"] == "completed"
        ]
        for rid in records
    }
    shares = [vote(f, order)[1] for f in per_record.values() if len(f) > 1]
    assert agreement.stability == approx(np.mean(shares))
    counts, edges = np.histogram(shares, bins=10, range=(0, 1))
    assert [n for _, _, n in agreement.stability_histogram] == counts.tolist()
    assert [lo for lo, _, _ in agreement.stability_histogram] == approx(edges[:-1].tolist())
    # The majority vote, scored like a combination (one pseudo-job per record).
    truths = {r["record_id"]: r["ground_truth"] for r in rows}
    voted = [
        {"record_id": rid, "status": "completed", "ground_truth": truths[rid]} for rid in records
    ]
    majority_labels = [
        vote(per_record[rid], order)[0] if per_record[rid] else None for rid in records
    ]
    assert agreement.majority is not None
    check_categorical(agreement.majority, voted, order, labels=majority_labels, positive="pos")

    # Comparisons: every pair of the three combinations.
    assert [(c.a, c.b) for c in report.comparisons] == [("a", "b"), ("a", "c"), ("b", "c")]
    for comparison in report.comparisons:
        expected = paired(rows, lambda r: r["variant"], comparison.a, comparison.b, order)
        assert comparison.records == expected["records"]
        assert [
            [comparison.both_correct, comparison.only_a_correct],
            [comparison.only_b_correct, comparison.neither_correct],
        ] == expected["table"]
        assert comparison.p_value == approx(expected["p"])
        check_interval(comparison.difference, *expected["difference"])
    assert report.comparisons[1].p_value < 0.05, "a (80%) beats c (40%) on 80 records"

    # Per record: majority, stability and "disagrees with truth", for the job filters.
    by_id = {r.record_id: r for r in found["records"]}
    assert list(by_id) == records  # planned order (no shuffle: file order)
    for rid in records:
        answers = per_record[rid]
        got = by_id[rid]
        assert got.answers == len(answers)
        assert got.truth == truths[rid]
        if answers:
            assert got.majority == vote(answers, order)[0]
        assert got.stability == (approx(vote(answers, order)[1]) if len(answers) > 1 else None)
        assert got.disagrees_with_truth == (
            truths[rid] is not None and any(a != truths[rid] for a in answers)
        )
