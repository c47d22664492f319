"""Source data reaches agents, the store and exports exactly, or is refused in one line.

Through the real CLI: a file with hostile values is planned, stored, sent (on Pub/Sub
inside the message too), run by an agent that echoes what it received, and exported; every
value must come back as the file held it. Bad files are refused with one ``error:`` line
naming the file and line, exit code 2, and nothing created.
"""

from __future__ import annotations

import base64
import codecs
import csv
import json
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import Env
from test_api import api_server

from buttermilk import values
from buttermilk.values import NonFiniteFloat

IMAGE = bytes(range(256)) * 2  # every byte value, as in a PNG
BIG = 123456789012345678901234567890


def echo_env(env: Env, path: Path, encoding: str | None = None) -> Env:
    env.extra.update(T_ECHO_DATA=str(path))
    if encoding:
        env.extra.update(T_ECHO_ENCODING=encoding)
    return env


def echoed_batch(env: Env) -> str:
    """Run a batch of t_echo to its end; its id."""
    batch = env.ok("flow=t_echo", "batch.wait=true", "batch.format=json").json()
    assert batch["status"] == "completed" and batch["counts"]["completed"] == batch["total"]
    return str(batch["batch_id"])


def echoed(env: Env) -> dict[str, dict[str, Any]]:
    """Run a batch of t_echo to its end; what its agent received, by record id."""
    jobs = env.store().iter_jobs(echoed_batch(env))
    return {job.record_id: job.result["outputs"]["echo"] for job in jobs if job.result}


def exported(env: Env, batch_id: str, suffix: str) -> Path:
    out = env.home / f"export{suffix}"
    env.ok("batch.command=export", f"batch.batch_id={batch_id}", f"batch.output={out}")
    return out


# -- exact values -------------------------------------------------------------------------


def test_parquet_bytes_big_integers_decimals_and_nan_reach_the_agent_and_exports_exactly(
    env: Env,
) -> None:
    """Both transports: on Pub/Sub the record also travels inside the message."""
    table = pa.table(
        {
            "id": ["a", "b"],
            "text": ["first", "zero\x00width"],
            "image": pa.array([IMAGE, b""], pa.binary()),
            "hash": pa.array([2**64 - 1, 5], pa.uint64()),
            "price": pa.array([Decimal("1.50"), Decimal("-0.001")], pa.decimal128(10, 3)),
            "score": [float("nan"), float("-inf")],
            "nested": [{"bytes": b"\xff", "path": "cat.png"}, {"bytes": b"\x00", "path": "d"}],
        }
    )
    pq.write_table(table, env.data / "images.parquet")

    got = echoed(echo_env(env, env.data / "images.parquet"))

    a, b = got["a"], got["b"]
    assert a["metadata"]["image"] == IMAGE and a["types"]["image"] == "bytes"
    assert a["metadata"]["hash"] == 2**64 - 1
    assert a["metadata"]["price"] == Decimal("1.500") and a["types"]["price"] == "Decimal"
    assert str(a["metadata"]["score"]) == "nan" and str(b["metadata"]["score"]) == "-inf"
    assert a["types"]["score"] == "NonFiniteFloat"
    assert a["metadata"]["nested"] == {"bytes": b"\xff", "path": "cat.png"}
    assert b["content"] == "zero\x00width" and b["metadata"]["image"] == b""


@pytest.mark.backends("local")
def test_the_api_shows_bytes_as_tags_and_refuses_a_file_not_in_its_encoding_with_422(
    env: Env,
) -> None:
    pq.write_table(
        pa.table({"id": ["a"], "image": pa.array([b"\xff\x00"], pa.binary())}),
        env.data / "img.parquet",
    )
    batch_id = echoed_batch(echo_env(env, env.data / "img.parquet"))
    (env.data / "avis.csv").write_bytes(b"id,text\n1,ok\n2,caf\xe9\n")

    with api_server(env) as api:
        listed = api.client.get(f"/api/batches/{batch_id}/jobs")
        one = api.client.get(f"/api/batches/{batch_id}/jobs/a")
        results = api.client.get(f"/api/batches/{batch_id}/results")
    env.extra.update(T_ECHO_DATA=str(env.data / "avis.csv"))
    with api_server(env) as api:  # a server whose flow reads a file that is not UTF-8
        refused = api.client.post("/api/batches", json={"flow_name": "t_echo"})
        after = api.client.get("/api/batches").json()["total"]

    assert refused.status_code == 422, refused.text
    assert "avis.csv:3: not valid UTF-8 (byte 0xe9)" in refused.json()["error"]["message"]
    assert after == 1  # only the batch made before
    tag = {"$bytes": base64.b64encode(b"\xff\x00").decode()}
    assert listed.status_code == 200 and one.status_code == 200, (listed.text, one.text)
    assert listed.json()["items"][0]["result"]["outputs"]["echo"]["metadata"] == {"image": tag}
    assert one.json()["record"]["metadata"] == {"image": tag}
    assert values.loads(results.content)["metadata"] == {"image": b"\xff\x00"}


@pytest.mark.backends("local")
def test_an_export_keeps_every_value_in_each_format(env: Env) -> None:
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b"],
                "image": pa.array([IMAGE, b"\x01"], pa.binary()),
                "hash": pa.array([2**64 - 1, 5], pa.uint64()),
                "score": [float("nan"), 0.5],
            }
        ),
        env.data / "u64.parquet",
    )
    batch_id = echoed_batch(echo_env(env, env.data / "u64.parquet"))

    jsonl = {
        row["record_id"]: row
        for row in map(values.loads, exported(env, batch_id, ".jsonl").read_bytes().splitlines())
    }
    parquet = {
        r["record_id"]: r for r in pq.read_table(exported(env, batch_id, ".parquet")).to_pylist()
    }
    with exported(env, batch_id, ".csv").open(newline="") as fh:
        rows = {r["record_id"]: r for r in csv.DictReader(fh)}

    assert jsonl["a"]["metadata"] == {
        "image": IMAGE,
        "hash": 2**64 - 1,
        "score": jsonl["a"]["metadata"]["score"],
    }
    assert isinstance(jsonl["a"]["metadata"]["score"], NonFiniteFloat)
    assert parquet["a"]["metadata.image"] == IMAGE and parquet["a"]["metadata.hash"] == 2**64 - 1
    assert parquet["b"]["outputs.echo.metadata.hash"] == 5
    assert values.loads(rows["a"]["metadata.image"]) == IMAGE
    assert rows["a"]["metadata.hash"] == str(2**64 - 1) and rows["a"]["metadata.score"] == "nan"


@pytest.mark.backends("local")
def test_jsonl_big_integers_and_objects_shaped_like_tags_are_kept_as_written(env: Env) -> None:
    path = env.data / "big.jsonl"
    path.write_bytes(
        codecs.BOM_UTF8
        + f'{{"id": {BIG}, "text": "a", "n": {BIG + 1}, "raw": {{"$bytes": "AA=="}}}}\n'.encode()
        + f'{{"id": {BIG + 1}, "text": "b", "n": -{BIG}}}\n'.encode()
    )

    got = echoed(echo_env(env, path))

    assert sorted(got) == [str(BIG), str(BIG + 1)]
    assert got[str(BIG)]["metadata"] == {"n": BIG + 1, "raw": {"$bytes": "AA=="}}
    assert got[str(BIG + 1)]["metadata"]["n"] == -BIG


@pytest.mark.backends("local")
def test_csv_long_fields_a_byte_order_mark_and_another_encoding_read_exactly(env: Env) -> None:
    long_text = "word, " * 40_000  # 240 KB: past the csv module's default field limit
    path = env.data / "docs.csv"
    with path.open("w", newline="", encoding="cp1252") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label"])
        writer.writerow(["1", long_text, "café"])
        writer.writerow(["2", 'she said "great"\nand left', ""])

    got = echoed(echo_env(env, path, encoding="cp1252"))

    assert got["1"]["content"] == long_text and got["1"]["metadata"] == {"label": "café"}
    assert got["2"]["content"] == 'she said "great"\nand left'
    assert got["2"]["metadata"] == {"label": ""}


# -- refused files ------------------------------------------------------------------------


def _lines(*rows: str) -> bytes:
    return "".join(row + "\n" for row in rows).encode()


BAD_FILES = [
    pytest.param(
        "reviews.csv",
        _lines("id,text,label", "1,fine,pos", "2,bad, really bad,neg"),
        "reviews.csv:3: 4 fields, the header has 3",
        id="csv-extra-field",
    ),
    pytest.param(
        "short.csv",
        _lines("id,text,label", "1,fine,pos", "2,bad"),
        "short.csv:3: 2 fields, the header has 3",
        id="csv-missing-field",
    ),
    pytest.param(
        "open.csv",
        _lines("id,text", "1,fine", '2,"broken on arrival', "3,ok", "4,fine"),
        "open.csv:3: a quoted field is never closed",
        id="csv-unclosed-quote",
    ),
    pytest.param(
        "stray.csv",
        _lines("id,text", '1,"she said "great" product', "2,ok"),
        "stray.csv:2:",
        id="csv-stray-quote",
    ),
    pytest.param(
        "avis.csv",
        b"id,text\n1,ok\n2,caf\xe9\n",
        "avis.csv:3: not valid UTF-8 (byte 0xe9); set encoding:",
        id="csv-not-utf8",
    ),
    pytest.param(
        "twice.csv",
        _lines("id,text,text", "1,a,b"),
        "twice.csv:1: the header names column 'text' twice",
        id="csv-repeated-column",
    ),
    pytest.param(
        "latin1.jsonl",
        b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "caf\xe9"}\n',
        "latin1.jsonl:2: not valid UTF-8 (byte 0xe9)",
        id="jsonl-not-utf8",
    ),
    pytest.param(
        "deep.jsonl",
        ('{"id": "deep", "x": ' + '{"a":' * 500 + "1" + "}" * 500 + "}\n").encode(),
        "deep.jsonl:1: nested more than 200 levels deep",
        id="jsonl-too-deep",
    ),
    pytest.param(
        "ids.jsonl",
        b'{"id": 1.5, "text": "a"}\n',
        "ids.jsonl:1: the record id in field 'id' is float",
        id="float-id",
    ),
    pytest.param(
        "nul.jsonl",
        b'{"id": "a\\u0000b", "text": "a"}\n',
        "nul.jsonl:1: the record id in field 'id' holds a NUL character",
        id="nul-in-id",
    ),
    pytest.param(
        "long.jsonl",
        json.dumps({"id": "x" * 600, "text": "a"}).encode() + b"\n",
        "long.jsonl:1: the record id in field 'id' is 600 characters long; at most 512",
        id="id-too-long",
    ),
]


@pytest.mark.backends("local")
@pytest.mark.parametrize(("name", "data", "expected"), BAD_FILES)
def test_a_file_that_would_change_data_is_refused_in_one_line_naming_file_and_line(
    env: Env, name: str, data: bytes, expected: str
) -> None:
    (env.data / name).write_bytes(data)

    result = echo_env(env, env.data / name).cli("flow=t_echo")

    assert result.returncode == 2, str(result)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1], str(result)
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert "Traceback" not in result.stderr
    db = env.home / "batches.db"
    if db.exists():
        assert sqlite3.connect(db).execute("select count(*) from batches").fetchone() == (0,)
    assert env.queue_depth() == 0


def test_base64_in_the_tag_is_the_standard_alphabet() -> None:
    """The tag's documented form: other tools decode it with any base64 library."""
    assert values.json_ready(IMAGE[:3]) == {"$bytes": base64.b64encode(IMAGE[:3]).decode()}
