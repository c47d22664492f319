"""Tokens and money: a tokenizer-free token estimate, prices, and the cost of a call.

The estimate needs no tokenizer or download: about :data:`CHARS_PER_TOKEN` characters per
token (close for English with BPE tokenizers, low for code and many other languages), plus
:data:`TOKENS_PER_MESSAGE` per message for role and framing and :data:`TOKENS_PER_REPLY`
that prime the answer. Use it for planning and rate limits, not for billing: servers
report the real counts, and those are what :func:`cost` is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3


def count_text(text: str) -> int:
    """Estimated tokens of a text: one per :data:`CHARS_PER_TOKEN` characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def count_tokens(messages: Sequence[Mapping[str, Any]]) -> int:
    """Estimated prompt tokens of chat messages (``{"role": ..., "content": ...}``)."""
    total = TOKENS_PER_REPLY
    for message in messages:
        content = message.get("content") or ""
        if not isinstance(content, str):  # a list of content parts: count their text
            content = "".join(str(part.get("text", "")) for part in content)
        total += TOKENS_PER_MESSAGE + count_text(content)
    return total


class Price(BaseModel):
    """What a model costs, in USD per million tokens.

    ``cached_input`` is the price of prompt tokens the provider served from its prompt
    cache (OpenAI reports them as ``usage.prompt_tokens_details.cached_tokens``); unset,
    they cost ``input``, as every prompt token did before caching.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output: float = Field(ge=0, description="USD per 1M completion tokens.")
    cached_input: float | None = Field(
        default=None,
        ge=0,
        description="USD per 1M prompt tokens read from the provider's prompt cache "
        "(default: the input price).",
    )


#: Prices by model name.
PriceTable = Mapping[str, Price]


@dataclass
class Usage:
    """Tokens spent, summed over calls.

    ``cached_input_tokens`` are the part of ``input_tokens`` the provider read from its
    prompt cache, ``reasoning_tokens`` the part of ``output_tokens`` a reasoning model spent
    thinking (OpenAI's ``completion_tokens_details.reasoning_tokens``; billed as output).
    Both are 0 when the endpoint does not report them. ``schema_retry_calls`` counts the
    calls among them that asked again because an answer did not fit the schema, and the
    ``schema_retry_*`` tokens are the part of the totals those calls spent (what schema
    retries cost: :meth:`schema_retries`).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # some call's counts were estimated (the server gave none)
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    schema_retry_calls: int = 0
    schema_retry_input_tokens: int = 0  # part of input_tokens
    schema_retry_cached_input_tokens: int = 0  # part of cached_input_tokens
    schema_retry_output_tokens: int = 0  # part of output_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(
        self,
        input_tokens: int,
        output_tokens: int,
        *,
        estimated: bool = False,
        cached_input_tokens: int = 0,
        reasoning_tokens: int = 0,
        schema_retry: bool = False,
    ) -> None:
        """Add one call's tokens; ``schema_retry``: the call asked again because an answer
        did not fit the schema (it counts in ``schema_retry_calls`` and its tokens in the
        ``schema_retry_*`` parts too)."""
        # Never more than the prompt: a server's odd report cannot make a cost negative.
        cached = min(max(cached_input_tokens, 0), max(input_tokens, 0))
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.estimated = self.estimated or estimated
        self.cached_input_tokens += cached
        self.reasoning_tokens += max(reasoning_tokens, 0)
        if schema_retry:
            self.schema_retry_calls += 1
            self.schema_retry_input_tokens += input_tokens
            self.schema_retry_cached_input_tokens += cached
            self.schema_retry_output_tokens += output_tokens

    def merge(self, other: Usage) -> None:
        """Add ``other``'s counts to these."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.estimated = self.estimated or other.estimated
        self.cached_input_tokens += other.cached_input_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.schema_retry_calls += other.schema_retry_calls
        self.schema_retry_input_tokens += other.schema_retry_input_tokens
        self.schema_retry_cached_input_tokens += other.schema_retry_cached_input_tokens
        self.schema_retry_output_tokens += other.schema_retry_output_tokens

    def schema_retries(self) -> Usage:
        """The part of these that calls asking again for an answer fitting the schema
        spent (price it with :meth:`cost`)."""
        return Usage(
            input_tokens=self.schema_retry_input_tokens,
            output_tokens=self.schema_retry_output_tokens,
            estimated=self.estimated,
            cached_input_tokens=self.schema_retry_cached_input_tokens,
        )

    def cost(self, price: Price | None) -> float | None:
        """USD for these tokens at ``price`` (per 1M tokens: uncached prompt tokens at
        ``input``, cached ones at ``cached_input`` when known, else ``input``, answer tokens,
        reasoning included, at ``output``); None without a price."""
        if price is None:
            return None
        cached_rate = price.input if price.cached_input is None else price.cached_input
        uncached = self.input_tokens - self.cached_input_tokens
        spent = (
            uncached * price.input
            + self.cached_input_tokens * cached_rate
            + self.output_tokens * price.output
        )
        return round(spent / 1_000_000, 10)

    def as_dict(self) -> dict[str, Any]:
        """``input_tokens``, ``output_tokens``, ``total_tokens``; ``cached_input_tokens`` and
        ``reasoning_tokens`` when the endpoint reported some; ``schema_retry_calls`` and
        the ``schema_retry_input_tokens`` and ``schema_retry_output_tokens`` they spent
        when some; ``estimated`` when true."""
        found: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_input_tokens:
            found["cached_input_tokens"] = self.cached_input_tokens
        if self.reasoning_tokens:
            found["reasoning_tokens"] = self.reasoning_tokens
        if self.schema_retry_calls:
            found["schema_retry_calls"] = self.schema_retry_calls
            found["schema_retry_input_tokens"] = self.schema_retry_input_tokens
            found["schema_retry_output_tokens"] = self.schema_retry_output_tokens
        if self.estimated:
            found["estimated"] = True
        return found
