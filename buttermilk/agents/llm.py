"""Ask a large language model about each record, through any OpenAI-compatible endpoint.

A flow config names the model, the endpoint and a prompt template; with a schema the
answer is parsed as JSON and validated. For example::

    - name: judge
      _target_: buttermilk.agents.llm.LLM
      model: llama3.2
      base_url: http://localhost:11434/v1
      api_key_env: MY_LLM_KEY           # the key stays in the environment
      prompt: "Sentiment of: {{ record.content }}"
      schema: {type: object, properties: {label: {enum: [positive, negative]}}}
      temperature: 0
      rpm: 500                          # shared by every worker of the batch store
      cache: true                       # reuse stored answers to identical requests

Every option is described in :class:`buttermilk.llm.config.LLMConfig`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from pydantic import ValidationError

from buttermilk.errors import UsageError
from buttermilk.flows.agents import JobContext, current_job
from buttermilk.flows.runner import mark_spent
from buttermilk.llm.adaptive import in_slot
from buttermilk.llm.clients import Posted, shared_clients
from buttermilk.llm.completion import COMPLETIONS, Completion, parse_completion
from buttermilk.llm.config import LLMConfig
from buttermilk.llm.endpoints import Endpoint
from buttermilk.llm.health import endpoint_health
from buttermilk.llm.images import stand_ins
from buttermilk.llm.limits import (
    SHARED_CACHE,
    Limits,
    NoRateLimit,
    RateLimiter,
    ResponseCache,
    TokenBucketLimiter,
    cache_key,
)
from buttermilk.llm.prompts import PromptTemplate
from buttermilk.llm.response_format import (
    MODES,
    Formats,
    instructions,
    kept_modes,
    negotiate,
    refuses_format,
)
from buttermilk.llm.retry import Failure, LLMRefusedError, LLMUnavailableError, backoff
from buttermilk.llm.schema import (
    AnswerProblem,
    AnswerSchema,
    InvalidAnswerError,
    extract_json,
    feedback,
    load_schema,
)
from buttermilk.llm.shared import StoreRateLimiter, StoreResponseCache
from buttermilk.llm.usage import Price, PriceTable, Usage, count_text, count_tokens
from buttermilk.records import Record
from buttermilk.runner.settings import describe_validation_error

log = logging.getLogger(__name__)

RAW_IN_ERRORS = 1000  # characters of a bad answer quoted in InvalidAnswerError
ANSWER_TOKENS_GUESS = 256  # answer size reserved from a rate limit when max_tokens is unset
ANSWER_GRACE = 10.0  # seconds a call of a cancelled job may still take to answer (it is paid)

Messages = list[dict[str, Any]]  # content: text, or text and image parts


@dataclass
class _Tally:
    """What the calls for one record cost so far."""

    usage: Usage = field(default_factory=Usage)
    calls: int = 0
    model: str = ""
    finish_reason: str | None = None  # of the last answer
    mode: str = ""  # the response mode of the last call (see buttermilk.llm.response_format)
    retrying: bool = False  # the calls now asked again for an answer that did not fit


def _job() -> JobContext | None:
    """The batch job this call runs in (None outside one)."""
    try:
        return current_job()
    except LookupError:
        return None


class LLM:
    """An agent that renders a prompt for each record and returns the model's answer.

    Output: ``answer`` (the parsed JSON with a schema, else the text), ``raw`` (the text),
    ``model`` (as the server reports it), ``usage`` (``input_tokens``, ``output_tokens``,
    ``total_tokens``, and ``cached_input_tokens`` and ``reasoning_tokens`` when the endpoint
    reports them, summed over every call for the record), ``latency`` (seconds),
    ``attempts`` (calls made), ``cost`` (USD, null without a price; see
    :meth:`~buttermilk.llm.usage.Usage.cost`), ``cached`` and ``response_mode`` (how the
    answer was asked for: ``json_schema``, ``json_object``, ``instructions`` or ``text``;
    see :mod:`buttermilk.llm.response_format`). ``usage.schema_retry_calls`` counts the
    answered calls that asked again after an answer did not fit the schema,
    ``usage.schema_retry_input_tokens`` and ``usage.schema_retry_output_tokens`` the part
    of the tokens they spent, and ``schema_retry_cost`` (USD, null without a price; only
    when some) the part of ``cost``. In a batch job
    every answered call is also added to the job's :class:`~buttermilk.flows.meter.Meter`,
    so a job cancelled or timed out still reports what its calls cost.

    Errors: :class:`~buttermilk.llm.retry.LLMRefusedError` (permanent) when the endpoint
    refuses the request; :class:`~buttermilk.llm.retry.LLMUnavailableError` (retried by
    the batch) when transient failures outlast ``max_retries``;
    :class:`~buttermilk.llm.images.ImageError` (permanent, before any call) for an image
    that cannot be sent; :class:`~buttermilk.llm.schema.InvalidAnswerError` (permanent)
    when no answer fits the schema after ``schema_retries``; in a worker,
    :class:`~buttermilk.llm.health.EndpointDownError` (the job is given back, no attempt
    spent) while the endpoint is down (see :mod:`buttermilk.llm.health`).

    Calls are paced when ``requests_per_minute`` or ``tokens_per_minute`` is set, and
    answers reused with ``cache: true``: in a batch job, through the batch store, so every
    worker of the store shares one budget per model and endpoint, and every batch the
    answers; outside a batch job, within this process. ``rate_limiter`` and
    ``response_cache`` are seams for code that replace both; ``prices`` is the table of
    the config key of that name, or one given in code.
    """

    def __init__(
        self,
        *,
        rate_limiter: RateLimiter | None = None,
        response_cache: ResponseCache | None = None,
        prices: PriceTable | Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if prices is not None:
            options["prices"] = dict(prices)
        try:
            self.config = config = LLMConfig.model_validate(options)
        except ValidationError as exc:
            raise UsageError(f"LLM: {describe_validation_error(exc)}") from None
        if (config.prompt is None) == (config.prompt_file is None):
            raise UsageError("LLM: give exactly one of prompt and prompt_file")
        if config.prompt is not None:
            self.prompt = PromptTemplate(config.prompt, "prompt")
        else:
            self.prompt = PromptTemplate.from_file(str(config.prompt_file), "prompt_file")
        self.system = PromptTemplate(config.system, "system") if config.system else None
        self.schema: AnswerSchema | None = load_schema(config.answer_schema, config.schema_model)
        self.json_mode = config.json_mode if config.json_mode is not None else bool(self.schema)
        self.schema_json = self.schema.json_schema() if self.schema else None
        told = config.schema_instructions
        self.instructions = instructions(self.schema_json, self.json_mode) if told else ""
        self.formats = Formats.of(self.schema_json, self.json_mode, config.extra)
        self.mode_key = (config.base_url, config.model)  # what response modes are known for
        self.images = config.image_fields()

        self.limits = Limits(
            config.requests_per_minute, config.tokens_per_minute, config.rate_burst
        )
        self._given_limiter = rate_limiter
        self._local_limiter: RateLimiter = (
            TokenBucketLimiter(
                config.requests_per_minute,
                config.tokens_per_minute,
                burst_seconds=config.rate_burst,
            )
            if self.limits
            else NoRateLimit()
        )
        self._given_cache = response_cache
        self.prices: PriceTable = config.prices
        self.clients = shared_clients(config.base_url, config.api_key_env, config.timeout)
        self.endpoint = Endpoint(config.base_url, config.api_key_env, config.model)

    # -- what is sent ----------------------------------------------------------------

    def render_messages(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> Messages:
        """The chat messages sent for ``record`` (before any schema retry)."""
        system = self.system.render(record, outputs, parameters) if self.system else ""
        if self.instructions:
            system = f"{system}\n\n{self.instructions}" if system else self.instructions
        messages: Messages = [{"role": "system", "content": system}] if system else []
        prompt = self.prompt.render(record, outputs, parameters)
        messages.append({"role": "user", "content": self.images.content(record, prompt)})
        return messages

    def estimate_tokens(self, messages: Messages) -> int:
        """Tokens a call may use: the prompt estimate plus ``max_tokens`` (or a guess)."""
        return count_tokens(messages) + (self.config.max_tokens or ANSWER_TOKENS_GUESS)

    def rate_limiter(self) -> RateLimiter:
        """The limiter of a call made now: the one given in code; else, in a batch job
        and with limits set, the batch store's (shared by every worker); else this
        process's."""
        if self._given_limiter is not None:
            return self._given_limiter
        job = _job() if self.limits else None
        store = job.store if job else None
        if store is None:
            return self._local_limiter
        return StoreRateLimiter(store, self.limits, scope=self.config.base_url)

    def response_cache(self) -> ResponseCache | None:
        """Where a call made now finds and keeps answers (None without ``cache: true``)."""
        if not self.config.cache:
            return None
        if self._given_cache is not None:
            return self._given_cache
        job = _job()
        return StoreResponseCache(job.store) if job and job.store is not None else SHARED_CACHE

    def cache_key(self, messages: Messages, mode: str | None = None) -> str:
        """The response cache's key for a request of these messages asked in response
        ``mode`` (default: the one a call would start in now) in the job running now. A
        request sending no ``response_format`` keys as before modes existed.

        The job's repeat is part of it: repeats exist to measure how answers vary, so
        repeat 2 is asked again even at ``temperature: 0`` (providers are not
        deterministic there either), and a later batch of the same grid finds each
        repeat's own answer.
        """
        job = _job()
        mode = mode or MODES.start(self.mode_key, self.formats)[0]
        sampling = {**self.config.sampling(), "extra": self.config.extra, "json": self.json_mode}
        return cache_key(
            self.config.model,
            messages,
            sampling,
            self.schema_json,
            endpoint=self.config.base_url,
            repeat=job.repeat if job else 0,
            mode=None if self.formats.body(mode) is None else mode,
        )

    # -- the call --------------------------------------------------------------------

    async def __call__(
        self, record: Record, outputs: Mapping[str, Any], parameters: Mapping[str, Any]
    ) -> dict[str, Any]:
        started = time.perf_counter()
        messages = self.render_messages(record, outputs, parameters)
        cache = self.response_cache()
        kept = kept_modes(self.formats, self.mode_key) if cache is not None else []
        for mode in kept:
            hit = None if cache is None else await cache.get(self.cache_key(messages, mode))
            if hit is not None:
                found = {
                    **hit,
                    "latency": round(time.perf_counter() - started, 6),
                    "attempts": 0,
                    "cost": None if hit.get("cost") is None else 0.0,
                    "cached": True,
                }
                if found.get("schema_retry_cost") is not None:  # nothing was asked again
                    found["schema_retry_cost"] = 0.0
                return found
        tally = _Tally()
        try:
            answer, raw = await self._answer(messages, tally, self.rate_limiter())
        except Exception as exc:
            if tally.calls:  # what the calls cost counts, answer or not
                mark_spent(exc, self._spent(tally))
            raise
        result = {
            "answer": answer,
            "raw": raw,
            "model": tally.model,
            "latency": round(time.perf_counter() - started, 6),
            "attempts": tally.calls,
            **self._spent(tally),
            "cached": False,
            "response_mode": tally.mode,
        }
        if self.config.keep_messages:
            result["messages"] = stand_ins(messages)  # image data as short stand-ins
        if cache is not None:
            await cache.put(self.cache_key(messages, tally.mode), result)
        return result

    def _spent(self, tally: _Tally) -> dict[str, Any]:
        price = self.price_of(tally.model or None)
        spent = {"usage": tally.usage.as_dict(), "cost": tally.usage.cost(price)}
        if tally.usage.schema_retry_calls:  # what asking again cost, of that
            spent["schema_retry_cost"] = tally.usage.schema_retries().cost(price)
        return spent

    async def _answer(
        self, messages: Messages, tally: _Tally, limiter: RateLimiter
    ) -> tuple[Any, str]:
        """The parsed answer and its text; asks again while it does not fit the schema."""
        conversation = messages
        for attempt in range(self.config.schema_retries + 1):
            tally.retrying = attempt > 0
            raw = await self._complete(conversation, tally, limiter)
            if self.schema is None and not self.json_mode:
                return raw, raw
            try:
                value = extract_json(raw)
                return (self.schema.validate(value) if self.schema else value), raw
            except AnswerProblem as exc:
                problem = str(exc)
                if tally.finish_reason == "length":
                    problem += " (the answer was cut off at max_tokens)"
            log.info(
                "LLM %s: unusable answer (try %d of %d): %s",
                self.config.model,
                attempt + 1,
                self.config.schema_retries + 1,
                problem,
            )
            if self.config.schema_feedback:
                conversation = [
                    *messages,
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": feedback(problem)},
                ]
        quoted = raw if len(raw) <= RAW_IN_ERRORS else raw[:RAW_IN_ERRORS] + "..."
        raise InvalidAnswerError(
            self._redact(
                f"LLM {self.config.model}: no valid answer in {self.config.schema_retries + 1} "
                f"tries; last problem: {problem}; last answer: {quoted!r}"
            )
        )

    async def _complete(self, messages: Messages, tally: _Tally, limiter: RateLimiter) -> str:
        """One answer's text, retrying transient failures; raises on permanent ones."""
        model = self.config.model
        # Counting tokens costs CPU per call; only a rate limiter has a use for it.
        estimate = 0 if isinstance(limiter, NoRateLimit) else self.estimate_tokens(messages)
        health = endpoint_health()  # in a worker: no call goes to an endpoint that is down
        for retry in range(self.config.max_retries + 1):
            if health is not None:
                await health.before_call(self.endpoint)
            await limiter.acquire(model, estimate)
            outcome = await in_slot(self.endpoint, self.limits, self._call_once, messages, tally)
            if not isinstance(outcome, Failure):
                text, spent = outcome
                await limiter.report(model, estimate, spent)
                if health is not None:
                    await health.answered(self.endpoint)
                return text
            await limiter.report(model, estimate, 0)
            if health is not None:
                await health.failed(self.endpoint, outcome)  # raises once it is down
            if not outcome.transient or refuses_format(outcome):
                raise LLMRefusedError(self._describe(outcome))
            if retry == self.config.max_retries:
                raise LLMUnavailableError(
                    f"{self._describe(outcome)} (gave up after {tally.calls} calls)"
                )
            wait = backoff(
                retry + 1,
                base=self.config.backoff,
                cap=self.config.max_backoff,
                retry_after=outcome.retry_after,
            )
            log.warning("%s; retrying in %.2fs", self._describe(outcome), wait)
            await anyio.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _call_once(self, messages: Messages, tally: _Tally) -> tuple[str, int] | Failure:
        """The answer's text and the tokens spent on it, or why there is none. Asked in
        the best response mode the endpoint takes (the first call to an endpoint finds it,
        sent again at once in the next mode when it refuses one, while the others wait;
        see :mod:`buttermilk.llm.response_format`)."""

        async def send(request: dict[str, Any]) -> Posted | Failure:
            tally.calls += 1
            return await self._post(request, tally)

        tally.mode, posted = await negotiate(
            send, lambda mode: self._request(messages, mode), self.formats, self.mode_key
        )
        if isinstance(posted, Failure):
            return posted
        answer = parse_completion(posted.body)
        if isinstance(answer, Failure):
            return answer
        spent = self._count(answer, messages, tally)
        log.debug("LLM %s: answered, %d tokens", self.config.model, spent)
        return answer.text, spent

    async def _post(self, request: dict[str, Any], tally: _Tally) -> Posted | Failure:
        """Send one call. Cancelled once it went out (its job cancelled, stopped by
        ``max_cost``, timed out or given back at shutdown), it still waits for the answer the
        endpoint bills, up to :data:`ANSWER_GRACE` seconds, and counts it before the
        cancellation goes on (a call unanswered by then counts its estimated prompt)."""
        grace = min(ANSWER_GRACE, self.config.timeout)

        def late(posted: Posted | Failure | None) -> None:
            self._count_late(posted, request, tally, grace)

        return await self.clients.post_paid(COMPLETIONS, request, grace, late)

    def _count_late(
        self, posted: Posted | Failure | None, request: dict[str, Any], tally: _Tally, grace: float
    ) -> None:
        if posted is None:
            estimate = Usage()
            estimate.add(count_tokens(request["messages"]), 0, estimated=True)
            self._add(estimate, tally)
            log.warning(
                "LLM %s: a call of a cancelled job got no answer in %gs; counting its "
                "estimated prompt tokens",
                self.config.model,
                grace,
            )
            return
        self._count_posted(posted, request["messages"], tally)

    def _count_posted(
        self, posted: Posted | Failure | None, messages: Messages, tally: _Tally
    ) -> None:
        answer = parse_completion(posted.body) if isinstance(posted, Posted) else None
        if answer is not None and not isinstance(answer, Failure):
            self._count(answer, messages, tally)

    def _count(self, answer: Completion, messages: Messages, tally: _Tally) -> int:
        """Add what an answered call spent to the record's tally and the job's meter;
        returns its tokens."""
        tally.model = answer.model or self.config.model
        tally.finish_reason = answer.finish_reason
        call = Usage()
        if answer.usage is not None:
            call.add(
                *answer.usage,
                cached_input_tokens=answer.cached_tokens,
                reasoning_tokens=answer.reasoning_tokens,
                schema_retry=tally.retrying,
            )
        else:
            call.add(
                count_tokens(messages),
                count_text(answer.text),
                estimated=True,
                schema_retry=tally.retrying,
            )
        self._add(call, tally)
        return call.total_tokens

    def _add(self, call: Usage, tally: _Tally) -> None:
        tally.usage.merge(call)
        job = _job()
        if job is not None and job.meter is not None:
            job.meter.add(call.cost(self.price_of(tally.model or None)), call.as_dict())

    def _request(self, messages: Messages, mode: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            **self.config.sampling(),
        }
        response_format = self.formats.body(mode)
        if response_format is not None:
            request["response_format"] = response_format
        if self.config.extra:
            request.update(self.config.extra)  # extra fields go in the body as given
        return request

    # -- the client, errors, prices --------------------------------------------------

    def _api_key(self) -> str | None:
        return os.environ.get(self.config.api_key_env) if self.config.api_key_env else None

    async def aclose(self) -> None:
        """Nothing to close: the endpoint's session is shared by every agent of it in this
        event loop (others may be calling), and closes with its loop."""

    def _describe(self, failure: Failure) -> str:
        """One line naming the model, the endpoint and what went wrong (never the key)."""
        text = f"LLM {self.config.model} at {self.config.base_url}: {failure.reason}"
        if failure.status in (401, 403) and self.config.api_key_env:
            state = "set" if self._api_key() else "unset"
            text += f" (the key comes from ${self.config.api_key_env}, which is {state})"
        return self._redact(text)

    def _redact(self, text: str) -> str:
        key = self._api_key()
        return text.replace(key, "***") if key and len(key) >= 4 else text

    def price_of(self, reported_model: str | None = None) -> Price | None:
        """The price of calls (see :meth:`~buttermilk.llm.config.LLMConfig.price_of`)."""
        return self.config.price_of(reported_model, self.prices)
