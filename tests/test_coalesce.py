"""The Coalescer: many submitters, one bulk call at a time, each gets its own answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from buttermilk.batch.coalesce import Coalescer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(
    fn: Callable[[list[Any]], Awaitable[Sequence[Any]]], **kwargs: Any
) -> AsyncIterator[tuple[Coalescer[Any, Any], anyio.abc.TaskGroup]]:
    coalescer: Coalescer[Any, Any] = Coalescer(fn, **kwargs)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(coalescer.run)
            yield coalescer, tg
            tg.cancel_scope.cancel()


class Gate:
    """A bulk function that records each call and waits for the test to let it finish."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.started = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, items: list[Any]) -> list[Any]:
        self.calls.append(list(items))
        self.started.set()
        await self.release.wait()
        if any(isinstance(i, int) and i < 0 for i in items):
            raise ValueError(f"negative item in {items}")
        return [f"done:{i}" for i in items]

    def open(self) -> None:
        self.release.set()

    def next_call(self) -> None:
        self.started = anyio.Event()


@pytest.mark.anyio
async def test_every_submitter_gets_its_own_result_back() -> None:
    calls: list[list[int]] = []

    async def times_ten(items: list[int]) -> list[int]:
        calls.append(items)
        await anyio.sleep(0.01)
        return [i * 10 for i in items]

    results: dict[int, int] = {}

    async def submit(c: Coalescer[int, int], i: int) -> None:
        results[i] = await c.submit(i)

    async with serving(times_ten) as (coalescer, _), anyio.create_task_group() as submitters:
        for i in range(200):
            submitters.start_soon(submit, coalescer, i)

    assert results == {i: i * 10 for i in range(200)}
    assert sum(len(c) for c in calls) == 200
    assert len(calls) < 200, "nothing was coalesced"


@pytest.mark.anyio
async def test_items_submitted_while_a_call_is_in_flight_go_together_in_the_next_call() -> None:
    gate = Gate()
    results: dict[str, Any] = {}

    async def submit(c: Coalescer[str, str], item: str) -> None:
        results[item] = await c.submit(item)

    async with serving(gate) as (coalescer, tg):
        tg.start_soon(submit, coalescer, "a")
        await gate.started.wait()  # the first call has "a" and is in flight
        for item in ("b", "c", "d"):
            tg.start_soon(submit, coalescer, item)
        await anyio.wait_all_tasks_blocked()  # every new submitter is now queued
        assert gate.calls == [["a"]]
        gate.open()
        await anyio.wait_all_tasks_blocked()  # every group has been served
        assert len(results) == 4

    assert gate.calls == [["a"], ["b", "c", "d"]]
    assert results == {"a": "done:a", "b": "done:b", "c": "done:c", "d": "done:d"}


@pytest.mark.anyio
async def test_an_error_reaches_every_submitter_of_the_failing_group_and_no_other() -> None:
    gate = Gate()
    outcomes: dict[int, Any] = {}

    async def submit(c: Coalescer[int, str], item: int) -> None:
        try:
            outcomes[item] = await c.submit(item)
        except ValueError as exc:
            outcomes[item] = exc

    async with serving(gate) as (coalescer, tg):
        tg.start_soon(submit, coalescer, 1)
        await gate.started.wait()
        for item in (2, -3, 4):  # the next group, which will fail
            tg.start_soon(submit, coalescer, item)
        await anyio.wait_all_tasks_blocked()  # every new submitter is now queued
        gate.open()
        await anyio.wait_all_tasks_blocked()  # every group has been served
        assert len(outcomes) == 4

        # The coalescer survives the error and serves later submissions.
        assert await coalescer.submit(5) == "done:5"

    assert outcomes[1] == "done:1"
    for item in (2, -3, 4):
        assert isinstance(outcomes[item], ValueError), outcomes[item]
        assert "negative item in [2, -3, 4]" in str(outcomes[item])
    assert gate.calls == [[1], [2, -3, 4], [5]]


@pytest.mark.anyio
async def test_a_group_never_exceeds_max_size() -> None:
    gate = Gate()
    results: dict[int, str] = {}

    async def submit(c: Coalescer[int, str], item: int) -> None:
        results[item] = await c.submit(item)

    async with serving(gate, max_size=3) as (coalescer, tg):
        tg.start_soon(submit, coalescer, 0)
        await gate.started.wait()
        for item in range(1, 8):
            tg.start_soon(submit, coalescer, item)
        await anyio.wait_all_tasks_blocked()  # every new submitter is now queued
        gate.open()
        await anyio.wait_all_tasks_blocked()  # every group has been served
        assert len(results) == 8

    assert gate.calls == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert results == {i: f"done:{i}" for i in range(8)}


@pytest.mark.anyio
async def test_linger_gathers_items_submitted_shortly_after_the_first() -> None:
    calls: list[list[int]] = []

    async def echo(items: list[int]) -> list[int]:
        calls.append(items)
        return items

    async def submit(coalescer: Coalescer[int, int], item: int) -> None:
        assert await coalescer.submit(item) == item

    async with serving(echo, linger=0.3) as (coalescer, _), anyio.create_task_group() as tg:
        tg.start_soon(submit, coalescer, 1)
        await anyio.sleep(0.05)  # well within the linger
        tg.start_soon(submit, coalescer, 2)

    assert calls == [[1, 2]]
