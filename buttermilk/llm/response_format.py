"""How an LLM agent asks for JSON, and which way of asking each endpoint accepts.

Modes, best first:

- ``json_schema``: ``response_format: {type: json_schema, json_schema: {name, schema,
  strict}}``, generation constrained to the schema (OpenAI, vLLM, Ollama, llama.cpp's
  server); ``strict`` only where the schema keeps OpenAI's strict-mode rules
  (:func:`strict_allowed`);
- ``json_object``: ``{type: json_object}``, with the schema beside it as
  ``{type: json_object, schema: {...}}`` (the form llama-cpp-python's server constrains
  output with; others ignore the extra key);
- ``instructions``: no ``response_format``; the schema is in the system message only.

An agent without a schema asks for ``json_object`` with ``json_mode: true`` (then
``instructions``), and for plain ``text`` otherwise. A ``response_format`` given in
``extra`` is sent as it is (mode ``extra``).

An endpoint that cannot take a mode refuses the call: HTTP 400 or 422, or 500 (what
llama-cpp-python 0.3 answers json_schema with: "Input should be 'text' or
'json_object'"), with a body naming ``response_format``. That is not a transient error:
the call is sent again at once in the next mode, and the endpoint (base URL and model)
is remembered in this process (:data:`MODES`) as unable to take it, so every later call
starts at a mode it takes. :func:`probe_mode` is that negotiation, and :func:`negotiate`
runs it so that, until a mode is known to answer at an endpoint, its calls from one event
loop ask one at a time: the first call is the probe, and the calls that waited start in
the mode it found (one refusal per endpoint and mode, not one per call). There is no
separate probe call: a refused call is not billed (it is refused before any token is
generated), and the call that answers is a batch call, counted and paid like any other.
A first call that fails otherwise (the endpoint down, a refusal of something else)
teaches nothing: the calls then go ahead and learn from their own refusals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from buttermilk.llm.clients import Posted
from buttermilk.llm.retry import Failure

log = logging.getLogger(__name__)

JSON_SCHEMA, JSON_OBJECT, INSTRUCTIONS = "json_schema", "json_object", "instructions"
TEXT, EXTRA = "text", "extra"  # no JSON asked for; a response_format given in extra
LEVELS = {JSON_SCHEMA: 0, JSON_OBJECT: 1, INSTRUCTIONS: 2}  # best first
REFUSAL_STATUSES = frozenset({400, 422, 500})

#: OpenAI's strict mode (Structured Outputs guide, "Supported schemas"): these keywords
#: only; the root an object; every object ``additionalProperties: false`` with every
#: property required; at most 10 levels of nesting and 5000 properties in all.
STRICT_KEYWORDS = frozenset(
    {
        *("type", "properties", "required", "additionalProperties", "items", "enum"),
        *("const", "anyOf", "$ref", "$defs", "title", "description", "pattern", "format"),
        *("multipleOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
        *("minItems", "maxItems"),
    }
)
STRICT_DEPTH, STRICT_PROPERTIES = 10, 5000
_NAME = re.compile(r"[^a-zA-Z0-9_-]+")
SCHEMA_INSTRUCTIONS = (
    "Answer with only a JSON value that matches this JSON Schema, and no other text:\n"
)


def strict_allowed(schema: Mapping[str, Any]) -> bool:
    """Whether ``schema`` keeps OpenAI's strict-mode rules (:data:`STRICT_KEYWORDS`)."""
    if schema.get("type") != "object" or "anyOf" in schema:
        return False
    properties = 0

    def fits(node: Any, depth: int) -> bool:
        nonlocal properties
        if not isinstance(node, Mapping) or not set(node) <= STRICT_KEYWORDS:
            return False
        if depth > STRICT_DEPTH:
            return False
        found = node.get("properties", {})
        if found or node.get("type") == "object":
            properties += len(found)
            if node.get("additionalProperties") is not False:
                return False
            if set(node.get("required", [])) != set(found):
                return False
        subs = [*found.values(), *node.get("$defs", {}).values(), *node.get("anyOf", [])]
        if isinstance(node.get("items"), Mapping):
            subs.append(node["items"])
        return all(fits(sub, depth + 1) for sub in subs) and properties <= STRICT_PROPERTIES

    return fits(schema, 1)


@dataclass(frozen=True)
class Formats:
    """The modes one agent may ask in, best first, and what each sends."""

    modes: tuple[str, ...]
    schema: dict[str, Any] | None = None
    name: str = "answer"
    strict: bool = False

    @classmethod
    def of(
        cls, schema: dict[str, Any] | None, json_mode: bool, extra: Mapping[str, Any]
    ) -> Formats:
        """An agent's modes: from its schema (JSON Schema, or None), ``json_mode`` (False:
        instructions only) and ``extra`` request fields."""
        if "response_format" in extra:
            return cls((EXTRA,))
        if not json_mode:
            return cls((INSTRUCTIONS,) if schema is not None else (TEXT,))
        if schema is None:
            return cls((JSON_OBJECT, INSTRUCTIONS))
        title = _NAME.sub("_", str(schema.get("title") or ""))[:64].strip("_")
        strict = strict_allowed(schema)
        return cls((JSON_SCHEMA, JSON_OBJECT, INSTRUCTIONS), schema, title or "answer", strict)

    @property
    def negotiated(self) -> bool:
        """Whether some mode may be refused (one sends a response_format)."""
        return self.modes[0] in LEVELS and self.modes[0] != INSTRUCTIONS

    def body(self, mode: str) -> dict[str, Any] | None:
        """The ``response_format`` of ``mode`` (None: send none)."""
        if mode == JSON_SCHEMA:
            spec = {"name": self.name, "schema": self.schema, "strict": self.strict}
            return {"type": JSON_SCHEMA, "json_schema": spec}
        if mode == JSON_OBJECT:
            found: dict[str, Any] = {"type": JSON_OBJECT}
            if self.schema is not None:
                found["schema"] = self.schema
            return found
        return None

    def start(self, floor: int) -> str:
        """The first of these modes an endpoint that refuses the levels below ``floor`` may
        take."""
        for mode in self.modes:
            if LEVELS.get(mode, len(LEVELS)) >= floor:
                return mode
        return self.modes[-1]

    def after(self, mode: str) -> str | None:
        """The mode to fall back to when ``mode`` is refused (None: none left)."""
        at = self.modes.index(mode)
        return self.modes[at + 1] if at + 1 < len(self.modes) else None


def instructions(schema: Mapping[str, Any] | None, json_mode: bool) -> str:
    """What the system message says of the answer's form (in every mode: a constrained
    answer still gains from the schema's descriptions); empty when ``json_mode`` is off
    and there is no schema."""
    if schema is not None:
        return SCHEMA_INSTRUCTIONS + json.dumps(schema, ensure_ascii=False)
    return "Answer with only JSON, and no other text." if json_mode else ""


def refuses_format(failure: Failure) -> bool:
    """Whether ``failure`` is an endpoint refusing the ``response_format`` it was sent."""
    return failure.status in REFUSAL_STATUSES and failure.names_response_format


Endpoint = tuple[str, str]  # (base URL, model)


def kept_modes(formats: Formats, endpoint: Endpoint) -> list[str]:
    """The modes an answer kept in a response cache for ``formats`` at ``endpoint`` may
    have been asked in: the one known to answer there, else any the endpoint may take."""
    mode, settled = MODES.start(endpoint, formats)
    return [mode] if settled else list(formats.modes[formats.modes.index(mode) :])


@dataclass
class _Known:
    floor: int = 0  # levels below it were refused
    answered: int | None = None  # the best level that answered
    probed: bool = False  # a probe taught nothing: calls go ahead and learn


class EndpointModes:
    """What this process learnt about each endpoint's modes (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[Endpoint, _Known] = {}
        self._turns: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Endpoint, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def start(self, endpoint: Endpoint, formats: Formats) -> tuple[str, bool]:
        """The mode a call of ``formats`` starts in, and whether it is known to answer."""
        with self._lock:
            known = self._known.get(endpoint, _Known())
        mode = formats.start(known.floor)
        level = LEVELS.get(mode)
        if level is None or mode == INSTRUCTIONS or known.probed:  # nothing to probe
            return mode, True
        return mode, known.answered is not None and known.answered <= level

    def answered(self, endpoint: Endpoint, mode: str) -> None:
        level = LEVELS.get(mode)
        if level is None:
            return
        with self._lock:
            known = self._known.setdefault(endpoint, _Known())
            if known.answered is None or level < known.answered:
                known.answered = level

    def refused(self, endpoint: Endpoint, mode: str) -> None:
        level = LEVELS.get(mode)
        if level is None:
            return
        with self._lock:
            known = self._known.setdefault(endpoint, _Known())
            known.floor = max(known.floor, level + 1)

    def probed(self, endpoint: Endpoint) -> None:
        """A probe of ``endpoint`` taught nothing: let calls go ahead without one."""
        with self._lock:
            self._known.setdefault(endpoint, _Known()).probed = True

    def turn(self, endpoint: Endpoint) -> asyncio.Lock:
        """The lock the calls to ``endpoint`` from the running loop take to probe it."""
        loop = asyncio.get_running_loop()
        with self._lock:
            return self._turns.setdefault(loop, {}).setdefault(endpoint, asyncio.Lock())

    def forget(self) -> None:
        """Forget every endpoint (tests; an endpoint whose server changed)."""
        with self._lock:
            self._known.clear()


#: This process's record of every endpoint's modes.
MODES = EndpointModes()

Send = Callable[[dict[str, Any]], Awaitable[Posted | Failure]]


async def probe_mode(
    send: Send,
    request: Callable[[str], dict[str, Any]],
    formats: Formats,
    endpoint: Endpoint,
    modes: EndpointModes = MODES,
) -> tuple[str, Posted | Failure]:
    """Send ``request(mode)`` in the best mode ``endpoint`` may take, falling back on each
    refusal; returns the last mode tried and its outcome. A mode that answered (2xx) or
    was refused is remembered in ``modes``; other failures (transient, or refusals of
    something else) teach nothing and are returned as they are."""
    mode, _ = modes.start(endpoint, formats)
    while True:
        outcome = await send(request(mode))
        if not isinstance(outcome, Failure):
            modes.answered(endpoint, mode)
            return mode, outcome
        fallback = formats.after(mode)
        if not refuses_format(outcome) or fallback is None:
            return mode, outcome
        modes.refused(endpoint, mode)
        log.info(
            "LLM %s at %s refuses response_format %s (%s); asking in %s from now on",
            endpoint[1],
            endpoint[0],
            mode,
            outcome.reason,
            fallback,
        )
        mode = fallback


async def negotiate(
    send: Send,
    request: Callable[[str], dict[str, Any]],
    formats: Formats,
    endpoint: Endpoint,
    modes: EndpointModes = MODES,
) -> tuple[str, Posted | Failure]:
    """:func:`probe_mode`, one call of this event loop at a time while no mode of
    ``formats`` is known to answer at ``endpoint`` (a call that waited finds it known and
    goes ahead in that mode). A first call that fails for another reason marks the
    endpoint probed (:meth:`EndpointModes.probed`): the calls then go ahead at once.
    Returns the last mode tried and its outcome, as :func:`probe_mode` does."""
    if not modes.start(endpoint, formats)[1]:
        async with modes.turn(endpoint):
            if not modes.start(endpoint, formats)[1]:
                mode, outcome = await probe_mode(send, request, formats, endpoint, modes)
                if isinstance(outcome, Failure):
                    modes.probed(endpoint)
                return mode, outcome
    return await probe_mode(send, request, formats, endpoint, modes)
