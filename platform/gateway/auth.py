"""Bearer API keys: a guard for every route not marked public, and the caller's owner id.

The owner id is a hash of the key, so Redis (job records, per-owner job lists) never holds a
usable key. With no keys configured every caller is the same anonymous owner.
"""

from __future__ import annotations

import hashlib
import hmac

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from pagefleet.platform.gateway.errors import OpenAIError

ANONYMOUS = "anonymous"
OPENAPI_PATH = "/schema"


def bearer_token(connection: ASGIConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def owner_of(key: str | None) -> str:
    if key is None:
        return ANONYMOUS
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def is_valid_key(token: str | None, api_keys: tuple[str, ...]) -> bool:
    if not api_keys:
        return True
    if token is None:
        return False
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in api_keys)


async def api_key_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Reject callers without a valid key (401), except on routes with `opt={"public": True}`
    and the OpenAPI schema (clients and schemathesis read it to learn the API).

    Async although it never awaits: Litestar runs a synchronous guard in its thread pool, a
    thread hop (and a GIL hand-over) on every request for a few microseconds of work."""
    if handler.opt.get("public") or connection.url.path.startswith(OPENAPI_PATH):
        return
    api_keys: tuple[str, ...] = connection.app.state.settings.accepted_keys
    token = bearer_token(connection)
    if not is_valid_key(token, api_keys):
        message = ("Missing API key: pass it as 'Authorization: Bearer <key>'." if token is None
                   else "Incorrect API key provided.")
        raise OpenAIError(401, message, code="invalid_api_key")


def is_admin(token: str | None, api_keys: tuple[str, ...], admin_keys: tuple[str, ...]) -> bool:
    """Whether the caller may see fleet-wide views: anyone on an open gateway, else only an
    admin key's holder."""
    if not api_keys and not admin_keys:
        return True
    if token is None:
        return False
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in admin_keys)


async def admin_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """403 for a valid key that is not an admin key (`api_key_guard` has answered 401 to the
    rest); for routes with fleet-wide data. Async for the reason `api_key_guard` is."""
    settings = connection.app.state.settings
    if not is_admin(bearer_token(connection), settings.api_keys, settings.admin_keys):
        raise OpenAIError(403, "This view needs an admin key (PAGEFLEET_ADMIN_KEYS).",
                          type="permission_error", code="admin_key_required")


def provide_owner(request: Request) -> str:
    """The owner id of the caller; the guard has already checked the key."""
    api_keys: tuple[str, ...] = request.app.state.settings.accepted_keys
    return owner_of(bearer_token(request)) if api_keys else ANONYMOUS
