"""The ceiling for bench/stream_throughput: a Faust agent that copies clicks to a topic, doing nothing else.

Same broker, same Faust settings, micro-batching (``stream.batching.ready_batches``) and batched
publishing (``stream.publish.BatchPublisher``) as the real worker, so the ratio of the two rates is
the cost of streamrec's own work.  Run by the benchmark as ``python -m bench.passthrough_app``.
"""

from __future__ import annotations

import sys

from stream.app import app, settings, use_event_loop
from stream.batching import ready_batches
from stream.publish import BatchPublisher
from stream.topics import CLICKS

clicks = app.topic(settings.topic(CLICKS), key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw", partitions=settings.clicks_partitions)
copies = app.topic(settings.topic("passthrough"), key_type=bytes, value_type=bytes, key_serializer="raw",
                   value_serializer="raw", partitions=settings.recommendations_partitions)


@app.agent(clicks)
async def copy(stream) -> None:
    publisher = BatchPublisher(copies)
    async for events in ready_batches(stream, settings.batch_size, settings.batch_within_s, settings.batch_idle_s):
        await publisher.send(app.producer._ensure_producer(), [(event.key, event.value) for event in events])


if __name__ == "__main__":
    use_event_loop(settings.event_loop)  # the worker's loop: a fair ceiling
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
