"""Images a record carries, sent by the LLM agent to a real local server speaking the OpenAI
chat protocol (``tests/fake_openai.py``): the exact ``image_url`` parts on the wire (a PNG
file written here, a URL passed through, bytes read from a Parquet file through a real
flow), one-line errors that fail the job without a call, the cache key, and the
estimate's image tokens against OpenAI's published tile formula.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_openai import FakeOpenAI, answer
from fake_openai import fake_openai as fake_openai  # the fixture
from PIL import Image

from buttermilk.agents.llm import LLM
from buttermilk.batch.planner import plan_records
from buttermilk.errors import PermanentError, UsageError
from buttermilk.flows.models import FlowConfig
from buttermilk.flows.runner import FlowRunner
from buttermilk.llm.estimate import estimate_agent
from buttermilk.llm.estimate_rows import CombinationEstimate, Estimate
from buttermilk.llm.image_tokens import patch_multiplier, patch_tokens, tile_formula, tile_tokens
from buttermilk.llm.images import ImageError
from buttermilk.llm.usage import count_tokens
from buttermilk.records import Record

URL = "https://images.example.org/cat.jpg"


def image_bytes(width: int, height: int, kind: str = "PNG") -> bytes:
    """A real one-colour image of ``width`` x ``height`` pixels, encoded as ``kind``."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, kind)
    return out.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def make_llm(fake: FakeOpenAI, **options: Any) -> LLM:
    defaults: dict[str, Any] = {
        "model": "test-model",
        "base_url": fake.base_url,
        "prompt": "Describe: {{ record.content }}",
        "backoff": 0.01,
    }
    return LLM(**{**defaults, **options})


def ask(agent: LLM, record: Record) -> dict[str, Any]:
    result: dict[str, Any] = anyio.run(agent, record, {}, {})
    return result


def user_content(fake: FakeOpenAI) -> Any:
    [seen] = fake.requests
    return [m for m in seen.messages if m["role"] == "user"][-1]["content"]


# -- on the wire ----------------------------------------------------------------------------


def test_a_png_file_goes_as_a_data_uri_and_a_url_as_itself_after_the_prompt_text(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    png = image_bytes(3, 2)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(png)
    agent = make_llm(
        fake_openai,
        images=["metadata.file", "metadata.link"],
        image_detail="low",
        image_root=str(tmp_path),
    )

    out = ask(
        agent, Record(record_id="r1", content="a cat", metadata={"file": "pics/a.png", "link": URL})
    )

    assert user_content(fake_openai) == [
        {"type": "text", "text": "Describe: a cat"},
        {"type": "image_url", "image_url": {"url": data_uri(png, "image/png"), "detail": "low"}},
        {"type": "image_url", "image_url": {"url": URL, "detail": "low"}},
    ]
    # The kept messages name the image instead of holding its bytes again.
    kept = out["messages"][-1]["content"]
    assert kept[1]["image_url"]["url"].startswith(f"[image/png, {len(png)} bytes, sha256 ")
    assert kept[2]["image_url"]["url"] == URL
    assert "base64" not in json.dumps(out)


def test_a_relative_path_is_read_from_the_current_folder_without_image_root(
    fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jpeg = image_bytes(4, 4, "JPEG")
    (tmp_path / "b.jpg").write_bytes(jpeg)
    monkeypatch.chdir(tmp_path)

    ask(make_llm(fake_openai, images="content"), Record(record_id="r1", content="b.jpg"))

    [_, part] = user_content(fake_openai)
    assert part == {"type": "image_url", "image_url": {"url": data_uri(jpeg, "image/jpeg")}}


def test_bytes_from_a_parquet_column_reach_the_model_through_a_real_flow(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    """A binary column and Hugging Face's image objects ({bytes, path}), one a list."""
    png, jpeg, gif = image_bytes(5, 5), image_bytes(6, 3, "JPEG"), image_bytes(2, 2, "GIF")
    photo = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "id": ["p1"],
            "text": ["two photos"],
            "image": pa.array([png], pa.binary()),
            "photos": pa.array(
                [[{"bytes": jpeg, "path": "x.jpg"}, {"bytes": gif, "path": "y.gif"}]],
                pa.list_(photo),
            ),
        }
    )
    pq.write_table(table, tmp_path / "photos.parquet")
    flow = FlowConfig.model_validate(
        {
            "name": "look",
            "data": {
                "photos": {
                    "type": "file",
                    "path": str(tmp_path / "photos.parquet"),
                    "columns": {"record_id": "id", "content": "text"},
                }
            },
            "agents": [
                {
                    "name": "llm",
                    "_target_": "buttermilk.agents.llm.LLM",
                    "model": "vision-model",
                    "base_url": fake_openai.base_url,
                    "prompt": "{{ record.content }}",
                    "images": ["metadata.image", "metadata.photos"],
                }
            ],
        }
    )
    fake_openai.always(answer("a red square"))
    [record] = plan_records(flow, shuffle=False, max_records=None).records

    result = anyio.run(FlowRunner(flow).run, record, {})

    assert result["outputs"]["llm"]["answer"] == "a red square"
    assert [part["image_url"]["url"] for part in user_content(fake_openai)[1:]] == [
        data_uri(png, "image/png"),
        data_uri(jpeg, "image/jpeg"),
        data_uri(gif, "image/gif"),
    ]


# -- what cannot be sent --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "why"),
    [
        ({}, "field metadata.image: missing (metadata holds [])"),
        ({"image": None}, "field metadata.image: is null"),
        ({"image": "nowhere.png"}, "cannot read"),
        ({"image": b"GIF89a" + b"\0" * 200}, "more than max_image_bytes=100"),
        ({"image": b"%PDF-1.7 not an image"}, "21 bytes that are not a PNG, JPEG, GIF or WebP"),
        ({"image": 42}, "field metadata.image: a int is not an image"),
        ({"image": "data:image/png;base64,%%%"}, "is not a base64 data:image/... URI"),
    ],
)
def test_an_image_that_cannot_be_sent_fails_the_job_in_one_line_without_a_call(
    fake_openai: FakeOpenAI, tmp_path: Path, metadata: dict[str, Any], why: str
) -> None:
    agent = make_llm(
        fake_openai, images="metadata.image", max_image_bytes=100, image_root=str(tmp_path)
    )

    with pytest.raises(ImageError) as raised:
        ask(agent, Record(record_id="rec-9", content="x", metadata=metadata))

    message = str(raised.value)
    assert message.startswith("images: record rec-9, field metadata.image: ")
    assert why in message and "\n" not in message
    assert isinstance(raised.value, PermanentError)  # the job fails at once, not retried
    assert fake_openai.requests == []


def test_an_oversized_file_is_refused_before_it_is_read(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    (tmp_path / "big.png").write_bytes(image_bytes(400, 400) + b"\0" * 5000)
    agent = make_llm(fake_openai, images="content", max_image_bytes=4096, image_root=str(tmp_path))

    with pytest.raises(
        ImageError,
        match=r"field content: file '.*big\.png' is \d+ bytes, more than max_image_bytes=4096",
    ):
        ask(agent, Record(record_id="r1", content="big.png"))


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"images": "title"}, "images='title' is not a record field"),
        ({"images": ["metadata."]}, "images='metadata.' is not a record field"),
        ({"images": "content", "image_detail": "medium"}, "image_detail"),
        ({"images": "content", "max_image_bytes": 0}, "max_image_bytes"),
    ],
)
def test_bad_image_options_are_refused_when_the_agent_is_built(
    fake_openai: FakeOpenAI, options: dict[str, Any], said: str
) -> None:
    with pytest.raises(UsageError, match=said.replace(".", r"\.").replace("[", r"\[")):
        make_llm(fake_openai, **options)


# -- the cache key --------------------------------------------------------------------------


def test_the_cache_key_holds_each_image_by_its_bytes_or_its_url(
    fake_openai: FakeOpenAI,
) -> None:
    agent = make_llm(fake_openai, images="metadata.image", cache=True)

    def key(image: Any) -> str:
        record = Record(record_id="r", content="same text", metadata={"image": image})
        return agent.cache_key(agent.render_messages(record, {}, {}))

    red = image_bytes(3, 3)
    assert key(red) == key(bytearray(red)) == key(data_uri(red, "image/png"))
    assert key(red) != key(image_bytes(3, 4))
    assert key(URL) != key(URL + "?v=2")
    text_only = make_llm(fake_openai, cache=True)
    plain = text_only.render_messages(Record(record_id="r", content="same text"), {}, {})
    assert key(red) != text_only.cache_key(plain)


# -- the estimate ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "detail", "model", "tokens"),
    [
        ((1024, 1024), "high", "gpt-4o", 765),  # the guide's examples
        ((2048, 4096), "high", "gpt-4o", 1105),
        ((4096, 8192), "low", "gpt-4o", 85),
        ((1024, 1024), "auto", "gpt-4o-2024-08-06", 765),
        ((500, 500), None, "openai/gpt-4o", 255),  # small images are not scaled up
        ((513, 500), "high", "gpt-4o", 425),
        ((1024, 1024), "high", "gpt-4o-mini-2024-07-18", 2833 + 4 * 5667),
        ((100, 100), "low", "gpt-4o-mini", 2833),
    ],
)
def test_image_tokens_follow_openais_tile_formula(
    size: tuple[int, int], detail: str | None, model: str, tokens: int
) -> None:
    formula = tile_formula(model)
    assert formula is not None
    assert tile_tokens(*size, detail, *formula) == tokens


@pytest.mark.parametrize(
    ("size", "model", "tokens"),
    [
        ((1024, 1024), "gpt-4.1-mini", math.ceil(1024 * 1.62)),  # the guide's examples
        ((1800, 2400), "gpt-4.1-nano", math.ceil(1452 * 2.46)),  # scaled to 1056 x 1408
        ((100, 33), "o4-mini-2025-04-16", math.ceil(4 * 2 * 1.72)),  # patches cover it
        ((32 * 48, 32 * 32), "openai/gpt-5-mini", math.ceil(1536 * 1.62)),  # just fits
        ((4000, 4000), "gpt-5-nano", math.ceil(39 * 39 * 2.46)),  # at most 1536 patches
    ],
)
def test_image_tokens_follow_openais_patch_formula(
    size: tuple[int, int], model: str, tokens: int
) -> None:
    multiplier = patch_multiplier(model)
    assert multiplier is not None and tile_formula(model) is None
    assert patch_tokens(*size, multiplier) == tokens


def test_no_formula_is_claimed_for_other_model_families() -> None:
    others = ["llama3.2", "gpt-4o1", "gemma3", "gpt-4.1x"]
    assert [(tile_formula(m), patch_multiplier(m)) for m in others] == [(None, None)] * 4
    assert tile_formula("gpt-4.1-2025-04-14") == (85, 170)


def test_the_estimate_adds_image_tokens_where_known_and_says_why_not_otherwise(
    fake_openai: FakeOpenAI,
) -> None:
    big, small = image_bytes(1024, 1024), image_bytes(500, 500)
    records = [
        Record(record_id="a", content="one", metadata={"image": big}),
        Record(record_id="b", content="two", metadata={"image": small}),
        Record(record_id="c", content="three", metadata={"image": URL}),
    ]
    text_tokens = sum(
        count_tokens(make_llm(fake_openai).render_messages(r, {}, {})) for r in records
    )

    gpt = estimate_agent(
        "v", make_llm(fake_openai, model="gpt-4o", images="metadata.image"), records, {}
    )
    llama = estimate_agent(
        "v", make_llm(fake_openai, model="llama3.2", images="metadata.image"), records, {}
    )

    assert (gpt.images, gpt.image_tokens, gpt.images_uncounted) == (3, 765 + 255, 1)
    assert gpt.input_tokens == text_tokens + 765 + 255
    assert gpt.image_problem == "images given by URL are not fetched, so their size is unknown"
    assert (llama.images, llama.image_tokens, llama.images_uncounted) == (3, 0, 3)
    assert llama.input_tokens == text_tokens
    assert "no published image token formula is known here for model 'llama3.2'" in str(
        llama.image_problem
    )
    estimate = Estimate(flow="f", records=3, seed=1, shuffle=False, max_records=None)
    estimate.combinations.append(CombinationEstimate("", {}, [llama]))
    assert any(
        note.startswith("3 of agent v's 3 images are not counted in its input tokens: no published")
        for note in estimate.notes()
    )
    assert estimate.as_json()["total"]["images_uncounted"] == 3
    assert fake_openai.requests == []  # nothing is sent
