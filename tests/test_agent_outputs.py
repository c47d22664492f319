"""An agent's output is stored exactly as it returned it, or its job fails saying why."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from buttermilk.batch.export import export_jobs
from buttermilk.domain import BatchRequest, JobStatus
from buttermilk.errors import PermanentError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner
from buttermilk.records import Record
from buttermilk.store.store import Claim, Claimed, Store

RETURNED: dict[str, Any] = {}  # what returns_it returns, set by each test


def returns_it(record: Record, outputs: Any, parameters: Any) -> Any:
    return RETURNED["value"]


class Scores(BaseModel):
    low: float
    high: float
    values: list[float]
    price: Decimal
    image: bytes


def returns_a_model(record: Record, outputs: Any, parameters: Any) -> Scores:
    return Scores(
        low=float("-inf"),
        high=float("inf"),
        values=[float("nan"), 0.5],
        price=Decimal("1.50"),
        image=b"\x89PNG\xff",
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def runner_of(target: str) -> FlowRunner:
    flow = {"name": "t", "agents": [{"name": "a", "_target_": f"{__name__}.{target}"}]}
    return FlowRunner(FlowConfig.model_validate(flow))


async def run_agent(target: str, value: Any = None) -> dict[str, Any]:
    RETURNED["value"] = value
    return await runner_of(target).run(Record(record_id="r1", content="x"), {})


def stored(tmp_path: Path, result: dict[str, Any]) -> tuple[Store, Any]:
    """``result`` stored as a completed job's in a real SQLite store; the store and the
    result as read back."""
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    store.create_batch(
        batch_id="b1",
        request=BatchRequest(flow="t"),
        flow_snapshot={},
        seed=1,
        records=[Record(record_id="r1", content="x")],
    )
    store.mark_published("b1")
    (claimed,) = store.claim([Claim("b1", "r1")], worker="w", lease=30)
    assert isinstance(claimed, Claimed)
    store.finish([claimed.outcome(JobStatus.COMPLETED, duration=0.1, result=result)])
    return store, store.get_job("b1", "r1").result


def same_floats(got: list[float], expected: list[float]) -> bool:
    pairs = zip(got, expected, strict=True)
    return all((math.isnan(a) and math.isnan(b)) or a == b for a, b in pairs)


@pytest.mark.anyio
async def test_non_finite_floats_of_an_output_are_stored_as_floats_not_null(
    tmp_path: Path,
) -> None:
    result = await run_agent("returns_it", {"score": float("nan"), "range": [float("-inf"), 2.5]})
    store, back = stored(tmp_path, result)
    try:
        export_jobs(store, "b1", tmp_path / "out.jsonl")
    finally:
        store.close()

    output = back["outputs"]["a"]
    assert math.isnan(output["score"])
    assert output["range"] == [float("-inf"), 2.5]
    line = json.loads((tmp_path / "out.jsonl").read_text())
    assert line["outputs"]["a"] == {
        "score": {"$float": "nan"},
        "range": [{"$float": "-inf"}, 2.5],
    }


@pytest.mark.anyio
async def test_a_pydantic_model_output_keeps_non_finite_floats_decimals_and_bytes(
    tmp_path: Path,
) -> None:
    result = await run_agent("returns_a_model")
    store, back = stored(tmp_path, result)
    store.close()

    output = back["outputs"]["a"]
    assert (output["low"], output["high"]) == (float("-inf"), float("inf"))
    assert same_floats(output["values"], [float("nan"), 0.5])
    assert (output["price"], output["image"]) == (Decimal("1.50"), b"\x89PNG\xff")
    assert str(output["price"]) == "1.50"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({1: "an int", "1": "text"}, "object key 1 (int) at its top level"),
        ({"counts": {2: 5}}, "object key 2 (int) in ['counts']"),
        ({"flags": [{True: "yes"}]}, "object key True (bool) in ['flags'][0]"),
        ({"pairs": {(1, 2): "tuple"}}, "object key (1, 2) (tuple) in ['pairs']"),
        ({None: 0}, "object key None (NoneType) at its top level"),
    ],
)
async def test_an_output_with_a_key_that_is_not_text_fails_its_job_naming_the_key(
    value: dict[Any, Any], named: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await run_agent("returns_it", value)

    assert str(caught.value).startswith(f"agent 'a' returned an {named};")
    assert "only text keys" in str(caught.value)
