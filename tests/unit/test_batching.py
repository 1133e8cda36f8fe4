"""``stream.batching.ready_batches`` on a Faust agent's in-memory test channel (no broker needed).

The properties the worker relies on: every click arrives once and in order, a batch never holds
more than ``max_`` clicks, a backlog is handed over in full batches, a trickle is cut at ``within``
seconds, and a quiet spell does not end the stream (mode's ``wait_for_stopped`` reports a timeout
as "stopped", which once ended the generator at the first quiet slice).
"""

from __future__ import annotations

import asyncio

import faust

from stream.batching import ready_batches


async def _until(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting for the batches"
        await asyncio.sleep(0.005)


def _collect(max_: int, within: float, idle: float, waves: list[tuple[float, list[int]]],
             gap: float = 0.0) -> list[list[int]]:
    """Put each wave's values after its pause (one every ``gap`` seconds) and wait until all are batched."""
    total = sum(len(values) for _, values in waves)
    holder: dict[str, list[list[int]]] = {}

    async def feed(agent) -> None:  # noqa: ANN001
        for pause, values in waves:
            await asyncio.sleep(pause)
            for value in values:
                await agent.put(value, wait=False)
                if gap:
                    await asyncio.sleep(gap)
        await _until(lambda: sum(map(len, holder["batches"])) >= total)

    app = faust.App("batching-unit", store="memory://")
    holder["batches"] = []

    @app.agent()
    async def collect(stream) -> None:  # noqa: ANN001
        async for events in ready_batches(stream, max_, within, idle):
            holder["batches"].append([event.value for event in events])

    async def main() -> None:
        async with collect.test_context() as agent:
            await feed(agent)

    asyncio.run(main())
    return holder["batches"]


def test_a_backlog_comes_in_full_batches_in_order_and_a_quiet_spell_does_not_end_the_stream() -> None:
    app_batches = _collect(4, 1.0, 0.01, [(0.0, list(range(10))), (0.2, list(range(10, 13)))])
    assert [v for b in app_batches for v in b] == list(range(13))
    assert all(len(b) <= 4 for b in app_batches)
    assert app_batches[:3] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert app_batches[3:] == [[10, 11, 12]]


def test_a_trickle_is_cut_at_within_seconds() -> None:
    # 30 clicks 10 ms apart (0.3 s or more): each slice of 50 ms idle brings one, so only ``within`` ends a batch
    batches = _collect(1000, within=0.05, idle=0.05, waves=[(0.0, list(range(30)))], gap=0.01)
    assert [v for b in batches for v in b] == list(range(30))
    assert len(batches) >= 3
