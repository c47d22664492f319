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
    """What a model costs, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0, description="USD per 1M prompt tokens.")
    output: float = Field(ge=0, description="USD per 1M completion tokens.")


#: Prices by model name.
PriceTable = Mapping[str, Price]


@dataclass
class Usage:
    """Tokens spent, summed over calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    estimated: bool = False  # some call's counts were estimated (the server gave none)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, input_tokens: int, output_tokens: int, *, estimated: bool = False) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.estimated = self.estimated or estimated

    def cost(self, price: Price | None) -> float | None:
        """USD for these tokens at ``price``; None without a price."""
        if price is None:
            return None
        spent = self.input_tokens * price.input + self.output_tokens * price.output
        return round(spent / 1_000_000, 10)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.estimated:
            found["estimated"] = True
        return found
