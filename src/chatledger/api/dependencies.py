"""What routes receive: the verified user, the service, the store."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from chatledger.api.auth import Authenticator, bearer_token
from chatledger.api.guards import StreamLimiter
from chatledger.errors import PermissionDeniedError
from chatledger.service import ChatService
from chatledger.store import SQLAlchemyStore

__all__ = ["CurrentUser", "Service", "Store", "Streams", "TokenUser", "authenticated_user"]


# Declares the scheme in the OpenAPI schema (Swagger UI's Authorize button, and the token
# in generated clients); checking the token stays ours, for our own errors.
_bearer = HTTPBearer(auto_error=False, description="A JWT whose subject is the path's user id.")


async def authenticated_user(
    request: Request,
    user_id: Annotated[str, Path(description="Must equal the token's subject, exactly.")],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> str:
    """The path's user id, once the bearer token proves the caller is that user.

    No token or a bad one is 401; a good token for someone else is 403. The comparison
    is exact: no case folding and no normalisation, which could map two users to one.
    """
    if getattr(request.state, "user_id", None) == user_id:
        return user_id  # verified before the body was read (VerifyFirstMiddleware)
    authenticator: Authenticator = request.app.state.authenticator
    subject = await authenticator.verify(bearer_token(request.headers.get("authorization")))
    if subject != user_id:
        raise PermissionDeniedError("this token is for another user")
    return user_id


async def token_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
) -> str:
    """The user of a request whose path names none (`/v1/…`, `/chatkit`): its token's
    subject."""
    verified: str | None = getattr(request.state, "user_id", None)
    if verified is not None:
        return verified  # checked before the body was read (VerifyFirstMiddleware)
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator.verify(bearer_token(request.headers.get("authorization")))


# The app's parts, as dependencies. Coroutines, though they never wait: FastAPI runs a
# plain function in its thread pool, a thread hop on every request.
async def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.service
    return service


async def _store(request: Request) -> SQLAlchemyStore:
    store: SQLAlchemyStore = request.app.state.store
    return store


async def _streams(request: Request) -> StreamLimiter:
    streams: StreamLimiter = request.app.state.streams
    return streams


CurrentUser = Annotated[str, Depends(authenticated_user)]
TokenUser = Annotated[str, Depends(token_user)]
Service = Annotated[ChatService, Depends(_service)]
Store = Annotated[SQLAlchemyStore, Depends(_store)]
Streams = Annotated[StreamLimiter, Depends(_streams)]
