"""The serving endpoint: HTTP recommendations from the newest promoted model (``python -m serving``).

``app.py`` builds the FastAPI app, ``recommender.py`` ranks a session with the code the stream uses
(:mod:`models.recommend`) and degrades instead of failing, ``publisher.py`` sends served slates and
ingested clicks to Kafka, ``metrics.py`` holds the Prometheus metrics, ``admin.py`` the token-guarded
admin routes.  It imports ``models`` for ranking and ``stream`` only for wire records and settings.
"""
