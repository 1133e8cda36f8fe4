"""The stream service: a Faust app that turns clicks into slates, and the control plane that decides models.

Rooms, read top to bottom:

* contracts — ``settings`` (one settings object), ``records`` (the wire records), ``topics`` (topic names,
  partition counts, creation), ``keys`` (the stream's Redis keys);
* the click path — ``app`` (creates the Faust app, nothing else), ``intake`` (clicks in micro-batches
  through librdkafka), ``online`` (one batch: session state, candidates, ranking, interleaving),
  ``agents`` (thin Faust adapters: clicks to slates, outcomes and ticks to the controller);
* the control plane — ``control/`` (the model-lifecycle controller and its parts, plain classes), ``trainer``
  (retrain jobs in their own process), ``clicklog`` (reading a window of the log back from Kafka);
* observability — ``metrics``, ``prometheus``, ``monitor``, ``report``;
* ``__main__`` (``python -m stream ...``).
"""
