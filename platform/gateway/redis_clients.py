"""The gateway's Redis clients: a bounded command pool and the result readers' connections.

Both retry a command on a connection or timeout error after reconnecting (with jittered
exponential backoff), and check an idle pooled connection with PING before using it, so
connections that died with a Redis restart are replaced instead of answering 503. The pool
blocks a caller until a connection is free rather than failing with "too many connections".
"""

from __future__ import annotations

import redis.asyncio as aioredis

from pagefleet.platform.gateway.settings import GatewaySettings
from pagefleet.platform.protocol.resilience import reconnecting


def _reconnecting(settings: GatewaySettings) -> dict:
    return reconnecting(settings.redis_retries, settings.redis_health_check_interval_s)


def command_client(settings: GatewaySettings) -> aioredis.Redis:
    """Enqueue, cancel, backlog, jobs and health: short commands on a bounded shared pool."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_pool_size,
        timeout=settings.redis_pool_timeout_s, socket_timeout=settings.redis_socket_timeout_s,
        **_reconnecting(settings))
    return aioredis.Redis(connection_pool=pool)


def reader_client(settings: GatewaySettings) -> aioredis.Redis:
    """One connection for one result reader's blocking XREADs."""
    pool = aioredis.ConnectionPool.from_url(
        settings.redis_url, max_connections=1, socket_timeout=settings.redis_socket_timeout_s,
        **_reconnecting(settings))
    return aioredis.Redis(connection_pool=pool)
