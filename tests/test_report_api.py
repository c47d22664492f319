"""The evaluation's API routes, in-process over a real SQLite store, local queue and worker:
the report equals the service's, overrides and lined-up batches, refusals in the one error
shape, the jobs filters ("disagrees with truth", "unstable"), the charts and the timeline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from buttermilk.api.app import create_app
from buttermilk.batch.service import BatchService
from buttermilk.batch.worker import Worker, WorkerOptions
from buttermilk.domain import BatchRequest
from buttermilk.domain.evaluation import EvaluationSpec
from buttermilk.flows.catalog import StaticFlowCatalog
from buttermilk.flows.models import FlowConfig
from buttermilk.queue.local import LocalQueue
from buttermilk.store.store import Store

pytestmark = pytest.mark.anyio

# Each record's truth and answers per combination (a, b) and repeat (0, 1); "$fail" fails it.
SCRIPT: dict[str, tuple[str, dict[str, list[str]]]] = {
    "r0": ("pos", {"a": ["pos", "pos"], "b": ["pos", "pos"]}),  # right, stable
    "r1": ("neg", {"a": ["neg", "neg"], "b": ["pos", "pos"]}),  # b wrong: disagrees, unstable
    "r2": ("pos", {"a": ["pos", "neg"], "b": ["pos", "pos"]}),  # one wrong: disagrees, unstable
    "r3": ("neg", {"a": ["pos", "pos"], "b": ["pos", "pos"]}),  # all wrong: disagrees, stable
    "r4": ("neu", {"a": ["neu", "neu"], "b": ["$fail", "neu"]}),  # one failed, the rest right
}
DISAGREES = {"r1", "r2", "r3"}
UNSTABLE = {"r1", "r2"}
SPEC = {"label": "judge.label", "truth": "ground_truth", "kind": "nominal"}


def flow(data: Path, name: str, evaluate: dict[str, Any] | None) -> FlowConfig:
    return FlowConfig.model_validate(
        {
            "name": name,
            "data": {
                "records": {
                    "type": "file",
                    "path": str(data),
                    "columns": {"record_id": "id", "content": "text", "ground_truth": "truth"},
                }
            },
            "agents": [{"name": "judge", "_target_": "buttermilk.agents.testing.scripted"}],
            "parameters": {"model": "a"},
            "evaluate": evaluate,
        }
    )


class Api:
    def __init__(self, service: BatchService, client: httpx.AsyncClient, ids: dict[str, str]):
        self.service = service
        self.client = client
        self.ids = ids

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """Three batches run to their end, once for the module (the tests only read): two of
    the scored flow (lined up), one of a flow that declares nothing to score."""
    tmp_path = tmp_path_factory.mktemp("report-api")
    data = tmp_path / "records.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": rid, "text": rid, "truth": truth, "answers": answers}) + "\n"
            for rid, (truth, answers) in SCRIPT.items()
        )
    )
    store = Store(f"sqlite:///{tmp_path}/batches.db")
    catalog = StaticFlowCatalog(
        {"scored": flow(data, "scored", SPEC), "plain": flow(data, "plain", None)}
    )
    async with LocalQueue(tmp_path / "queue.db", lease_seconds=10) as queue:
        service = BatchService(store, queue, catalog)
        ids: dict[str, str] = {}
        for name, flow_name in (("first", "scored"), ("second", "scored"), ("plain", "plain")):
            request = BatchRequest(
                flow=flow_name,
                variants={"model": ["a", "b"]},
                repeats=2,
                shuffle=False,
                max_attempts=1,
            )
            ids[name] = (await service.create(request)).batch.id
        with anyio.fail_after(60):
            await Worker(store, queue, WorkerOptions(idle_timeout=0.2)).run()
        transport = httpx.ASGITransport(app=create_app(service))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(service, client, ids)
    store.close()


def without_time(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "generated_at"}


async def test_the_report_route_answers_the_service_report_field_for_field(api: Api) -> None:
    first, second = api.ids["first"], api.ids["second"]

    answer = await api.get(f"/api/batches/{first[:6]}/report")
    assert answer.status_code == 200, answer.text
    expected = (await api.service.report([first])).model_dump(mode="json")
    assert without_time(answer.json()) == without_time(expected)
    assert answer.json()["combinations"][0]["accuracy"]["estimate"] == pytest.approx(
        0.7
    )  # 7 of 10 right

    lined_up = (await api.get(f"/api/batches/{first}/report", also=second)).json()
    expected = (await api.service.report([first, second])).model_dump(mode="json")
    assert without_time(lined_up) == without_time(expected)
    assert lined_up["batch_ids"] == [first, second]

    # An override scores the batch of a flow that declares nothing.
    plain = api.ids["plain"]
    answer = await api.get(f"/api/batches/{plain}/report", label="judge.label", positive="pos")
    assert answer.status_code == 200, answer.text
    spec = EvaluationSpec(label="judge.label", positive="pos")
    expected = (await api.service.report([plain], spec)).model_dump(mode="json")
    assert without_time(answer.json()) == without_time(expected)
    assert answer.json()["evaluate"]["positive"] == "pos"


@pytest.mark.parametrize(
    ("query", "status", "field", "words"),
    [
        ({}, 422, "evaluate", "declares nothing to score"),
        ({"label": "judge..label"}, 422, "label", "is not a dotted path"),
        ({"label": "judge.label", "truth": "answers.x"}, 422, "truth", "must be ground_truth"),
        ({"label": "nobody.label"}, 422, "evaluate", "has no agent 'nobody'"),
        ({"kind": "interval"}, 422, "kind", "give label too"),
        ({"label": "judge.label", "kind": "ratio"}, 422, "kind", "nominal"),
    ],
)
async def test_a_report_that_cannot_be_made_is_a_422_naming_what_to_change(
    api: Api, query: dict[str, str], status: int, field: str, words: str
) -> None:
    answer = await api.get(f"/api/batches/{api.ids['plain']}/report", **query)

    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and words in error["message"]


async def test_an_unknown_batch_is_a_404_for_the_report_charts_timeline_and_filters(
    api: Api,
) -> None:
    for path in ("report", "report/charts", "timeline", "jobs?disagrees=true"):
        answer = await api.client.get(f"/api/batches/nope/{path}")
        assert answer.status_code == 404, (path, answer.text)
        assert "nope" in answer.json()["error"]["message"]
    answer = await api.get(f"/api/batches/{api.ids['first']}/report", also="nope")
    assert answer.status_code == 404


async def jobs(api: Api, **params: Any) -> tuple[list[tuple[str, str, int]], int]:
    answer = await api.get(f"/api/batches/{api.ids['first']}/jobs", order="planned", **params)
    assert answer.status_code == 200, answer.text
    page = answer.json()
    return [(j["record_id"], j["variant"], j["repeat"]) for j in page["items"]], page["total"]


async def test_jobs_are_filtered_by_disagreeing_with_the_truth_and_by_instability(
    api: Api,
) -> None:
    listed, total = await jobs(api, disagrees="true")
    assert {rid for rid, _, _ in listed} == DISAGREES and total == len(listed) == 12

    listed, total = await jobs(api, disagrees="false")
    assert {rid for rid, _, _ in listed} == set(SCRIPT) - DISAGREES and total == 8

    listed, total = await jobs(api, unstable="true", variant="b", limit=3)
    assert listed == [("r1", "b", 0), ("r1", "b", 1), ("r2", "b", 0)] and total == 4

    listed, total = await jobs(api, unstable="false", disagrees="true", status="completed")
    assert {rid for rid, _, _ in listed} == DISAGREES - UNSTABLE and total == 4

    answer = await api.get(f"/api/batches/{api.ids['plain']}/jobs", unstable="true")
    assert answer.status_code == 422 and "declares nothing" in answer.json()["error"]["message"]


async def test_the_charts_draw_the_report_and_the_timeline_counts_every_ended_job(
    api: Api,
) -> None:
    first = api.ids["first"]
    found = (await api.get(f"/api/batches/{first}/report/charts")).json()

    report = (await api.get(f"/api/batches/{first}/report")).json()
    assert without_time(found["report"]) == without_time(report)
    charts = {c["id"]: c["figure"] for c in found["charts"]}
    assert list(charts) == [
        "accuracy",
        "labels",
        "stability",
        "timeline",
        "confusion-0",
        "confusion-1",
    ]
    accuracy = charts["accuracy"]["data"][0]
    assert accuracy["x"] == ["a", "b"]
    assert accuracy["y"] == [c["accuracy"]["estimate"] for c in report["combinations"]]
    assert charts["confusion-1"]["data"][0]["z"] == report["combinations"][1]["confusion"]["matrix"]

    timeline = (await api.get(f"/api/batches/{first}/timeline")).json()
    assert timeline == found["timeline"]
    ended = [(b["completed"], b["failed"]) for b in timeline["buckets"]]
    assert tuple(map(sum, zip(*ended, strict=True))) == (19, 1)


@pytest.mark.parametrize(
    ("path", "query", "field", "words"),
    [
        ("report", {"lable": "judge.label"}, "lable", "unknown query parameter lable: it takes"),
        ("report", {"label": "judge.label", "postive": "pos"}, "postive", "takes label, truth"),
        ("report/charts", {"kind": "x", "zzz": "1"}, "zzz", "unknown query parameter zzz"),
        ("timeline", {"label": "judge.label"}, "label", "it takes none"),
        ("report", {"label": "judge"}, "label", "names an agent but no key"),
        ("report", {"label": "judge.label", "positive": "postive"}, "positive", "classes seen"),
        (
            "report",
            {"label": "judge.label", "kind": "interval", "positive": "pos"},
            "positive",
            "kind interval scores numbers",
        ),
    ],
)
async def test_unknown_parameters_and_unusable_overrides_are_422_naming_them(
    api: Api, path: str, query: dict[str, str], field: str, words: str
) -> None:
    answer = await api.get(f"/api/batches/{api.ids['first']}/{path}", **query)

    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == field and words in error["message"], error


async def test_also_refuses_the_same_batch_twice_and_a_batch_of_another_flow(api: Api) -> None:
    first, plain = api.ids["first"], api.ids["plain"]

    for also, words in [(first[:6], f"names batch {first} twice"), (plain, "of flow 'plain'")]:
        answer = await api.get(f"/api/batches/{first}/report", also=also)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["field"] == "also" and words in error["message"], error


async def test_categories_as_a_comma_list_equal_the_repeated_parameter(api: Api) -> None:
    url = f"/api/batches/{api.ids['first']}/report"
    repeated = await api.client.get(
        url,
        params=[("label", "judge.label"), *(("categories", c) for c in ["neu", "pos", "neg"])],
    )
    listed = await api.get(url, label="judge.label", categories="neu,pos,neg")

    assert repeated.status_code == listed.status_code == 200, listed.text
    assert listed.json()["evaluate"]["categories"] == ["neu", "pos", "neg"]
    assert without_time(listed.json()) == without_time(repeated.json())
    quoted = await api.get(url, label="judge.label", categories='"a,b",pos')
    assert quoted.json()["evaluate"]["categories"] == ["a,b", "pos"]


async def test_a_label_path_no_finished_job_has_is_a_note_naming_the_paths_outputs_have(
    api: Api,
) -> None:
    answer = await api.get(f"/api/batches/{api.ids['first']}/report", label="judge.lable")

    assert answer.status_code == 200, answer.text
    assert answer.json()["notes"] == [
        "no finished job has an output at judge.lable; outputs have: judge.label"
    ]
    assert answer.json()["overall"]["missing"]["no_label"] == 19
    right = (await api.get(f"/api/batches/{api.ids['first']}/report")).json()
    assert right["notes"] == []


async def test_create_refuses_a_label_without_a_key(api: Api) -> None:
    body = {"flow_name": "scored", "evaluate": {"label": "judge"}}
    answer = await api.client.post("/api/batches", json=body)

    assert answer.status_code == 422, answer.text
    assert "names an agent but no key" in answer.json()["error"]["message"]
