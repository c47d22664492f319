"""The HTTP API through a real ``ui=api`` server process on loopback, with httpx.

Each test starts its own server (``python -m buttermilk.runner.cli ui=api``) on a free
port over the test's private state folder, so batches created with the API are seen by
the CLI and by workers started with ``batch.command=run``, and the other way round.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from conftest import Env, stop_process, wait_until, write_records
from sqlalchemy import make_url

from buttermilk.domain import BatchRequest
from buttermilk.records import Record

START_TIMEOUT = 30.0
FAIL_ON = ["r00001", "r00004"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ApiServer:
    proc: subprocess.Popen[str]
    url: str
    client: httpx.Client
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text()


@contextmanager
def api_server(env: Env, *args: str, token: str | None = None) -> Iterator[ApiServer]:
    """A ``ui=api`` server on a free loopback port, killed afterwards.

    ``token`` goes to the client's Authorization header (the server's own token comes
    from ``args`` or the environment).
    """
    env.extra.setdefault("BUTTERMILK_API_TOKEN", "")  # not the caller's own token
    port = free_port()
    log_name = f"api-{port}"
    proc = env.popen("ui=api", f"api.port={port}", *args, log_name=log_name)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    server = ApiServer(
        proc,
        url,
        httpx.Client(base_url=url, headers=headers, timeout=30),
        env.home / f"{log_name}.log",
    )

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the API server exited with {proc.returncode}:\n{server.log}")
        try:
            return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(answers, START_TIMEOUT, f"the API server to answer on {url}")
        yield server
    finally:
        server.client.close()
        stop_process(proc)  # a clean stop on SIGTERM is tested on its own


@pytest.fixture
def api(env: Env) -> Iterator[ApiServer]:
    """A server whose create defaults differ from the built-in ones (concurrency 3, one attempt)."""
    with api_server(
        env, "batch.concurrency=3", "batch.max_attempts=1", "batch.retry_delay=0"
    ) as server:
        yield server


def create(api: ApiServer, **body: Any) -> dict[str, Any]:
    response = api.client.post("/api/batches", json={"flow_name": "t_work", **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The body's error object, after checking the status and the one error shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["message"]
    return dict(body["error"])


def test_create_answers_201_with_the_batch_or_422_naming_the_api_field_of_a_bad_value(
    env: Env, api: ApiServer
) -> None:
    write_records(env.data / "records.jsonl", 12)
    invalid: list[tuple[Any, str | None, str]] = [
        ({"flow_name": "t_work", "concurrency": 0}, "concurrency", "greater than or equal to 1"),
        ({"flow_name": "t_work", "max_records": 0}, "max_records", "greater than or equal to 1"),
        ({"flow_name": "t_work", "error_policy": "maybe"}, "error_policy", "'continue' or 'stop'"),
        ({"flow_name": "t_work", "shuffle": None}, "shuffle", "valid boolean"),
        ({"flow_name": "t_work", "flow_parameters": [1]}, "flow_parameters", "valid dictionary"),
        ({"flow_name": "t_work", "concurrency": 2**40}, "concurrency", "less than or equal"),
        (
            {
                "flow_name": "t_work",
                "flow_parameters": {"model": {"steps": [{"_target_": "os.system"}]}},
            },
            "flow_parameters",
            "_target_ is not allowed",
        ),
        ({"shuffle": True}, "flow_name", "flow_name is required"),
        ({"flow_name": "t_work", "parameters": {}}, "parameters", "not a known field"),
        ({"flow_name": "no_such_flow"}, "flow_name", "unknown flow 'no_such_flow'"),
        (
            {"flow_name": "t_work", "evaluate": {"label": "nobody.label"}},
            "evaluate",
            "flow 't_work' has no agent 'nobody' (its agents: wait, check, tally)",
        ),
        (
            {"flow_name": "t_work", "evaluate": {"label": "check.failed", "kind": "rank"}},
            "evaluate.kind",
            "'nominal', 'ordinal' or 'interval'",
        ),
        ({"flow_name": "t_missing"}, "flow_name", "file not found"),
        ([], None, "not a JSON object"),
    ]
    for body, field, fragment in invalid:
        error = error_of(api.client.post("/api/batches", json=body), 422)
        assert error["field"] == field, (body, error)
        assert fragment in error["message"], (body, error)
    not_json = api.client.post(
        "/api/batches", content=b"{flow_name", headers={"Content-Type": "application/json"}
    )
    assert "not valid JSON" in error_of(not_json, 422)["message"]
    assert (
        error_of(api.client.post("/api/batches", json={"flow_name": "nope"}), 422)["code"]
        == "unknown_flow"
    )
    assert api.client.get("/api/batches").json()["total"] == 0

    response = api.client.post(
        "/api/batches",
        json={
            "flow_name": "t_work",
            "max_records": 5,
            "shuffle": False,
            "flow_parameters": {"sleep": 0},
            "evaluate": {"label": "check.failed", "kind": "nominal"},
        },
    )

    assert response.status_code == 201, response.text
    batch = response.json()
    assert response.headers["location"] == f"/api/batches/{batch['batch_id']}"
    assert batch["status"] == "pending" and batch["total"] == 5 and batch["flow"] == "t_work"
    assert batch["counts"] == {
        "pending": 5,
        "running": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }
    request = batch["request"]
    assert request["concurrency"] == 3 and request["max_attempts"] == 1  # the server's batch.*
    assert request["shuffle"] is False and request["parameters"] == {"sleep": 0}
    assert request["error_policy"] == "continue" and request["interactive"] is False
    assert request["evaluate"]["label"] == "check.failed"
    # The CLI sees the batch the API created: one store, one service.
    assert env.status(batch["batch_id"])["total"] == 5
    # A seed in the body repeats a shuffled sample: the same records twice.
    seeded = {"flow_name": "t_work", "max_records": 4, "seed": 5, "flow_parameters": {"sleep": 0}}
    samples = []
    for _ in range(2):
        made = api.client.post("/api/batches", json=seeded)
        assert made.status_code == 201 and made.json()["request"]["seed"] == 5, made.text
        jobs = api.client.get(f"/api/batches/{made.json()['batch_id']}/jobs").json()["items"]
        samples.append(sorted(job["record_id"] for job in jobs))
    assert samples[0] == samples[1] and len(samples[0]) == 4


def test_batches_are_listed_newest_first_found_by_id_prefix_and_cancelled_idempotently(
    env: Env, api: ApiServer
) -> None:
    write_records(env.data / "records.jsonl", 4)
    ids = [create(api)["batch_id"] for _ in range(3)]
    review = create(api, flow_name="t_review")["batch_id"]

    cancelled = api.client.delete(f"/api/batches/{ids[1][:8]}")
    again = api.client.delete(f"/api/batches/{ids[1]}")

    assert cancelled.status_code == again.status_code == 200
    assert cancelled.json()["status"] == again.json()["status"] == "cancelled"
    assert cancelled.json()["counts"]["cancelled"] == 4
    assert again.json()["finished_at"] == cancelled.json()["finished_at"]
    assert env.status(ids[1])["status"] == "cancelled"

    newest_first = [review, *reversed(ids)]
    first = api.client.get("/api/batches", params={"limit": 3}).json()
    second = api.client.get("/api/batches", params={"limit": 3, "offset": 3}).json()
    assert [b["batch_id"] for b in first["items"]] == newest_first[:3]
    assert [b["batch_id"] for b in second["items"]] == newest_first[3:]
    assert first["total"] == second["total"] == 4
    assert (first["limit"], second["offset"]) == (3, 3)
    assert first["items"][0]["counts"]["pending"] == 4 and first["items"][0]["progress"] == 0
    only_cancelled = api.client.get("/api/batches", params={"status": "cancelled"}).json()
    assert [b["batch_id"] for b in only_cancelled["items"]] == [ids[1]]
    assert only_cancelled["total"] == 1
    work = api.client.get("/api/batches", params={"flow": "t_work", "status": "pending"}).json()
    assert [b["batch_id"] for b in work["items"]] == [ids[2], ids[0]] and work["total"] == 2
    assert error_of(api.client.get("/api/batches", params={"limit": 0}), 422)["field"] == "limit"
    too_far = api.client.get("/api/batches", params={"offset": 2**63})  # past what SQL binds
    assert error_of(too_far, 422)["field"] == "offset"
    assert (
        error_of(api.client.get("/api/batches", params={"status": "done"}), 422)["field"]
        == "status"
    )

    full = api.client.get(f"/api/batches/{review}").json()
    by_prefix = api.client.get(f"/api/batches/{review[:6]}").json()
    assert full["batch_id"] == by_prefix["batch_id"] == review and full["flow"] == "t_review"
    assert {
        "status",
        "counts",
        "progress",
        "rate",
        "eta_seconds",
        "created_at",
        "common_errors",
    } <= set(full)
    # A batch without axes or repeats: one combination, whose counts are the batch's.
    assert (full["variants"], full["repeats"], full["combination_count"]) == ({}, 1, 1)
    assert full["combinations"] == [
        {
            "variant": "default",
            "values": {},
            "total": 4,
            "done": 0,
            "progress": 0,
            "counts": full["counts"],
        }
    ]
    assert first["items"][0]["combinations"] is None  # a list reads no job per batch
    for path in ("", "/jobs", "/jobs/r00000", "/results", "/results?format=csv"):
        error = error_of(api.client.get(f"/api/batches/ffffffffffff{path}"), 404)
        assert error["code"] == "not_found" and "ffffffffffff" in error["message"]
    assert error_of(api.client.delete("/api/batches/ffffffffffff"), 404)["code"] == "not_found"
    assert (
        "nobody" in error_of(api.client.get(f"/api/batches/{review}/jobs/nobody"), 404)["message"]
    )


def test_jobs_results_and_common_errors_of_a_batch_a_worker_ran(
    env: Env, api: ApiServer, tmp_path: Path
) -> None:
    write_records(env.data / "records.jsonl", 8)
    batch_id = create(api, flow_parameters={"fail_on": FAIL_ON})["batch_id"]

    env.ok("batch.command=run", "batch.idle_timeout=0.5")

    batch = api.client.get(f"/api/batches/{batch_id}").json()
    assert batch["status"] == "completed" and batch["progress"] == 1
    assert batch["counts"]["completed"] == 6 and batch["counts"]["failed"] == 2
    assert batch["rate"] > 0 and batch["started_at"] and batch["finished_at"]
    errors = batch["common_errors"]  # the message names the record: one error per record
    assert [(e["count"], e["error_type"]) for e in errors] == [(1, "AgentError")] * 2
    assert sorted(rid for e in errors for rid in FAIL_ON if rid in e["error_message"]) == FAIL_ON

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = api.client.get(f"/api/batches/{batch_id}/jobs", params=params).json()
        pages.append(page)
        if page["next_after_seq"] is None:
            break
        params["after_seq"] = page["next_after_seq"]
    jobs = [job for page in pages for job in page["items"]]
    assert [len(page["items"]) for page in pages] == [3, 3, 2]
    assert [job["seq"] for job in jobs] == list(range(8)) and pages[0]["total"] == 8
    assert "record" not in jobs[0] and "traceback" not in jobs[0]
    recent = api.client.get(f"/api/batches/{batch_id}/jobs", params={"order": "recent"}).json()
    started = [job["started_at"] for job in recent["items"]]
    assert len(started) == 8 and started == sorted(started, reverse=True)
    assert recent["next_after_seq"] is None
    failed = api.client.get(f"/api/batches/{batch_id}/jobs", params={"status": "failed"}).json()
    assert sorted(job["record_id"] for job in failed["items"]) == FAIL_ON and failed["total"] == 2

    one = api.client.get(f"/api/batches/{batch_id}/jobs/{FAIL_ON[0]}").json()
    assert one["status"] == "failed" and one["error_type"] == "AgentError"
    assert "failing on purpose" in one["error_message"] and "Traceback" in one["traceback"]
    assert one["record"]["record_id"] == FAIL_ON[0] and FAIL_ON[0] in one["record"]["content"]
    ok = api.client.get(f"/api/batches/{batch_id[:5]}/jobs/r00000").json()
    assert ok["status"] == "completed" and ok["result"]["outputs"]["check"] == {"failed": False}

    # The streamed results are exactly the rows the CLI's export writes.
    exported = tmp_path / "export.jsonl"
    env.ok("batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={exported}")
    streamed = api.client.get(f"/api/batches/{batch_id}/results")
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in streamed.text.splitlines()] == [
        json.loads(line) for line in exported.read_text().splitlines()
    ]
    exported_csv = tmp_path / "export.csv"
    env.ok("batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={exported_csv}")
    streamed_csv = api.client.get(f"/api/batches/{batch_id}/results", params={"format": "csv"})
    assert streamed_csv.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(streamed_csv.text))) == list(
        csv.reader(io.StringIO(exported_csv.read_text()))
    )
    assert (
        error_of(api.client.get(f"/api/batches/{batch_id}/results?format=xml"), 422)["field"]
        == "format"
    )

    # An ended batch cannot be cancelled.
    conflict = error_of(api.client.delete(f"/api/batches/{batch_id}"), 409)
    assert conflict["code"] == "conflict" and "completed" in conflict["message"]
    assert api.client.get(f"/api/batches/{batch_id}").json()["status"] == "completed"


def test_results_stream_every_job_of_a_large_batch_in_planned_order(
    env: Env, api: ApiServer
) -> None:
    ids = write_records(env.data / "records.jsonl", 1_250)  # several chunks of the stream
    batch_id = create(api, shuffle=False)["batch_id"]

    with api.client.stream("GET", f"/api/batches/{batch_id}/results") as response:
        assert response.status_code == 200
        rows = [json.loads(line) for line in response.iter_lines() if line]

    assert [row["record_id"] for row in rows] == ids
    assert {row["status"] for row in rows} == {"pending"}


def test_flows_docs_and_the_dashboard_are_served_until_sigterm_stops_the_server(
    env: Env, api: ApiServer
) -> None:
    flows = {flow["name"]: flow for flow in api.client.get("/api/flows").json()}
    docs = api.client.get("/docs")
    schema = api.client.get("/openapi.json").json()
    page = api.client.get("/")

    assert {"sentiment", "t_work", "t_missing", "t_review"} <= set(flows)
    work = flows["t_work"]
    assert work["description"].startswith("Test flow. Waits")
    assert work["data"]["records"]["path"] == f"{env.data}/records.jsonl"
    assert work["agents"] == ["wait", "check", "tally"]
    assert work["parameters"] == {"sleep": 0.0, "fail_on": [], "tally_file": None}
    assert work["error"] is None
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert "cdn" not in docs.text  # served from local files: works without internet
    assert api.client.get("/static/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert {"/api/batches", "/api/batches/{batch_id}", "/api/flows"} <= set(schema["paths"])
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert api.client.get("/batches/abc").text == page.text  # the batch page is the same page
    assert api.client.get("/static/app.js").status_code == 200
    assert error_of(api.client.get("/api/nothing-here"), 404)["code"] == "not_found"
    assert error_of(api.client.put("/api/batches"), 405)["code"] == "method_not_allowed"

    api.proc.send_signal(signal.SIGTERM)

    assert api.proc.wait(timeout=15) == 0
    assert "SIGTERM: stopping the API server" in api.log


def test_every_api_route_needs_the_bearer_token_when_one_is_set(env: Env) -> None:
    write_records(env.data / "records.jsonl", 3)
    env.extra["BUTTERMILK_API_TOKEN"] = "s3cret-token"  # through the config's oc.env
    with api_server(env) as server:
        anonymous = server.client
        wrong = {"Authorization": "Bearer not-it"}
        right = {"Authorization": "Bearer s3cret-token"}
        routes = [
            ("GET", "/api/batches"),
            ("GET", "/api/batches/abc"),
            ("DELETE", "/api/batches/abc"),
            ("GET", "/api/batches/abc/jobs"),
            ("GET", "/api/batches/abc/jobs/r1"),
            ("GET", "/api/batches/abc/results"),
            ("POST", "/api/batches/abc/retry"),
            ("GET", "/api/flows"),
            ("POST", "/api/batches"),
        ]
        for method, path in routes:
            missing = anonymous.request(method, path, json={"flow_name": "t_work"})
            assert error_of(missing, 401)["code"] == "unauthorized", path
            assert missing.headers["www-authenticate"] == "Bearer"
            assert (
                "not valid"
                in error_of(anonymous.request(method, path, headers=wrong), 401)["message"]
            )

        assert anonymous.get("/api/batches", headers=right).status_code == 200
        created = anonymous.post("/api/batches", headers=right, json={"flow_name": "t_work"})
        assert created.status_code == 201
        assert (
            anonymous.get("/").status_code == 200
        )  # the page holds no data; it asks for the token
        assert anonymous.get("/docs").status_code == 200
    assert "a bearer token is required" in server.log


def test_the_server_refuses_to_start_when_it_would_be_unsafe_or_cannot_listen(env: Env) -> None:
    env.extra["BUTTERMILK_API_TOKEN"] = ""
    exposed = env.cli("ui=api", "api.host=0.0.0.0", f"api.port={free_port()}", timeout=60)
    assert exposed.returncode == 2, str(exposed)
    [line] = exposed.stderr.strip().splitlines()
    assert line.startswith("error: api.host=0.0.0.0 is reachable from other machines")
    assert "api.token" in line

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = env.cli("ui=api", f"api.port={port}", timeout=60)
    assert busy.returncode == 2 and f"cannot serve on 127.0.0.1:{port}" in busy.stderr, str(busy)

    bad_default = env.cli("ui=api", f"api.port={free_port()}", "batch.concurrency=0", timeout=60)
    assert bad_default.returncode == 2 and "batch.concurrency=0" in bad_default.stderr, str(
        bad_default
    )


def test_an_ambiguous_batch_id_prefix_is_a_400_naming_the_matches(env: Env, api: ApiServer) -> None:
    for batch_id in ("kab123", "kab456"):
        env.store().create_batch(
            batch_id=batch_id,
            request=BatchRequest(flow="t_work"),
            flow_snapshot={},
            seed=1,
            records=[Record(record_id="r1", content="x")],
        )

    error = error_of(api.client.get("/api/batches/kab"), 400)

    assert error["code"] == "ambiguous_id"
    assert "kab123" in error["message"] and "kab456" in error["message"]
    assert api.client.get("/api/batches/kab4").json()["batch_id"] == "kab456"


@pytest.mark.slow
@pytest.mark.backends("local")
def test_store_failures_answer_503_naming_the_store_without_its_password_and_bad_values_400(
    env: Env, postgres_url: str
) -> None:
    password = "s3cret-pw"
    url = make_url(postgres_url).set(password=password)
    env.extra["BUTTERMILK_STORE_URL"] = url.render_as_string(hide_password=False)
    write_records(env.data / "records.jsonl", 3)
    with api_server(env, "store=postgres") as api:
        batch_id = create(api)["batch_id"]
        # PostgreSQL text cannot hold NUL: no batch or job has such an id to look up.
        for nul in (
            api.client.get("/api/batches/%00"),
            api.client.get(f"/api/batches/{batch_id}/jobs/a%00b"),
            api.client.get("/api/batches", params={"flow": "t\x00work"}),
        ):
            error = error_of(nul, 400)
            assert error["code"] == "bad_request" and "NUL" in error["message"]
        assert api.client.get("/api/batches").json()["total"] == 1
        with psycopg.connect(host=url.host, user=url.username, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')

        answers = [
            api.client.get("/api/batches"),
            api.client.post("/api/batches", json={"flow_name": "t_work"}),
            api.client.get(f"/api/batches/{batch_id}"),
            api.client.delete(f"/api/batches/{batch_id}"),
            api.client.get(f"/api/batches/{batch_id}/jobs"),
            api.client.get(f"/api/batches/{batch_id}/jobs/r00000"),
            api.client.get(f"/api/batches/{batch_id}/results"),
        ]

        for answer in answers:
            error = error_of(answer, 503)
            assert error["code"] == "unavailable", error
            assert error["message"].startswith(
                f"cannot reach the batch store at {url.render_as_string(hide_password=True)}: "
            ), error
            assert password not in answer.text and "SELECT" not in answer.text
        assert password not in api.log and "Traceback" not in api.log
        assert "cannot reach the batch store" in api.log


@pytest.mark.slow
@pytest.mark.backends("local")
def test_a_body_over_the_cap_is_refused_413_and_batch_lists_leave_out_parameters(
    env: Env,
) -> None:
    write_records(env.data / "records.jsonl", 2)
    with api_server(env, "api.max_body_bytes=2000") as api:
        fits = {"flow_name": "t_work", "flow_parameters": {"note": "x" * 1500}}
        too_big = {"flow_name": "t_work", "flow_parameters": {"note": "x" * 2000}}
        declared = api.client.post("/api/batches", json=too_big)
        streamed = api.client.post(  # chunked: no Content-Length to check up front
            "/api/batches",
            content=iter([json.dumps(too_big)[:1000].encode(), b"x" * 1500]),
            headers={"Content-Type": "application/json"},
        )
        created = api.client.post("/api/batches", json=fits)

        for refused in (declared, streamed):
            error = error_of(refused, 413)
            assert error["code"] == "payload_too_large"
            assert "2000 bytes" in error["message"] and "api.max_body_bytes" in error["message"]
        assert "transfer-encoding" in streamed.request.headers
        assert created.status_code == 201, created.text
        # A batch stored with 5 MB of parameters (by an older server, or the CLI).
        env.store().create_batch(
            batch_id="kbig00000000",
            request=BatchRequest(flow="t_work", parameters={"blob": "y" * 5_000_000}),
            flow_snapshot={},
            seed=1,
            records=[Record(record_id="r1", content="x")],
        )

        listed = api.client.get("/api/batches")
        one = api.client.get("/api/batches/kbig00000000").json()

        assert listed.status_code == 200 and len(listed.content) < 10_000
        items = listed.json()["items"]
        assert [b["batch_id"] for b in items] == ["kbig00000000", created.json()["batch_id"]]
        assert all("parameters" not in b["request"] for b in items)
        assert all(b["request"]["flow"] == "t_work" for b in items)
        assert one["request"]["parameters"] == {"blob": "y" * 5_000_000}
        assert api.client.get(f"/api/batches/{created.json()['batch_id']}").json()["request"][
            "parameters"
        ] == {"note": "x" * 1500}


ODD_RECORD_IDS = [
    "line\nbreak",
    "end\n",
    "end",
    "a/b",
    "a/../b",
    "..",
    ".",
    "100%",
    "%2F",
    "q?x=1&y",
    "h#frag",
    " spaced ",
    "tab\there",
    "bell\x07",
    "é漢🙂",
    "trailing/",
]


def raw_get(api: ApiServer, path: str) -> tuple[int, dict[str, Any]]:
    """GET a path exactly as given: httpx, like browsers, rewrites ``.`` and ``..`` segments."""
    host, port = api.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


@pytest.mark.slow
def test_every_listed_job_is_fetched_by_its_percent_encoded_record_id(
    env: Env, api: ApiServer
) -> None:
    with (env.data / "records.jsonl").open("w") as fh:
        for rid in ODD_RECORD_IDS:
            fh.write(json.dumps({"id": rid, "text": f"text of {rid}"}) + "\n")
    batch_id = create(api, shuffle=False)["batch_id"]

    listed = api.client.get(f"/api/batches/{batch_id}/jobs").json()["items"]

    assert [job["record_id"] for job in listed] == ODD_RECORD_IDS
    for rid in ODD_RECORD_IDS:
        path = f"/api/batches/{batch_id}/jobs/{quote(rid, safe='')}"
        status, by_path = raw_get(api, path)
        by_query = api.client.get(f"/api/batches/{batch_id}/job", params={"record_id": rid})
        assert status == 200 and by_path["record_id"] == rid, (rid, by_path)
        assert by_path["record"]["content"] == f"text of {rid}"
        assert by_query.status_code == 200 and by_query.json()["record_id"] == rid, rid
        if rid not in (".", ".."):
            assert api.client.get(path).json()["record_id"] == rid
    missing = error_of(api.client.get(f"/api/batches/{batch_id}/job?record_id=nobody"), 404)
    assert "nobody" in missing["message"]
    assert error_of(api.client.get(f"/api/batches/{batch_id}/job"), 422)["field"] == "record_id"


@pytest.mark.backends("local")  # the grid on Pub/Sub and PostgreSQL: test_variants.py
def test_variants_and_repeats_create_a_grid_shown_per_combination_and_retried_by_one(
    env: Env, api: ApiServer
) -> None:
    write_records(env.data / "records.jsonl", 2)
    broken = env.data / "broken"
    broken.touch()  # r00001 fails while this file exists
    invalid: list[tuple[dict[str, Any], str, str]] = [
        ({"variants": {"nobody.model": ["a"]}}, "variants", "has no agent 'nobody'"),
        ({"variants": {"check.message": []}}, "variants", "empty list"),
        ({"variants": ["check.message"]}, "variants", "valid dictionary"),
        ({"variants": {"check.colour": ["red"]}}, "variants", "colour"),
        ({"variants": {"check.message": [{"_target_": "os.system"}]}}, "variants", "_target_"),
        ({"repeats": 0}, "repeats", "greater than or equal to 1"),
    ]
    for body, field, fragment in invalid:
        error = error_of(api.client.post("/api/batches", json={"flow_name": "t_work", **body}), 422)
        assert (error["field"], fragment in error["message"]) == (field, True), (body, error)

    created = create(
        api,
        shuffle=False,
        variants={"check.message": ["alpha", "beta"]},
        repeats=2,
        flow_parameters={"fail_on": ["r00001"], "fail_while": str(broken)},
    )
    env.ok("batch.command=run", "batch.idle_timeout=0.5")
    batch = api.client.get(f"/api/batches/{created['batch_id']}").json()
    listed = api.client.get("/api/batches").json()["items"][0]

    assert created["total"] == 2 * 2 * 2 and created["repeats"] == 2
    assert batch["variants"] == {"check.message": ["alpha", "beta"]}
    assert [(c["variant"], c["values"], c["counts"]["failed"]) for c in batch["combinations"]] == [
        ("alpha", {"check.message": "alpha"}, 2),
        ("beta", {"check.message": "beta"}, 2),
    ]
    assert (listed["combination_count"], listed["combinations"]) == (2, None)
    jobs = api.client.get(f"/api/batches/{created['batch_id']}/jobs").json()["items"]
    assert [(j["record_id"], j["repeat"], j["variant"]) for j in jobs[:4]] == [
        ("r00000", 0, "alpha"),
        ("r00000", 0, "beta"),
        ("r00000", 1, "alpha"),
        ("r00000", 1, "beta"),
    ]
    for job in jobs:  # each listed job, by its URL: its own combination and repeat
        which = {"variant": job["variant"], "repeat": job["repeat"]}
        base = f"/api/batches/{created['batch_id']}"
        by_path = api.client.get(f"{base}/jobs/{job['record_id']}", params=which).json()
        by_query = api.client.get(f"{base}/job", params={"record_id": job["record_id"], **which})
        assert by_query.json() == by_path and by_path["seq"] == job["seq"], job
        assert by_path["record"]["record_id"] == job["record_id"]
        assert (by_path["variant"], by_path["repeat"]) == (job["variant"], job["repeat"])
    missing = api.client.get(f"/api/batches/{created['batch_id']}/jobs/r00000?variant=gamma")
    assert (
        "no combination 'gamma' (its combinations: alpha, beta" in error_of(missing, 404)["message"]
    )
    alpha = api.client.get(f"/api/batches/{created['batch_id']}/jobs", params={"variant": "alpha"})
    assert alpha.json()["total"] == 4 and {j["variant"] for j in alpha.json()["items"]} == {"alpha"}

    retry = f"/api/batches/{created['batch_id']}/retry"
    unknown = error_of(api.client.post(retry, json={"variant": "gamma"}), 422)
    broken.unlink()
    retried = api.client.post(retry, json={"variant": "alpha"})
    env.ok("batch.command=run", "batch.idle_timeout=0.5")
    after = api.client.get(f"/api/batches/{created['batch_id']}").json()

    assert unknown["field"] == "variant" and "alpha, beta" in unknown["message"]
    assert unknown["message"].startswith("variant='gamma'")
    assert retried.status_code == 200 and retried.json()["requeued"] == 2, retried.text
    assert [c["counts"]["failed"] for c in after["combinations"]] == [0, 2]
    nothing = error_of(api.client.post(retry, json={"variant": "alpha"}), 409)
    assert "nothing to retry" in nothing["message"]


@pytest.mark.backends("local")
def test_flows_whose_files_cannot_be_flows_are_listed_with_their_error_and_refused_with_422(
    env: Env, tmp_path: Path
) -> None:
    write_records(env.data / "records.jsonl", 2)
    mine = tmp_path / "myconf" / "flows"
    mine.mkdir(parents=True)
    (mine / "listed.yaml").write_text("- name: a\n- name: b\n")
    (mine / "sentiment.yaml").write_text("description: mine\nagents: []\n")

    with api_server(env, "--config-dir", str(tmp_path / "myconf")) as server:
        listed = server.client.get("/api/flows")
        created = [
            server.client.post("/api/batches", json={"flow_name": name})
            for name in ("listed", "sentiment")
        ]

    assert listed.status_code == 200, listed.text
    flows = {flow["name"]: flow for flow in listed.json()}
    assert flows["t_work"]["error"] is None and flows["t_work"]["agents"] == [
        "wait",
        "check",
        "tally",
    ]
    assert flows["listed"]["error"] == (
        f"flow 'listed': {mine}/listed.yaml holds a list, but a flow file must be a mapping "
        "(description:, data:, agents:, ...)"
    )
    assert flows["sentiment"]["error"].startswith("flow 'sentiment' is defined twice")
    assert [r.status_code for r in created] == [422, 422], [r.text for r in created]
    assert created[0].json()["error"]["message"] == flows["listed"]["error"]
    assert f"{mine}/sentiment.yaml" in created[1].json()["error"]["message"]
    assert env.store().list_batches() == []
