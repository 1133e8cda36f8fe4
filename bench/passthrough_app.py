"""The ceiling for bench/stream_throughput: a Faust agent that copies clicks to a topic, doing nothing else.

Same broker, same Faust settings and micro-batching as the real worker, so the ratio of the two
rates is the cost of streamrec's own work.  Run by the benchmark as ``python -m bench.passthrough_app``.
"""

from __future__ import annotations

import sys

from stream.app import app, settings
from stream.topics import CLICKS

clicks = app.topic(settings.topic(CLICKS), key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw", partitions=settings.clicks_partitions)
copies = app.topic(settings.topic("passthrough"), key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw", partitions=settings.recommendations_partitions)


@app.agent(clicks)
async def copy(stream) -> None:
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        for event in events:
            await copies.send(key=event.key, value=event.value)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
