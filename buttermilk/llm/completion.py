"""Reading a chat completion's JSON body into what the LLM agent needs of it.

The agent posts its request and reads the answer's bytes itself (see
:meth:`buttermilk.agents.llm.LLM._call_once`); this module turns those bytes into a
:class:`Completion`, or a transient :class:`~buttermilk.llm.retry.Failure` when they are not
a usable chat completion (a server or proxy answering 200 with something else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from buttermilk.llm.retry import Failure

COMPLETIONS = "/chat/completions"  # the path under the endpoint's base URL


@dataclass(frozen=True)
class Completion:
    """The first choice of one answer."""

    text: str
    model: str | None
    finish_reason: str | None
    usage: tuple[int, int] | None  # (prompt, completion) tokens, as the server reports them
    cached_tokens: int = 0  # of the prompt tokens, those read from the provider's cache
    reasoning_tokens: int = 0  # of the completion tokens, those a reasoning model thought


def _tokens(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


def _detail(usage: Any, details: str, name: str) -> int:
    """A count inside ``usage[details]`` (OpenAI's ``prompt_tokens_details.cached_tokens``,
    ``completion_tokens_details.reasoning_tokens``); 0 when not reported."""
    found = usage.get(details) if isinstance(usage, dict) else None
    value = found.get(name) if isinstance(found, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_completion(body: bytes) -> Completion | Failure:
    """The completion in ``body``, or why it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Failure(True, "the response is not a valid chat completion (not JSON)")
    if not isinstance(data, dict):
        return Failure(True, "the response is not a valid chat completion")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return Failure(True, "the response has no choices")
    first = choices[0]
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        return Failure(True, "the response's first choice has no message")
    content = message.get("content")
    model = data.get("model")
    finish = first.get("finish_reason")
    usage = data.get("usage")
    return Completion(
        text=content if isinstance(content, str) else "",
        model=model if isinstance(model, str) and model else None,
        finish_reason=finish if isinstance(finish, str) else None,
        usage=_tokens(usage),
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
    )
