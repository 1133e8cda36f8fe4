"""Micro-batches as large as the backlog, and no later than the clicks need.

Faust's ``stream.take_events(n, within=t)`` waits for ``n`` events or ``t`` seconds after each batch.
Neither fixed ``t`` works for the stream: the worker ranks a batch in about 5 ms plus 0.4-0.7 ms
per click, and while it ranks, no click reaches the buffer (the fetcher and the buffer's drainer run
on the same event loop).  With ``t`` = 5 ms a backlog was worked off in batches of 24 clicks (the
drainer moves about 5 clicks per ms), paying the fixed cost ten times as often as needed: 890 clicks/s.
With ``t`` = 50 ms the batches were full (253) and the worker did 1,530 clicks/s, but then every
click at a low rate would wait up to 50 ms for company (``bench/stream_throughput``, both).

:func:`ready_batches` lingers only while clicks keep coming: after the first click it waits in
slices of ``idle`` seconds and hands the batch over as soon as a slice brings nothing new (the
backlog is drained), the batch is full, or ``within`` seconds have passed.  At a low rate that
is a millisecond or two; while a backlog drains it is a full batch.

It follows ``take_events``' own pattern (a stream processor fills the buffer from the passive
drainer; acks are turned off and each event is acked after its batch has been handled, so a click
counts as done only once its slate is out: at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any


async def ready_batches(stream: Any, max_: int, within: float, idle: float) -> AsyncGenerator[list, None]:
    """Yield lists of Faust events from ``stream``: see the module docstring for when a batch ends."""
    events: list = []
    arrived = asyncio.Event()   # the first event of a batch is in
    full = asyncio.Event()      # max_ events are in: hand over now
    consumed = asyncio.Event()  # the batch was handled: the drainer may add again
    consuming: asyncio.Future | None = None
    loop = asyncio.get_running_loop()

    async def add_to_buffer(value: Any) -> Any:
        while consuming is not None and not consuming.done():  # the agent is handling a batch: do not add to it
            await consuming
        event = stream.current_event
        if event is None:
            raise RuntimeError("ready_batches found no current event")
        events.append(event)
        arrived.set()
        if len(events) >= max_:
            full.set()
            consumed.clear()
            await stream.wait(consumed)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # acked below, after the batch is handled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))  # noqa: SLF001 - how take_events starts its drainer
    try:
        while not stream.should_stop:
            if not events:
                arrived.clear()
                await stream.wait_for_stopped(arrived)
                if stream.should_stop:
                    return
            started = loop.time()
            while not full.is_set():
                seen, left = len(events), within - (loop.time() - started)
                if left <= 0:
                    break
                # mode's wait_for_stopped also says "stopped" when the timeout passed: ask should_stop
                await stream.wait_for_stopped(full, timeout=min(idle, left))
                if stream.should_stop:
                    return
                if len(events) == seen:  # a quiet slice: nothing more is waiting
                    break
            consuming = loop.create_future()
            batch = list(events)
            try:
                yield batch
            finally:
                del events[: len(batch)]
                for event in batch:
                    await stream.ack(event)
                consuming.set_result(None)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)  # noqa: SLF001
