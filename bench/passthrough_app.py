"""The ceiling for bench/stream_throughput: the worker's clicks intake copying clicks to a topic, doing nothing else.

Same broker, same Faust app and settings, same intake (``stream.intake.ClickIntake``: fetch-sized
batches, librdkafka's producer, the same ``processing_guarantee``: transactions by default) as the real worker, so the ratio of
the two rates is the cost of streamrec's own work.  Run by the benchmark as ``python -m bench.passthrough_app``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from confluent_kafka import Message

from stream.app import app, settings, use_event_loop
from stream.intake import ClickIntake, Handled
from stream.topics import CLICKS, TopicSpec, create_missing

COPIES = settings.topic("passthrough")


@app.service
class Copy(ClickIntake):
    topic = settings.topic(CLICKS)
    settings = settings

    def handle(self, messages: Sequence[Message], use_state: bool) -> Handled:
        return Handled(out=[(COPIES, m.key(), m.value()) for m in messages])

    def catch_up(self, messages: Sequence[Message]) -> list:
        """Nothing is ever held: a copy needs no state."""
        return []


if __name__ == "__main__":
    # the copies' topic, shaped like recommendations
    create_missing(settings.kafka, [TopicSpec(COPIES, settings.recommendations_partitions, {})])
    use_event_loop(settings.event_loop)  # the worker's loop: a fair ceiling
    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    app.main()
