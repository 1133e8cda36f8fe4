"""serving.recommender.RequestBatcher: requests that wait together are answered together, and none waits for others.

The batcher's only dependency is ``recommend_many``; a small recorder stands in for the recommender here (the real
one, on a real Redis, is covered in tests/integration/test_serving.py and test_prerank.py)."""

from __future__ import annotations

import asyncio

from serving.recommender import RequestBatcher, Served


class Recorder:
    """Answers each request with its own session id, and notes every batch it was asked."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    def recommend_many(self, requests: list[tuple[str, int]]) -> list[Served]:
        self.batches.append([sid for sid, _ in requests])
        if self.fail:
            raise RuntimeError("ranking broke")
        return [Served([(sid, float(k))], "v1", False) for sid, k in requests]


def test_a_request_is_answered_with_its_batch_while_the_load_goes_on() -> None:
    """Under steady load (a new request every turn of the event loop) the first request must not wait until the
    queue runs dry: it is answered within a few turns, long before the load stops."""
    recorder = Recorder()
    answered_at: dict[str, int] = {}

    async def scenario() -> None:
        batcher = RequestBatcher(recorder)
        turn = 0

        async def ask(sid: str) -> None:
            served = await batcher.recommend(sid, 3)
            assert served.items == [(sid, 3.0)]
            answered_at[sid] = turn

        tasks = [asyncio.create_task(ask("first"))]
        for turn in range(1, 200):  # one more request each turn: the queue never runs dry
            tasks.append(asyncio.create_task(ask(f"s{turn}")))
            await asyncio.sleep(0)
        turn = 200
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    assert len(answered_at) == 200
    assert answered_at["first"] <= 3, f"the first request was answered at turn {answered_at['first']} of 200"
    assert max(answered_at[f"s{n}"] - n for n in range(1, 200)) <= 3


def test_requests_that_arrive_together_share_one_call() -> None:
    recorder = Recorder()

    async def scenario() -> list[Served]:
        batcher = RequestBatcher(recorder, max_batch=4)
        return await asyncio.gather(*(batcher.recommend(f"s{n}", 2) for n in range(10)))

    served = asyncio.run(scenario())
    assert [s.items[0][0] for s in served] == [f"s{n}" for n in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]


def test_an_error_reaches_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    recorder = Recorder(fail=True)

    async def scenario() -> tuple[list, Served]:
        batcher = RequestBatcher(recorder)
        outcomes = await asyncio.gather(*(batcher.recommend(f"s{n}", 1) for n in range(3)), return_exceptions=True)
        recorder.fail = False
        return outcomes, await batcher.recommend("later", 1)

    outcomes, later = asyncio.run(scenario())
    assert all(isinstance(o, RuntimeError) for o in outcomes)
    assert later.items == [("later", 1.0)]


def test_a_cancelled_request_does_not_break_its_batch() -> None:
    recorder = Recorder()

    async def scenario() -> list:
        batcher = RequestBatcher(recorder)
        tasks = [asyncio.create_task(batcher.recommend(f"s{n}", 1)) for n in range(3)]
        await asyncio.sleep(0)  # all three are queued, the batch has not run yet
        tasks[1].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, second, third = asyncio.run(scenario())
    assert isinstance(second, asyncio.CancelledError)
    assert first.items == [("s0", 1.0)] and third.items == [("s2", 1.0)]

