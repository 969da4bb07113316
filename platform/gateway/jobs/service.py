"""Async jobs: a record in Redis plus one request on the job priority of its model's queue.

The worker moves the record to running / succeeded (with the OpenAI response object) /
failed and POSTs the webhook; the gateway creates, reads, lists and cancels. Records and the
per-owner index expire after the retention time. Another owner's job reads as 404, so ids
cannot be probed.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
from redis.exceptions import WatchError

from pagefleet.platform.gateway.broker import Broker
from pagefleet.platform.gateway.completions.params import (
    PreparedRequest,
    prepare_chat,
    prepare_completion,
)
from pagefleet.platform.gateway.completions.schemas import ChatCompletionRequest, CompletionRequest
from pagefleet.platform.gateway.completions.service import CompletionService
from pagefleet.platform.gateway.errors import OpenAIError, bad_request, model_not_found
from pagefleet.platform.gateway.jobs.schemas import JobCreate
from pagefleet.platform.protocol import JobRecord, decode_job, encode, keys
from pagefleet.platform.protocol.messages import ACTIVE_JOB_STATUSES
from pagefleet.platform.protocol.webhooks import WebhookTargetRefused, check_webhook_target


def job_not_found(job_id: str) -> OpenAIError:
    return OpenAIError(404, f"No job with id `{job_id}`.", param="job_id", code="job_not_found")


def job_request_id(record: JobRecord) -> str:
    """The id of the job's one request, as `prepare_*` names it."""
    return record.id if record.endpoint == "/v1/chat/completions" else f"{record.id}-0"


class JobService:
    """`webhook_allow_private` as in the workers: a webhook whose host resolves to a private,
    loopback or link-local address is refused at creation (400) unless allowed, so a shared
    gateway cannot be made to POST into its own network. The workers check again when they
    deliver (DNS may have changed since)."""

    def __init__(self, broker: Broker, completions: CompletionService, retention_s: float,
                 webhook_allow_private: bool = False) -> None:
        self.broker = broker
        self.completions = completions
        self._retention_ms = int(retention_s * 1000)
        self._retention_s = retention_s
        self._webhook_allow_private = webhook_allow_private

    async def _check_webhook(self, url: str) -> None:
        try:  # resolving the host blocks: off the event loop
            await asyncio.to_thread(check_webhook_target, url, self._webhook_allow_private)
        except WebhookTargetRefused as exc:
            raise bad_request(str(exc), param="webhook") from None

    def _prepare(self, create: JobCreate, job_id: str, owner: str) -> PreparedRequest:
        is_chat = create.endpoint == "/v1/chat/completions"
        try:
            body = msgspec.convert(create.body, ChatCompletionRequest if is_chat else CompletionRequest)
        except msgspec.ValidationError as exc:
            raise bad_request(f"invalid job body: {exc}", param="body") from None
        if body.model not in self.completions.models:
            raise model_not_found(body.model)
        if body.stream:
            raise bad_request("jobs cannot stream; poll GET /v1/jobs/{id}", param="body.stream")
        context = self.completions.context("job", owner, job_id=job_id, deadline=False)
        prepared = (prepare_chat(body, context, self.completions.tool_parser(body.model)) if is_chat
                    else prepare_completion(body, context))
        if len(prepared.envelopes) != 1:
            raise bad_request("a job takes one prompt; submit one job per prompt", param="body.prompt")
        return prepared

    async def submit(self, create: JobCreate, owner: str) -> JobRecord:
        job_id = f"job-{uuid.uuid4().hex}"
        prepared = self._prepare(create, job_id, owner)
        if create.webhook is not None:
            await self._check_webhook(create.webhook)
        record = JobRecord(id=job_id, owner=owner, endpoint=create.endpoint, body=create.body,
                           created_at=time.time(), webhook=create.webhook)
        pipe = self.broker.redis.pipeline(transaction=True)
        pipe.hset(keys.job_hash(job_id), keys.JOB_RECORD_FIELD, encode(record))
        pipe.pexpire(keys.job_hash(job_id), self._retention_ms)
        pipe.zadd(keys.owner_jobs(owner), {job_id: record.created_at})
        pipe.pexpire(keys.owner_jobs(owner), self._retention_ms)
        await pipe.execute()
        try:
            await self.completions.admit(prepared, keys.PRIORITY_JOB)
        except OpenAIError:
            await self.broker.redis.delete(keys.job_hash(job_id))
            await self.broker.redis.zrem(keys.owner_jobs(owner), job_id)
            raise
        return record

    async def get(self, job_id: str, owner: str) -> JobRecord:
        raw = await self.broker.redis.hget(keys.job_hash(job_id), keys.JOB_RECORD_FIELD)
        if raw is None:
            raise job_not_found(job_id)
        record = decode_job(raw)
        if record.owner != owner:
            raise job_not_found(job_id)
        return record

    async def cancel(self, job_id: str, owner: str) -> JobRecord:
        """Mark an active job cancelled (atomically against the worker's writes) and tell the
        worker; a finished job is returned unchanged."""
        key = keys.job_hash(job_id)
        async with self.broker.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    record = await self.get(job_id, owner)
                    if record.status not in ACTIVE_JOB_STATUSES:
                        return record
                    record = msgspec.structs.replace(record, status="cancelled", finished_at=time.time())
                    pipe.multi()
                    pipe.hset(key, keys.JOB_RECORD_FIELD, encode(record))
                    pipe.pexpire(key, self._retention_ms)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        await self.broker.cancel(record.body["model"], [job_request_id(record)])
        return record

    async def list(self, owner: str, limit: int) -> list[JobRecord]:
        """The owner's jobs, newest first; ids whose record expired are dropped from the index."""
        index = keys.owner_jobs(owner)
        redis = self.broker.redis
        await redis.zremrangebyscore(index, "-inf", time.time() - self._retention_s)
        job_ids = await redis.zrevrange(index, 0, limit - 1)
        if not job_ids:
            return []
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(keys.job_hash(job_id.decode()), keys.JOB_RECORD_FIELD)
        raws = await pipe.execute()
        expired = [job_id for job_id, raw in zip(job_ids, raws, strict=True) if raw is None]
        if expired:
            await redis.zrem(index, *expired)
        records = [decode_job(raw) for raw in raws if raw is not None]
        return [r for r in records if r.owner == owner]
