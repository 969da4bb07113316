"""Builds the files and batches services once the gateway's Redis client exists."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, Router

from pagefleet.platform.batch.celery_app import create_celery
from pagefleet.platform.batch.storage import LocalFileStorage
from pagefleet.platform.gateway.batches.controller import BatchesController
from pagefleet.platform.gateway.batches.service import BatchService
from pagefleet.platform.gateway.files.controller import FilesController
from pagefleet.platform.gateway.files.service import FileService
from pagefleet.platform.gateway.settings import GatewaySettings

STATE_NAMES = ("files", "batches")

_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file itself


@asynccontextmanager
async def batch_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Runs after the Redis lifespan (it reuses `state.broker.redis`)."""
    state = app.state
    settings: GatewaySettings = state.settings
    redis = state.broker.redis
    files = FileService(redis, LocalFileStorage(settings.batch.files_path),
                        settings.batch.max_file_bytes, settings.batch.file_retention_s)
    celery = create_celery(settings.redis_url, settings.batch)
    state.files = files
    state.batches = BatchService(redis, files, celery, settings.batch)
    try:
        yield
    finally:
        celery.close()


def batch_router(settings: GatewaySettings) -> Router:
    """Files may be larger than other bodies: their limit is the batch settings'."""
    return Router(path="/", route_handlers=[FilesController, BatchesController],
                  request_max_body_size=settings.batch.max_file_bytes + _MULTIPART_SLACK)
