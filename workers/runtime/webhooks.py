"""Delivering job webhooks from the `pf:webhooks` schedule, with back-off over hours.

Every worker runs one deliverer. A due job is leased with a small script (its score moves past
the lease, so no other worker takes it meanwhile), POSTed signed, then removed on success or
on a refusal that a retry cannot fix (4xx other than 408/429, a refused target, a job gone),
or re-scheduled after jittered exponential back-off. Attempts stop once `webhook_window_s` has
passed since the job finished. A worker that dies mid-delivery leaves the entry in the
schedule, and another worker retries it once the lease runs out: delivery is at least once,
and `webhook-id` (the job id) lets the receiver drop repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import httpx
import redis.asyncio as aioredis

from pagefleet.platform.protocol import decode_job, keys
from pagefleet.platform.protocol.resilience import Backoff, RedisOutages, supervise
from pagefleet.platform.protocol.webhooks import (
    WEBHOOK_SCHEDULE,
    WebhookTargetRefused,
    check_webhook_target,
    webhook_headers,
)
from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.jobs import job_view

log = logging.getLogger(__name__)
_ATTEMPTS_FIELD = "webhook_attempts"
_BATCH = 16
# Take the job if it is due, by moving its score to the end of the lease.
_LEASE = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def _permanent(status: int) -> bool:
    return 400 <= status < 500 and status not in (408, 429)


class WebhookDeliverer:
    def __init__(self, redis: aioredis.Redis, http: httpx.AsyncClient, settings: WorkerSettings,
                 outages: RedisOutages) -> None:
        self.redis = redis
        self.http = http
        self.settings = settings
        self.outages = outages
        self.backoff = Backoff(base_s=settings.webhook_backoff_s, cap_s=settings.webhook_backoff_cap_s)
        self._lease = redis.register_script(_LEASE)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due webhooks until `stop`; then wait for POSTs already under way."""
        await supervise(lambda: self._poll(stop), self.outages, "webhook delivery", stop)
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = time.time()
            due = await self.redis.zrangebyscore(WEBHOOK_SCHEDULE, "-inf", now, start=0, num=_BATCH)
            self.outages.recovered()
            for raw in due:
                job_id = raw.decode() if isinstance(raw, bytes) else raw
                lease_until = now + self.settings.webhook_timeout_s + 30
                if await self._lease(keys=[WEBHOOK_SCHEDULE], args=[job_id, now, lease_until]):
                    task = asyncio.create_task(self.deliver(job_id))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
            if len(due) < _BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.webhook_poll_s)

    async def deliver(self, job_id: str) -> None:
        """One attempt for a leased job; the schedule says whether there will be another."""
        key = keys.job_hash(job_id)
        raw = await self.redis.hget(key, keys.JOB_RECORD_FIELD)
        record = None if raw is None else decode_job(raw)
        if record is None or not record.webhook:
            await self.redis.zrem(WEBHOOK_SCHEDULE, job_id)
            return
        body = json.dumps(job_view(record), separators=(",", ":")).encode()
        try:
            await asyncio.to_thread(check_webhook_target, record.webhook,
                                    self.settings.webhook_allow_private)
            timestamp = int(time.time())
            response = await self.http.post(record.webhook, content=body, headers=webhook_headers(
                self.settings.webhook_secret, job_id, timestamp, body))
            if response.is_success or _permanent(response.status_code):
                if not response.is_success:
                    log.error("webhook of job %s refused with %d; not retrying", job_id,
                              response.status_code)
                await self.redis.zrem(WEBHOOK_SCHEDULE, job_id)
                return
            failure = f"answered {response.status_code}"
        except WebhookTargetRefused as exc:
            log.error("webhook of job %s not sent: %s", job_id, exc)
            await self.redis.zrem(WEBHOOK_SCHEDULE, job_id)
            return
        except httpx.HTTPError as exc:
            failure = repr(exc)
        await self._retry_later(job_id, record.finished_at or time.time(), failure)

    async def _retry_later(self, job_id: str, finished_at: float, failure: str) -> None:
        attempts = await self.redis.hincrby(keys.job_hash(job_id), _ATTEMPTS_FIELD, 1)
        next_at = time.time() + self.backoff.delay(attempts - 1)
        if next_at - finished_at > self.settings.webhook_window_s:
            log.error("giving up on the webhook of job %s after %d attempts: %s", job_id,
                      attempts, failure)
            await self.redis.zrem(WEBHOOK_SCHEDULE, job_id)
            return
        log.warning("webhook of job %s %s (attempt %d); next in %.0f s", job_id, failure,
                    attempts, next_at - time.time())
        await self.redis.zadd(WEBHOOK_SCHEDULE, {job_id: next_at}, xx=True)
