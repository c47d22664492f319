"""The baseline of the LLM benchmark: a plain asyncio + aiohttp loop of chat completions.

``python benchmarks/llm_baseline.py URL --calls 2000 --concurrency 100`` sends ``calls``
chat completions to ``URL`` (an OpenAI-compatible base URL), at most ``concurrency`` at
once over one connection pool, with the same messages and options the benchmark flow's
LLM agent sends; it parses each answer's JSON and prints one JSON line:
``{"calls": N, "elapsed": seconds from the first request to the last answer}``.
This is what a researcher would write by hand, with nothing stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

SYSTEM = (
    "You label the sentiment of product reviews as positive, negative or neutral,\n"
    "with your confidence in the label from 0 to 1.\n\n"
    "Answer with only a JSON value that matches this JSON Schema, and no other text:\n"
    '{"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", '
    '"negative", "neutral"]}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}, '
    '"required": ["label", "confidence"], "additionalProperties": false}'
)


def request_body(i: int) -> dict[str, Any]:
    return {
        "model": "bench-model",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Review: short text number {i} to plan"},
        ],
        "temperature": 0,
        "max_tokens": 100,
        "response_format": {"type": "json_object"},
    }


async def run(url: str, calls: int, concurrency: int) -> float:
    endpoint = url.rstrip("/") + "/chat/completions"
    todo = iter(range(calls))
    answers: list[Any] = []

    async def lane(session: aiohttp.ClientSession) -> None:
        for i in todo:  # the lanes share one iterator: each call is made once
            async with session.post(endpoint, json=request_body(i)) as response:
                response.raise_for_status()
                body = await response.json()
            answers.append(json.loads(body["choices"][0]["message"]["content"]))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(lane(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    if len(answers) != calls:
        raise SystemExit(f"error: {len(answers)} answers of {calls} calls")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", help="base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    elapsed = asyncio.run(run(args.url, args.calls, args.concurrency))
    json.dump({"calls": args.calls, "elapsed": elapsed}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
