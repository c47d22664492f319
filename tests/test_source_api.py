"""The HTTP API over the new sources: a bad source is 422 with the CLI's message, a
source's service not reached is 503, a stratified create stores its groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Env
from test_api import api_server, error_of


@pytest.mark.slow
@pytest.mark.backends("local")
def test_the_api_refuses_bad_sources_as_the_cli_does_and_creates_strata(
    env: Env, tmp_path: Path
) -> None:
    rows = [{"id": f"p{i}", "text": f"post {i}", "label": "ab"[i % 2]} for i in range(10)]
    (env.data / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    flows = tmp_path / "myconf" / "flows"
    flows.mkdir(parents=True)
    (flows / "later.yaml").write_text(
        "name: later\ndata:\n  round1: {type: batch, batch_id: zzzz}\n"
        "agents:\n  - {name: echo, _target_: buttermilk.agents.testing.echo}\n"
    )
    (flows / "down.yaml").write_text(
        "name: down\ndata:\n  db: {type: sql, url: 'postgresql+psycopg://u:pw@127.0.0.1:1/x', "
        "query: select 1}\nagents:\n  - {name: echo, _target_: buttermilk.agents.testing.echo}\n"
    )
    env.base_args = ["--config-dir", str(tmp_path / "myconf")]
    cli_line = env.cli("flow=later").stderr.strip().splitlines()[-1]

    with api_server(env) as api:
        refused = error_of(api.client.post("/api/batches", json={"flow_name": "later"}), 422)
        down = error_of(api.client.post("/api/batches", json={"flow_name": "down"}), 503)
        created = api.client.post(
            "/api/batches",
            json={
                "flow_name": "t_echo",
                "max_records": 4,
                "stratify": "label",
                "stratify_mode": "equal",
            },
        )

    assert cli_line == f"error: {refused['message']}"
    assert refused["message"].startswith("data source 'round1': unknown batch id 'zzzz'")
    assert down["message"].startswith("data source 'db' (postgresql+psycopg://u:***@127.0.0.1:1")
    assert "pw@" not in down["message"]
    assert created.status_code == 201, created.text
    assert created.json()["request"]["strata"] == {"a": 2, "b": 2}
    assert len(env.store().list_batches()) == 1
