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


def _tokens(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return prompt, completion
    return None


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
    return Completion(
        text=content if isinstance(content, str) else "",
        model=model if isinstance(model, str) and model else None,
        finish_reason=finish if isinstance(finish, str) else None,
        usage=_tokens(data.get("usage")),
    )
