"""Async job records: the worker moves a job to running, then succeeded or failed, and POSTs its
webhook (the worker does the webhook because it is the one that sees the job finish).

The gateway owns the record's retention (its TTL, which HSET keeps). Transitions use WATCH/MULTI
so they never overwrite a state the gateway set meanwhile (a job
cancelled while it ran stays cancelled), and a job in a terminal state is never touched again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import msgspec
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from pagefleet.platform.protocol import JobRecord, decode_job, encode, keys

log = logging.getLogger(__name__)
TERMINAL = ("succeeded", "failed", "cancelled")
_RECORD = "record"
_WEBHOOK_CLAIM = "webhook_claimed"


def job_view(record: JobRecord) -> dict:
    """The job as `GET /v1/jobs/{id}` shows it; also the webhook's body."""
    view = msgspec.to_builtins(record)
    view.pop("body", None)
    view.pop("owner", None)
    view["object"] = "job"
    return view


class JobUpdater:
    def __init__(self, redis: aioredis.Redis, http: httpx.AsyncClient, webhook_attempts: int) -> None:
        self.redis = redis
        self.http = http
        self.webhook_attempts = webhook_attempts
        self._deliveries: set[asyncio.Task[None]] = set()

    async def mark_running(self, job_id: str) -> None:
        def running(record: JobRecord) -> JobRecord:
            if record.status == "running":
                return record
            return msgspec.structs.replace(record, status="running", started_at=time.time())
        await self._transition(job_id, running)

    async def mark_finished(self, job_id: str, result: dict | None, error: dict | None) -> None:
        """Record the outcome, then deliver the webhook in the background."""
        def finished(record: JobRecord) -> JobRecord:
            return msgspec.structs.replace(
                record, status="failed" if error is not None else "succeeded",
                started_at=record.started_at or time.time(), finished_at=time.time(),
                result=result, error=error)
        record = await self._transition(job_id, finished)
        if record is not None and record.webhook:
            task = asyncio.create_task(self.deliver_webhook(record))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def close(self) -> None:
        """Wait for webhook deliveries still in flight (a draining worker finishes them)."""
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def _transition(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord | None:
        key = keys.job_hash(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, _RECORD)
                    if raw is None:
                        log.warning("job %s has no record (expired or deleted)", job_id)
                        return None
                    record = decode_job(raw)
                    if record.status in TERMINAL:
                        return None
                    updated = change(record)
                    pipe.multi()
                    pipe.hset(key, _RECORD, encode(updated))  # keeps the gateway's TTL
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def deliver_webhook(self, record: JobRecord) -> None:
        """POST once (HSETNX claims the delivery), retrying with back-off on failure."""
        if not await self.redis.hsetnx(keys.job_hash(record.id), _WEBHOOK_CLAIM, "1"):
            return
        for attempt in range(1, self.webhook_attempts + 1):
            try:
                response = await self.http.post(record.webhook, json=job_view(record))
                if response.status_code < 500:
                    return
                log.warning("webhook %s answered %d", record.webhook, response.status_code)
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed: %s", record.webhook, exc)
            if attempt < self.webhook_attempts:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))  # back-off between delivery attempts
        log.error("giving up on webhook %s of job %s", record.webhook, record.id)
