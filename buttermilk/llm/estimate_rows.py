"""The rows of an estimate: one LLM agent's share, a combination's, the whole grid's.

Each figure is a range: from one call per record and agent (``calls``, ``input_tokens``,
``input_cost``) up to ``schema_retries + 1`` calls where an answer may not fit the schema
(``max_calls``, ``max_input_tokens``, ``max_input_cost``), and the most answer tokens
those calls may take (``max_output_tokens``, ``max_tokens`` per call). Costs are USD from
the agents' prices (per million tokens); a sum counts the priced agents only, and a
``max_cost`` (the most input plus the most the answers may cost) is known only where every
agent has a price and ``max_tokens``. :mod:`buttermilk.llm.estimate` fills them in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from buttermilk.domain.variants import Axes
from buttermilk.llm.image_tokens import ImageCount
from buttermilk.llm.usage import CHARS_PER_TOKEN, Price

PER_MILLION = 1_000_000
NOTES = (
    "Prompts are rendered without earlier agents' outputs, which are not known before "
    "the batch runs.",
    f"Tokens are estimated at about {CHARS_PER_TOKEN} characters each; servers count their own.",
    "From one call per job and agent up to schema_retries + 1 where an answer may not fit "
    "the schema (a retry also sends the unusable answer and what was wrong with it); "
    "retries of failed calls and answers a response cache already holds are not counted.",
)


@dataclass
class AgentEstimate:
    """One LLM agent's share of the batch (of one combination, over all its repeats)."""

    agent: str
    model: str
    price: Price | None
    max_tokens: int | None
    tries: int = 1  # calls per record at most: 1 + schema_retries where answers are checked
    calls: int = 0
    input_tokens: int = 0
    retry_input_tokens: int = 0  # prompt tokens of every schema retry, if all happen
    unrenderable: int = 0
    problem: str | None = None  # the first reason a prompt could not be rendered
    images: int = 0  # image parts sent (see buttermilk.llm.image_tokens)
    image_tokens: int = 0  # of those counted; part of input_tokens
    images_uncounted: int = 0  # whose tokens are unknown: not in input_tokens
    image_problem: str | None = None  # the first reason an image was not counted

    def add_images(self, found: ImageCount) -> None:
        """Add one record's images (their tokens go into ``input_tokens`` by the caller)."""
        self.images += found.images
        self.image_tokens += found.tokens
        self.images_uncounted += found.uncounted
        self.image_problem = self.image_problem or found.why

    @property
    def max_calls(self) -> int:
        return self.calls * self.tries

    @property
    def max_input_tokens(self) -> int:
        return self.input_tokens + self.retry_input_tokens

    def _input_cost(self, tokens: int) -> float | None:
        return None if self.price is None else tokens * self.price.input / PER_MILLION

    @property
    def input_cost(self) -> float | None:
        return self._input_cost(self.input_tokens)

    @property
    def max_input_cost(self) -> float | None:
        return self._input_cost(self.max_input_tokens)

    @property
    def max_output_tokens(self) -> int | None:
        """The most answer tokens the calls may take (``max_tokens`` per call, every
        schema retry made)."""
        return None if self.max_tokens is None else self.max_calls * self.max_tokens

    @property
    def max_cost(self) -> float | None:
        """The most input and answers may cost (needs a price and max_tokens)."""
        if self.price is None or self.max_output_tokens is None:
            return None
        spent = self.max_input_tokens * self.price.input
        spent += self.max_output_tokens * self.price.output
        return spent / PER_MILLION

    def repeated(self, repeats: int) -> AgentEstimate:
        """This estimate for ``repeats`` runs of every record: each repeat is called."""
        return replace(
            self,
            calls=self.calls * repeats,
            input_tokens=self.input_tokens * repeats,
            retry_input_tokens=self.retry_input_tokens * repeats,
            unrenderable=self.unrenderable * repeats,
            images=self.images * repeats,
            image_tokens=self.image_tokens * repeats,
            images_uncounted=self.images_uncounted * repeats,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "model": self.model,
            "calls": self.calls,
            "max_calls": self.max_calls,
            "input_tokens": self.input_tokens,
            "max_input_tokens": self.max_input_tokens,
            "price": self.price.model_dump(exclude_none=True) if self.price else None,
            "input_cost": self.input_cost,
            "max_input_cost": self.max_input_cost,
            "max_output_tokens": self.max_output_tokens,
            "max_cost": self.max_cost,
            "unrenderable": self.unrenderable,
            "problem": self.problem,
            "images": self.images,
            "image_tokens": self.image_tokens,
            "images_uncounted": self.images_uncounted,
            "image_problem": self.image_problem,
        }


def _sum(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def sum_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sums of agents' estimates (their ``as_json``): costs count the priced ones only, and
    ``max_cost`` and ``max_output_tokens`` are known only when every one has them."""
    return {
        "calls": sum(r["calls"] for r in rows),
        "max_calls": sum(r["max_calls"] for r in rows),
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "max_input_tokens": sum(r["max_input_tokens"] for r in rows),
        "input_cost": _sum([r["input_cost"] for r in rows]),
        "max_input_cost": _sum([r["max_input_cost"] for r in rows]),
        "max_output_tokens": sum(r["max_output_tokens"] for r in rows)
        if all(r["max_output_tokens"] is not None for r in rows)
        else None,  # an agent without max_tokens has no bound
        "max_cost": _sum([r["max_cost"] for r in rows])
        if all(r["max_cost"] is not None for r in rows)
        else None,
        "unrenderable": sum(r["unrenderable"] for r in rows),
        "images": sum(r["images"] for r in rows),
        "image_tokens": sum(r["image_tokens"] for r in rows),
        "images_uncounted": sum(r["images_uncounted"] for r in rows),
    }


@dataclass
class CombinationEstimate:
    """What one combination of the batch's axes sends, over every record and repeat."""

    variant: str
    values: dict[str, Any]
    agents: list[AgentEstimate] = field(default_factory=list)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(a.model for a in self.agents))

    def total(self) -> dict[str, Any]:
        return sum_rows([a.as_json() for a in self.agents])

    def as_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "values": self.values,
            "agents": [a.as_json() for a in self.agents],
            "total": self.total(),
        }


@dataclass
class Estimate:
    """What a batch of ``records`` records x combinations x ``repeats`` would send to each
    LLM agent of ``flow``."""

    flow: str
    records: int
    seed: int
    shuffle: bool
    max_records: int | None
    variants: Axes = field(default_factory=dict)
    repeats: int = 1
    combinations: list[CombinationEstimate] = field(default_factory=list)
    other_agents: list[str] = field(default_factory=list)  # not LLM agents: no estimate

    @property
    def jobs(self) -> int:
        return self.records * len(self.combinations) * self.repeats

    @property
    def is_grid(self) -> bool:
        """More than one combination or repeat: shown per combination."""
        return len(self.combinations) > 1 or self.repeats > 1

    @property
    def unpriced(self) -> list[str]:
        every = (a for c in self.combinations for a in c.agents)
        return list(dict.fromkeys(a.agent for a in every if a.price is None))

    def agents(self) -> list[dict[str, Any]]:
        """Each LLM agent's estimate over the whole grid (models and prices as they vary:
        ``model`` lists each one, ``price`` is null unless every combination has one)."""
        by_name: dict[str, list[AgentEstimate]] = {}
        for combination in self.combinations:
            for agent in combination.agents:
                by_name.setdefault(agent.agent, []).append(agent)
        rows = []
        for name, found in by_name.items():
            prices = {a.price for a in found}
            price = prices.pop() if len(prices) == 1 else None
            rows.append(
                {
                    "agent": name,
                    "model": ", ".join(dict.fromkeys(a.model for a in found)),
                    "price": price.model_dump(exclude_none=True) if price else None,
                    **sum_rows([a.as_json() for a in found]),
                    "problem": next((a.problem for a in found if a.problem), None),
                    "image_problem": next(
                        (a.image_problem for a in found if a.image_problem), None
                    ),
                }
            )
        return rows

    def total(self) -> dict[str, Any]:
        """Sums over every agent of every combination; costs count priced agents only."""
        return sum_rows([a.as_json() for c in self.combinations for a in c.agents])

    def notes(self) -> list[str]:
        found = list(NOTES)
        if self.unpriced:
            found.append(
                f"No price for agent(s) {', '.join(self.unpriced)}: set price or prices "
                "(conf/llm_prices.yaml) to see their cost."
            )
        if any(a.max_tokens is None for c in self.combinations for a in c.agents):
            found.append("Answer tokens are bounded only where max_tokens is set.")
        for row in self.agents():
            if row["images_uncounted"]:
                found.append(
                    f"{row['images_uncounted']} of agent {row['agent']}'s {row['images']} "
                    f"images are not counted in its input tokens: {row['image_problem']}."
                )
        if any(a.image_tokens for c in self.combinations for a in c.agents):
            found.append(
                "Image tokens follow the provider's published formula, detail auto counted "
                "as high (the most it may cost)."
            )
        return found

    def as_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "records": self.records,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "max_records": self.max_records,
            "variants": self.variants,
            "repeats": self.repeats,
            "jobs": self.jobs,
            "agents": self.agents(),
            "combinations": [c.as_json() for c in self.combinations],
            "other_agents": self.other_agents,
            "total": self.total(),
            "notes": self.notes(),
        }
