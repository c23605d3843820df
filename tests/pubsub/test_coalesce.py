"""The Coalescer: concurrent calls share a batch, errors stay with their own item."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from filters.pubsub.coalesce import Coalescer


async def test_calls_arriving_during_a_batch_share_the_next_one() -> None:
    batches: list[list[int]] = []
    gate = trio.Event()

    async def send(batch: list[int]) -> list[BaseException | None]:
        batches.append(batch)
        if len(batches) == 1:
            await gate.wait()  # hold the first batch while the others queue up
        return [ValueError(f"odd {n}") if n % 2 else None for n in batch]

    coalescer = Coalescer[int](send)
    failed: list[str] = []

    async def submit(n: int) -> None:
        try:
            await coalescer.submit(n)
        except ValueError as exc:
            failed.append(str(exc))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, 0)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(1, 6):
            nursery.start_soon(submit, n)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert [sorted(b) for b in batches] == [[0], [1, 2, 3, 4, 5]]  # trio picks the order
    assert sorted(failed) == ["odd 1", "odd 3", "odd 5"]


async def test_a_caller_that_gives_up_before_its_batch_is_not_sent() -> None:
    sent: list[int] = []
    gate = trio.Event()

    async def send(batch: list[int]) -> list[BaseException | None]:
        sent.extend(batch)
        await gate.wait()
        return [None] * len(batch)

    coalescer = Coalescer[int](send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coalescer.submit, 1)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(0.05) as scope:
            await coalescer.submit(2)  # waits behind batch [1], then gives up
        assert scope.cancelled_caught
        gate.set()
    await coalescer.submit(3)
    assert sent == [1, 3]


async def test_a_failed_send_fails_every_item_of_its_batch() -> None:
    async def send(batch: list[int]) -> list[BaseException | None]:
        raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        await Coalescer[int](send).submit(1)
