"""Admin routes: roll the model back, ask for a major retrain.  Bearer token from ``STREAMREC_ADMIN_TOKEN``.

With no token configured the routes answer 403 (disabled); a missing token is 401, a wrong one 403.
The token is compared in constant time.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid

import redis
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.registry import RegistryError

from serving.schemas import RetrainRequested, RollbackDone, RollbackRequest
from stream.keys import retrain_requests
from stream.records import ModelUpdate
from stream.topics import MODEL_UPDATES

bearer = HTTPBearer(auto_error=False, description="STREAMREC_ADMIN_TOKEN")


def require_admin(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    token = request.app.state.settings.admin_token
    if token is None:
        raise HTTPException(403, "admin routes are disabled: set STREAMREC_ADMIN_TOKEN to enable them")
    if creds is None:
        raise HTTPException(401, "missing bearer token (Authorization: Bearer <STREAMREC_ADMIN_TOKEN>)",
                            headers={"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(creds.credentials.encode(), token.get_secret_value().encode()):
        raise HTTPException(403, "wrong admin token")


router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={401: {"description": "no token"}, 403: {"description": "wrong token or disabled"}})


@router.post("/rollback", response_model=RollbackDone)
def rollback(request: Request, body: RollbackRequest | None = None) -> RollbackDone:
    """Point ``model:current`` back at an earlier version (default: the previous major one) and announce it."""
    state = request.app.state
    registry = state.recommender.registry
    previous = registry.current_version()
    try:
        current = registry.rollback(body.to if body else None)
    except (LookupError, RegistryError) as err:
        raise HTTPException(409, str(err)) from None
    except redis.RedisError as err:
        raise HTTPException(503, f"Redis is unreachable, nothing was rolled back: {err}") from None
    update = ModelUpdate(version=current, kind="rollback", parent=previous, action="rolled_back",
                         reason="requested on POST /admin/rollback", summary={"by": "admin"})
    state.publisher.send(state.settings.topic(MODEL_UPDATES), None, update.model_dump_json().encode())
    state.recommender.refresh()
    return RollbackDone(previous=previous, current=current)


@router.post("/retrain", response_model=RetrainRequested, status_code=202)
def retrain(request: Request) -> RetrainRequested:
    """Ask for a major retrain now (the leading worker's controller takes the request from Redis on its next tick)."""
    state = request.app.state
    request_id = uuid.uuid4().hex
    try:
        queued = state.recommender.slow.rpush(retrain_requests(state.settings.topic_prefix),
                                              json.dumps({"request_id": request_id, "ts": time.time(), "by": "admin"}))
    except redis.RedisError as err:
        raise HTTPException(503, f"Redis is unreachable, the request could not be queued: {err}") from None
    return RetrainRequested(request_id=request_id, queued=int(queued))
