"""Async job records: the worker moves a job to running, then succeeded or failed, and schedules
its webhook (the worker does the webhook because it is the one that sees the job finish).

The terminal state and the webhook's entry in the `pf:webhooks` schedule are written in one
transaction, so a worker dying right after a job finishes never loses the delivery; any
worker's `WebhookDeliverer` (webhooks.py) sends it.

The gateway owns the record's retention (its TTL, which HSET keeps). Transitions use WATCH/MULTI
so they never overwrite a state the gateway set meanwhile (a job
cancelled while it ran stays cancelled), and a job in a terminal state is never touched again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from pagefleet.platform.protocol import JobRecord, decode_job, encode, keys
from pagefleet.platform.protocol.messages import TERMINAL_JOB_STATUSES, JobView
from pagefleet.platform.protocol.webhooks import WEBHOOK_SCHEDULE

log = logging.getLogger(__name__)


def job_view(record: JobRecord) -> dict:
    """The job as `GET /v1/jobs/{id}` shows it (the protocol's `JobView`); the webhook's body."""
    return msgspec.to_builtins(JobView.of(record))


class JobUpdater:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def mark_running(self, job_id: str) -> None:
        def running(record: JobRecord) -> JobRecord:
            if record.status == "running":
                return record
            return msgspec.structs.replace(record, status="running", started_at=time.time())
        await self._transition(job_id, running)

    async def mark_finished(self, job_id: str, result: dict | None, error: dict | None) -> None:
        """Record the outcome and, in the same transaction, schedule the webhook."""
        def finished(record: JobRecord) -> JobRecord:
            return msgspec.structs.replace(
                record, status="failed" if error is not None else "succeeded",
                started_at=record.started_at or time.time(), finished_at=time.time(),
                result=result, error=error)
        await self._transition(job_id, finished)

    async def _transition(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord | None:
        key = keys.job_hash(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, keys.JOB_RECORD_FIELD)
                    if raw is None:
                        log.warning("job %s has no record (expired or deleted)", job_id)
                        return None
                    record = decode_job(raw)
                    if record.status in TERMINAL_JOB_STATUSES:
                        return None
                    updated = change(record)
                    pipe.multi()
                    pipe.hset(key, keys.JOB_RECORD_FIELD, encode(updated))  # keeps the gateway's TTL
                    if updated.status in TERMINAL_JOB_STATUSES and updated.webhook:
                        pipe.zadd(WEBHOOK_SCHEDULE, {job_id: time.time()}, nx=True)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue
