"""The Celery side: the app (Redis as broker, the gateway's Redis), the step task, the sweep.

A batch is driven by a chain of short `step` tasks, each re-queuing the next, rather than by
one task that runs for hours: with `acks_late`, a worker killed mid-step leaves its message
unacknowledged and Redis hands it to another worker after `visibility_timeout_s`, which must
therefore be longer than a step, never than a batch. A starting worker also re-queues every
active batch (`sweep`), so a replaced worker picks up at once.

File retention is a chain of countdown tasks too: each `expire_files` run takes the period's
lock (`FILES_SWEEP_LOCK`, held for `file_sweep_s`), deletes what is due and queues the next run.
Every starting worker queues one run; a run that finds the period taken ends without queuing,
so however many workers start (or a redelivered message runs twice), one chain remains.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import redis
from celery import Celery

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.celery_app import (
    EXPIRE_FILES_TASK,
    STEP_TASK,
    send_expire_files,
    send_step,
)
from pagefleet.platform.batch.retention import expire_files
from pagefleet.platform.batch.runner import BatchRunner
from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.batch.storage import LocalFileStorage

log = logging.getLogger(__name__)


@dataclass
class _Runners:
    """One BatchRunner per worker process, made on first use (after a prefork fork)."""

    redis_url: str
    settings: BatchSettings
    models: frozenset[str]
    runner: BatchRunner | None = field(default=None)

    def get(self) -> BatchRunner:
        if self.runner is None:
            client = redis.Redis.from_url(self.redis_url)
            self.runner = BatchRunner(client, LocalFileStorage(self.settings.files_path),
                                      self.settings, self.models)
        return self.runner


def register_tasks(app: Celery, redis_url: str, settings: BatchSettings,
                   models: frozenset[str]) -> None:
    runners = _Runners(redis_url, settings, models)

    @app.task(name=STEP_TASK, acks_late=True, ignore_result=True)
    def step(batch_id: str) -> None:
        if runners.get().step(batch_id):
            send_step(app, batch_id)

    @app.task(name=EXPIRE_FILES_TASK, acks_late=True, ignore_result=True)
    def expire_files_task() -> None:
        runner = runners.get()
        period_ms = int(settings.file_sweep_s * 1000)
        if not runner.redis.set(rec.FILES_SWEEP_LOCK, 1, nx=True, px=period_ms):
            return  # this period's sweep ran or runs elsewhere, and it queues the next one
        try:
            expired = expire_files(runner.redis, runner.storage, time.time())
            if expired:
                log.info("deleted %d expired files", len(expired))
        finally:
            send_expire_files(app, countdown=settings.file_sweep_s)


def sweep(app: Celery, client: redis.Redis, settings: BatchSettings) -> int:
    """Queue a step for every active batch, after a lease left by a dead step has expired, and
    a file-retention sweep (which keeps itself going)."""
    batch_ids = [b.decode() for b in client.smembers(rec.ACTIVE_BATCHES)]
    for batch_id in batch_ids:
        send_step(app, batch_id, countdown=settings.lease_s + 1)
    send_expire_files(app)
    return len(batch_ids)
