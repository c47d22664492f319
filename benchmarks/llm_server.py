"""A fake OpenAI-compatible endpoint that answers every chat completion after a fixed delay.

``python benchmarks/llm_server.py --latency 0.2`` listens on a free port of 127.0.0.1,
prints ``port <N>`` on its first line of stdout, and serves until it is terminated (or
its stdin closes). Every answer is the same small JSON label that fits the benchmark
flow's schema, with a token usage, so the agent parses, validates and counts as it would
against a real server. One aiohttp event loop holds hundreds of waiting requests at a
few kilobytes each; the delay is ``asyncio.sleep``, so waiting costs no CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

ANSWER = json.dumps({"label": "positive", "confidence": 0.9})


def completion(model: str, prompt_chars: int) -> dict[str, Any]:
    prompt_tokens = prompt_chars // 4 + 1
    return {
        "id": f"chatcmpl-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 12,
            "total_tokens": prompt_tokens + 12,
        },
    }


def make_app(latency: float) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
        await asyncio.sleep(latency)
        return web.json_response(completion(str(body.get("model", "fake")), chars))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def serve(latency: float) -> None:
    runner = web.AppRunner(make_app(latency), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each answer")
    asyncio.run(serve(parser.parse_args().latency))


if __name__ == "__main__":
    main()
