"""`/console`: the page, its static files and its JSON API.

The page and its static files are public (they hold no data); every `/console/api/` route
needs a valid key like the rest of the API, and the fleet-wide ones an admin key
(`auth.admin_guard`: 403 otherwise). A normal key uses the playground and its own jobs through
the ordinary `/v1` API. Keys travel only in the Authorization header, never in URLs.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from pagefleet.platform.gateway.auth import admin_guard, bearer_token, is_admin
from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.console.fleet import (
    Fleet,
    ScalingEvents,
    read_fleet,
    read_scaling_events,
)
from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.registry import Registry

STATIC = resources.files(__package__) / "static"
# No caching of the page itself: a new gateway version must not run an old script.
_NO_STORE = {"Cache-Control": "no-store"}


class Session(msgspec.Struct, kw_only=True):
    """What the console may show this caller."""

    auth_required: bool
    admin: bool


class ConsoleRoutes(Controller):
    path = "/console"
    include_in_schema = False

    @get("/", opt={"public": True}, media_type="text/html")
    async def page(self) -> Response:
        return Response((STATIC / "console.html").read_text(encoding="utf-8"),
                        media_type="text/html; charset=utf-8", headers=_NO_STORE)

    @get("/api/session")
    async def session(self, request: Request, settings: NamedDependency[GatewaySettings]) -> Session:
        return Session(auth_required=bool(settings.accepted_keys),
                       admin=is_admin(bearer_token(request), settings.api_keys, settings.admin_keys))

    @get("/api/fleet", guards=[admin_guard])
    async def fleet(self, broker: NamedDependency[Broker], registry: NamedDependency[Registry],
                    settings: NamedDependency[GatewaySettings]) -> Fleet:
        return await read_fleet(broker.redis, registry, time.time(), settings.heartbeat_timeout_s)

    @get("/api/events", guards=[admin_guard])
    async def events(self, broker: NamedDependency[Broker],
                     limit: Annotated[int, Parameter(ge=1, le=1000)] = 50) -> ScalingEvents:
        return await read_scaling_events(broker.redis, limit)


def console_handlers() -> list[ControllerRouterHandler]:
    """The console's route handlers, for `create_app`."""
    static = create_static_files_router(path="/console/static", directories=[str(STATIC)],
                                        opt={"public": True}, include_in_schema=False,
                                        name="console-static")
    return [ConsoleRoutes, static]
