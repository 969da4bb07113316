"""The model's request queues: group set-up, admission-limited reads, waiting, claiming, acking.

Reads never block while they could over-deliver: `read_available` asks the priority streams
in turn (0 before 1 before 2) without blocking for at most the number of entries the worker
can admit, and returns the first stream's entries it finds. When all are empty, `wait_for_new` blocks on a plain XREAD from the group's
last-delivered ids, which consumes nothing, so a burst can never push more entries onto this
worker than it asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from pagefleet.platform.protocol import RequestEnvelope, decode_envelope, keys

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PulledEntry:
    """One request entry delivered to this worker; `envelope` is None if it cannot be decoded.
    `flagged`: whether its cancel flag was set when it was read (None: not read with it)."""

    stream: str
    entry_id: str
    request_id: str
    envelope: RequestEnvelope | None
    error: str | None = None
    flagged: bool | None = None


# XREADGROUP and the cancel flags of what it delivered, in one round trip: a new request
# reaches the engine a round trip sooner than with a separate EXISTS after the read. Returns
# [entry id, [field, value, ...], flag set (0/1)] per entry. The flags are keys the script does
# not declare: fine on one Redis, as everything here assumes (no cluster).
_PULL_SCRIPT = """
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
if not reply then return {} end
local pulled = {}
for i, entry in ipairs(reply[1][2]) do
  local fields, flagged = entry[2], 0
  for j = 1, #fields, 2 do
    if fields[j] == ARGV[4] then
      flagged = redis.call('EXISTS', ARGV[5] .. fields[j + 1])
      break
    end
  end
  pulled[i] = {entry[1], fields, flagged}
end
return pulled
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _pairs(flat: list) -> dict:
    """[field, value, field, value, ...] -> {field: value}."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def parse_entry(stream: str, entry_id: bytes | str, fields: dict | None,
                flagged: bool | None = None) -> PulledEntry:
    """Decode one stream entry; a broken one still carries its ids so it can be answered."""
    fields = fields or {}
    raw_id = fields.get(keys.ENTRY_REQUEST_ID.encode()) or fields.get(keys.ENTRY_REQUEST_ID)
    request_id = _text(raw_id) if raw_id else ""
    raw_env = fields.get(keys.ENTRY_ENVELOPE.encode()) or fields.get(keys.ENTRY_ENVELOPE)
    if raw_env is None:
        return PulledEntry(stream, _text(entry_id), request_id, None, "the entry has no envelope",
                           flagged)
    try:
        envelope = decode_envelope(raw_env)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
        return PulledEntry(stream, _text(entry_id), request_id, None, f"invalid envelope: {exc}",
                           flagged)
    return PulledEntry(stream, _text(entry_id), request_id or envelope.request_id, envelope,
                       flagged=flagged)


class RequestQueues:
    """The consumer-group view of one model's priority streams, as one consumer."""

    def __init__(self, redis: aioredis.Redis, model: str, consumer: str) -> None:
        self.redis = redis
        self.consumer = consumer
        self.streams = [keys.request_stream(model, p) for p in keys.PRIORITIES]
        self._pull = redis.register_script(_PULL_SCRIPT)

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_available(self, max_entries: int, max_batch: int | None = None) -> list[PulledEntry]:
        """Up to `max_entries` undelivered entries of the most urgent priority stream that has
        any, without blocking (at most `max_batch` of them if that is the batch stream, 2).

        One stream per call: the caller starts what it got and calls again, so an interactive
        request reaches the engine after one round trip instead of waiting for the reads of the
        less urgent streams (two more round trips on every first token)."""
        for priority, stream in zip(keys.PRIORITIES, self.streams, strict=True):
            count = max_entries
            if priority == keys.PRIORITY_BATCH and max_batch is not None:
                count = min(count, max_batch)
            if count <= 0:
                break
            pulled = [parse_entry(stream, entry_id, _pairs(fields), bool(flagged))
                      for entry_id, fields, flagged in await self._pull_with_flags(stream, count)]
            if pulled:
                return pulled
        return []

    async def _pull_with_flags(self, stream: str, count: int) -> list:
        try:
            return await self._pull(keys=[stream], args=[
                keys.CONSUMER_GROUP, self.consumer, count, keys.ENTRY_REQUEST_ID,
                keys.CANCEL_FLAG_PREFIX])
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_groups()  # the stream was deleted (e.g. FLUSHDB); start over
            return []

    async def wait_for_new(self, timeout_ms: int, priorities: tuple[int, ...] = keys.PRIORITIES) -> None:
        """Return when an entry may have arrived after the group's last delivery on one of the
        `priorities`' streams, or on timeout."""
        streams = [self.streams[p] for p in priorities]
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            replies = await pipe.execute(raise_on_error=False)
        last_ids: dict[str, str] = {}
        for stream, groups in zip(streams, replies, strict=True):
            if isinstance(groups, Exception):
                await self.ensure_groups()
                return
            group = next((g for g in groups if _text(g["name"]) == keys.CONSUMER_GROUP), None)
            if group is None:
                await self.ensure_groups()
                return
            last_ids[stream] = _text(group["last-delivered-id"])
        await self.redis.xread(last_ids, count=1, block=timeout_ms)

    async def ack(self, entry: PulledEntry) -> None:
        """Acknowledge and delete: the result stream, not the queue, is the durable record."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(entry.stream, keys.CONSUMER_GROUP, entry.entry_id)
            pipe.xdel(entry.stream, entry.entry_id)
            await pipe.execute()

    async def pending_by_consumer(self, stream: str) -> dict[str, int]:
        """Consumer name -> number of entries it holds unacknowledged on `stream`."""
        try:
            consumers = await self.redis.xinfo_consumers(stream, keys.CONSUMER_GROUP)
        except ResponseError:
            return {}
        return {_text(c["name"]): int(c["pending"]) for c in consumers}

    async def claim(self, stream: str, owner: str, count: int, min_idle_ms: int) -> list[PulledEntry]:
        """Move up to `count` of `owner`'s pending entries to this consumer.

        XCLAIM with a minimum idle time makes concurrent claimers safe: the first claim resets
        the idle time, so a second worker's XCLAIM of the same entry returns nothing.
        """
        pending = await self.redis.xpending_range(
            stream, keys.CONSUMER_GROUP, min="-", max="+", count=count, consumername=owner,
            idle=min_idle_ms)
        if not pending:
            return []
        ids = [p["message_id"] for p in pending]
        claimed = await self.redis.xclaim(
            stream, keys.CONSUMER_GROUP, self.consumer, min_idle_time=min_idle_ms, message_ids=ids)
        entries = []
        for entry_id, fields in claimed:
            if fields is None:  # deleted under us: nothing to run, just settle it
                await self.redis.xack(stream, keys.CONSUMER_GROUP, entry_id)
                continue
            entries.append(parse_entry(stream, entry_id, fields))
        return entries

    async def forget_consumer(self, stream: str, consumer: str) -> None:
        await self.redis.xgroup_delconsumer(stream, keys.CONSUMER_GROUP, consumer)
