"""The Redis keys of the stream and its control plane, each named once (``prefix`` is ``STREAMREC_TOPIC_PREFIX``).

The model registry's own keys (``model:*``) are documented and built in :mod:`models.registry`; the
session states' in :mod:`models.sessions`; the item statistics' in :mod:`models.itemstats`.
"""

from __future__ import annotations


def clicks_count(prefix: str) -> str:
    """A counter of clicks answered by all workers (INCRBY once per batch): the retrain-by-clicks rule reads it."""
    return f"{prefix}clicks:count"


def retrain_requests(prefix: str) -> str:
    """A list of retrain requests (``POST /admin/retrain``, ``python -m stream retrain``) the controller takes from."""
    return f"{prefix}retrain:requests"


def control_state(prefix: str) -> str:
    """The controller's state (JSON): DBGD round, drift detector, retrain policy, guardrail, running job."""
    return f"{prefix}control:state"


def job_result(prefix: str, job_id: str) -> str:
    """Where a retrain job process leaves its outcome (JSON) for whichever worker leads when it ends."""
    return f"{prefix}control:job:{job_id}"
