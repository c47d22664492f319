"""How agents are built from config and called.

An agent is a callable ``agent(record, outputs, parameters)`` returning a JSON-ready
value: ``outputs`` maps earlier agents' names to their outputs, ``parameters`` are the
flow's parameters with the batch's on top. Async callables are awaited; plain functions
run in a worker thread. ``_target_`` may name a class (instantiated once with the other
keys as arguments) or a function (called with the other keys as keyword arguments).

An agent that needs more about the job it runs in (the attempt number, the console of
an interactive worker) calls :func:`current_job`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pkgutil import resolve_name
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from buttermilk.domain.variants import DEFAULT_KEY
from buttermilk.errors import UsageError
from buttermilk.flows.meter import Meter
from buttermilk.flows.models import AgentConfig
from buttermilk.records import Record

if TYPE_CHECKING:
    from buttermilk.store.store import Store


class Console(Protocol):
    """A person at a terminal, available to agents of interactive batches."""

    async def ask(
        self, record: Record, outputs: Mapping[str, Any], question: str, choices: list[str]
    ) -> str:
        """Show the record and earlier outputs, ask ``question``, return one of ``choices``."""
        ...


@dataclass(frozen=True)
class JobContext:
    """What an agent may learn about the job it is running in."""

    batch_id: str
    record_id: str
    attempt: int
    max_attempts: int
    interactive: bool
    variant: str = DEFAULT_KEY
    """The key of the job's combination of its batch's axes."""
    repeat: int = 0
    """The job's repeat of its combination, from 0 (an answer cache keys on it)."""
    console: Console | None = None
    store: Store | None = None
    """The batch store, for state agents share across workers (rate budgets, caches)."""
    meter: Meter | None = None
    """Where an agent that pays per call adds each answered call (see :mod:`.meter`)."""
    concurrency: int | None = None
    """How many of the batch's jobs this worker runs at once: an LLM agent's calls in flight
    to one model never exceed it (see :mod:`buttermilk.llm.adaptive`)."""


_current_job: ContextVar[JobContext] = ContextVar("buttermilk_current_job")


def current_job() -> JobContext:
    """The job the calling agent runs in (raises LookupError outside of a job)."""
    return _current_job.get()


def set_current_job(ctx: JobContext) -> None:
    _current_job.set(ctx)


@dataclass(frozen=True)
class Agent:
    """A built agent: its name and a uniform async call."""

    name: str
    call: Callable[[Record, Mapping[str, Any], Mapping[str, Any]], Awaitable[Any]]


def _is_async(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, functools.partial):
        return _is_async(fn.func)
    call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound method itself
    return call is not None and inspect.iscoroutinefunction(call)


AGENT_ARGUMENTS = ("record", "outputs", "parameters")


def _check_arguments(
    config: AgentConfig, target: Any, kwargs: dict[str, Any], leading: tuple[str, ...]
) -> None:
    """Refuse, at create, keys of an agent's config that its function or class cannot take
    (a typo would otherwise fail every job), and required arguments left out. ``leading``:
    the arguments a call passes first (the agent's own three; none for a class)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # no signature to read (some builtins): calls will tell
        return
    try:
        signature.bind(*(None for _ in leading), **kwargs)
    except TypeError as exc:
        problem = _argument_problem(signature, kwargs, leading, exc)
        raise UsageError(f"agent {config.name!r}: {config.target} {problem}") from None


def _argument_problem(
    signature: inspect.Signature, kwargs: dict[str, Any], leading: tuple[str, ...], exc: TypeError
) -> str:
    params = list(signature.parameters.values())[len(leading) :]
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    accepted = ", ".join(p.name for p in named) or "no other arguments"
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        unknown = [key for key in kwargs if key not in {p.name for p in named}]
        if unknown:
            return f"takes no argument {unknown[0]!r}: it accepts {accepted}"
    missing = [p.name for p in named if p.default is p.empty and p.name not in kwargs]
    if missing:
        return f"needs its argument {missing[0]!r} set in the agent's config"
    return f"cannot be called as an agent ({exc}): it must take {', '.join(AGENT_ARGUMENTS)}"


def build_agent(config: AgentConfig) -> Agent:
    """Import and set up one agent; a UsageError says which agent and why when it fails."""
    try:
        target = resolve_name(config.target)
    except Exception as exc:  # no module, no attribute, a bad path: several types
        raise UsageError(
            f"agent {config.name!r}: cannot import _target_ {config.target!r} ({exc})"
        ) from None
    kwargs = config.kwargs
    if isinstance(target, type):
        _check_arguments(config, target, kwargs, ())
        try:
            fn: Any = target(**kwargs)
        except Exception as exc:  # bad or missing arguments, refused values
            raise UsageError(
                f"agent {config.name!r}: bad arguments for {config.target}: {exc}"
            ) from None
    elif callable(target):
        _check_arguments(config, target, kwargs, AGENT_ARGUMENTS)
        fn = functools.partial(target, **kwargs) if kwargs else target
    else:
        raise UsageError(f"agent {config.name!r}: _target_ {config.target!r} is not callable")
    if not callable(fn):
        raise UsageError(f"agent {config.name!r}: {config.target} instances are not callable")
    if isinstance(target, type):
        _check_arguments(config, fn, {}, AGENT_ARGUMENTS)  # its __call__

    if _is_async(fn):

        async def call(
            record: Record, outputs: Mapping[str, Any], params: Mapping[str, Any]
        ) -> Any:
            return await fn(record, outputs, params)
    else:

        async def call(
            record: Record, outputs: Mapping[str, Any], params: Mapping[str, Any]
        ) -> Any:
            return await anyio.to_thread.run_sync(
                fn, record, outputs, params, abandon_on_cancel=True
            )

    return Agent(name=config.name, call=call)
