"""Faust tables.  Each is backed by a changelog topic, so its contents survive a worker crash."""

from __future__ import annotations

from stream.app import app, settings

#: clicks per item id, the state behind the placeholder most-clicked slate.  Clicks arrive
#: partitioned by session, so the changelog is partitioned by item id instead
#: (``use_partitioner``); a worker restores the partitions it is assigned, all of them when alone.
item_clicks = app.Table(
    "item-clicks", default=int, partitions=settings.clicks_partitions, use_partitioner=True,
)
