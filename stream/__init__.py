"""The stream service: a Faust app that turns clicks into slates.

Modules, read top to bottom: ``settings`` (one settings object), ``records`` (the wire contracts),
``app`` (creates the Faust app, nothing else), ``topics`` (topic names, partition counts, creation),
``tables``, ``ranking`` and ``agents`` (the processing), ``__main__`` (``python -m stream ...``).
"""
