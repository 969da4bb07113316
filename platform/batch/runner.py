"""One step of a batch: validate, feed lines into the model queue, collect results, finalize.

Recovery contract: every write that moves a line (queue it; record its result) is one MULTI
together with the counters and the in-flight set, so a step killed at any point leaves either
all or none of it, and the next step (the redelivered Celery task, or the one a starting
worker queues) carries on from Redis. Files are written under deterministic ids before the
record points at them, so finalizing twice writes the same files. A per-batch lease keeps two
steps of one batch from interleaving; a step that finds the lease taken does nothing.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec
import redis
from redis.exceptions import ResponseError, WatchError

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.lines import BadLine, BatchLine, output_line, parse_line
from pagefleet.platform.batch.records import BatchRecord, FileRecord, LineError
from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.batch.storage import FileStorage
from pagefleet.platform.gateway.completions.results import ResultAccumulator
from pagefleet.platform.protocol import (
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    decode_event,
    encode,
    keys,
)
from pagefleet.platform.protocol.backlog import queue_backlog_sync

log = logging.getLogger(__name__)

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_MAX_BLOCK_S = 1.0
_EXPIRED = {"code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."}


@dataclass(slots=True)
class _Tracked:
    """A queued line being collected in this step: its events so far, per request id."""

    line: BatchLine
    accumulator: ResultAccumulator
    last_ids: dict[str, str]
    done: set[str] = field(default_factory=set)
    error: ErrorEvent | None = None

    @property
    def finished(self) -> bool:
        return self.error is not None or len(self.done) == len(self.last_ids)


class BatchRunner:
    def __init__(self, client: redis.Redis, storage: FileStorage, settings: BatchSettings,
                 models: frozenset[str]) -> None:
        self.redis = client
        self.storage = storage
        self.settings = settings
        self.models = models
        self._tracked: dict[int, _Tracked] = {}

    # ---- the step ---------------------------------------------------------------------------

    def step(self, batch_id: str) -> bool:
        """Work on the batch for up to `step_s`; True when another step must follow."""
        token = uuid.uuid4().hex
        lease = rec.batch_lease(batch_id)
        lease_ms = int(self.settings.lease_s * 1000)
        if not self.redis.set(lease, token, nx=True, px=lease_ms):
            return False
        self._tracked = {}
        try:
            until = time.monotonic() + self.settings.step_s
            while True:
                record = self._load(batch_id)
                if record is None or record.status in rec.TERMINAL:
                    self.redis.srem(rec.ACTIVE_BATCHES, batch_id)
                    return False
                if record.final_status is not None:
                    self._finalize(record)
                    return False
                if record.status == "cancelling":
                    self._stop(record, "cancelled")
                elif record.status == "validating":
                    self._validate(record)
                elif time.time() >= record.expires_at:
                    self._stop(record, "expired")
                else:
                    remaining = until - time.monotonic()
                    if self._advance(record, max(0.0, min(_MAX_BLOCK_S, remaining))):
                        self._set_final(record.id, "completed")
                if time.monotonic() >= until:
                    return True
                self.redis.pexpire(lease, lease_ms)
        finally:
            self.redis.eval(_RELEASE, 1, lease, token)

    def _load(self, batch_id: str) -> BatchRecord | None:
        raw = self.redis.hget(rec.batch_key(batch_id), rec.RECORD)
        return None if raw is None else rec.decode_batch(raw)

    def _update(self, batch_id: str, change, extra=None) -> BatchRecord | None:
        """Apply `change(record) -> record | None` under WATCH; `extra(pipe)` joins the MULTI."""
        key = rec.batch_key(batch_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hget(key, rec.RECORD)
                    if raw is None:
                        return None
                    record = change(rec.decode_batch(raw))
                    if record is None:
                        return None
                    pipe.multi()
                    pipe.hset(key, rec.RECORD, rec.encode(record))
                    if extra is not None:
                        extra(pipe, record)
                    pipe.execute()
                    return record
                except WatchError:
                    continue

    # ---- validating -------------------------------------------------------------------------

    def _lines(self, file_id: str, offset: int = 0) -> Iterator[tuple[int, bytes]]:
        """(offset, raw line) of every line from `offset`; the caller counts line numbers."""
        with self.storage.open(file_id) as stream:
            stream.seek(offset)
            while raw := stream.readline():
                yield offset, raw
                offset += len(raw)

    def _validate(self, record: BatchRecord) -> None:
        """Read the whole file once: count the requests, note repeated custom_ids. The batch
        fails only when no line could run; otherwise bad lines go to the error file."""
        seen: set[str] = set()
        duplicates: list[int] = []
        errors: list[LineError] = []
        total = num_bad = 0
        try:
            for number, (_, raw) in enumerate(self._lines(record.input_file_id), start=1):
                if not raw.strip():
                    continue
                total += 1
                parsed = parse_line(raw, number, record, self.models)
                if isinstance(parsed, BatchLine) and parsed.custom_id in seen:
                    parsed = BadLine(number, parsed.custom_id, "duplicate_custom_id",
                                     f"custom_id {parsed.custom_id!r} repeats an earlier line's",
                                     "custom_id")
                    duplicates.append(number)
                if isinstance(parsed, BadLine):
                    num_bad += 1
                    if len(errors) < self.settings.max_listed_errors:
                        errors.append(LineError(code=parsed.code, message=parsed.message,
                                                line=number, param=parsed.param))
                else:
                    seen.add(parsed.custom_id)
        except FileNotFoundError:
            errors = [LineError(code="file_not_found", message="the input file no longer exists",
                                param="input_file_id")]
        now = int(time.time())
        if total == 0 and not errors:
            errors = [LineError(code="empty_file", message="the input file holds no requests")]
        if total == num_bad:
            def failed(r: BatchRecord) -> BatchRecord | None:
                if r.status != "validating":
                    return None
                return msgspec.structs.replace(r, status="failed", failed_at=now, errors=errors)

            self._update(record.id, failed, lambda pipe, r: pipe.srem(rec.ACTIVE_BATCHES, r.id))
            return

        def started(r: BatchRecord) -> BatchRecord | None:
            if r.status != "validating":
                return None
            return msgspec.structs.replace(r, status="in_progress", in_progress_at=now)

        def counters(pipe, r: BatchRecord) -> None:
            pipe.hset(rec.batch_key(r.id), mapping={rec.TOTAL: total, rec.NEXT_OFFSET: 0,
                                                    rec.NEXT_LINE: 0, rec.COMPLETED: 0,
                                                    rec.FAILED: 0})
            if duplicates:
                pipe.sadd(rec.batch_duplicates(r.id), *duplicates)

        self._update(record.id, started, counters)

    # ---- in progress ------------------------------------------------------------------------

    def _advance(self, record: BatchRecord, block_s: float) -> bool:
        """Feed up to the window, collect what finished; True when every line is done."""
        at_end = self._feed(record)
        if not at_end and self.redis.hlen(rec.batch_in_flight(record.id)) == 0:
            time.sleep(block_s)  # held back by a full model queue: poll it, do not spin
            return False
        self._collect(record, block_s)
        return at_end and self.redis.hlen(rec.batch_in_flight(record.id)) == 0

    def _feed(self, record: BatchRecord) -> bool:
        """Queue lines until `max_in_flight` are out or the next line's model has
        `max_backlog` undelivered batch entries (lines keep their order: a full model holds the
        lines after it back); True when the file is exhausted."""
        key = rec.batch_key(record.id)
        in_flight = rec.batch_in_flight(record.id)
        room = self.settings.max_in_flight - self.redis.hlen(in_flight)
        offset, number = (int(v) for v in self.redis.hmget(key, rec.NEXT_OFFSET, rec.NEXT_LINE))
        duplicates = {int(n) for n in self.redis.smembers(rec.batch_duplicates(record.id))}
        pipe = self.redis.pipeline(transaction=True)
        num_queued = num_bad = 0
        created: set[str] = set()
        backlogs: dict[str, int] = {}  # per model: undelivered batch entries, with ours added
        exhausted = True
        for line_offset, raw in self._lines(record.input_file_id, offset):
            if num_queued >= room:
                exhausted = False
                break
            parsed = parse_line(raw, number + 1, record, self.models) if raw.strip() else None
            if isinstance(parsed, BatchLine) and not self._has_room(parsed, backlogs):
                exhausted = False
                break
            number += 1
            offset = line_offset + len(raw)
            if parsed is None:
                continue
            if isinstance(parsed, BatchLine) and number in duplicates:
                parsed = BadLine(number, parsed.custom_id, "duplicate_custom_id",
                                 f"custom_id {parsed.custom_id!r} repeats an earlier line's",
                                 "custom_id")
            if isinstance(parsed, BadLine):
                error = {"code": parsed.code, "message": parsed.message, "param": parsed.param,
                         "line": number}
                pipe.rpush(rec.batch_errors(record.id),
                           output_line(record.id, number, parsed.custom_id, error=error))
                num_bad += 1
                continue
            for envelope in parsed.prepared.envelopes:
                stream = keys.request_stream(envelope.model, keys.PRIORITY_BATCH)
                if stream not in created:
                    self._ensure_group(stream)
                    created.add(stream)
                pipe.xadd(stream, {keys.ENTRY_REQUEST_ID: envelope.request_id,
                                   keys.ENTRY_ENVELOPE: encode(envelope)})
                backlogs[envelope.model] += 1
            pipe.hset(in_flight, number, line_offset)
            num_queued += 1
        pipe.hset(key, mapping={rec.NEXT_OFFSET: offset, rec.NEXT_LINE: number})
        if num_bad:
            pipe.hincrby(key, rec.FAILED, num_bad)
        pipe.execute()
        return exhausted

    def _has_room(self, line: BatchLine, backlogs: dict[str, int]) -> bool:
        """Whether `line` fits under its model's batch backlog bound (read once per feed; an
        empty queue always takes a line, so a bound below one line's prompts cannot stall)."""
        needed: dict[str, int] = {}
        for envelope in line.prepared.envelopes:
            needed[envelope.model] = needed.get(envelope.model, 0) + 1
        for model, count in needed.items():
            if model not in backlogs:
                backlogs[model] = queue_backlog_sync(self.redis, model, keys.PRIORITY_BATCH)
            if backlogs[model] > 0 and backlogs[model] + count > self.settings.max_backlog:
                return False
        return True

    def _ensure_group(self, stream: str) -> None:
        try:
            self.redis.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _track(self, record: BatchRecord) -> None:
        """Know every in-flight line (again, after a restart: events are re-read from 0)."""
        in_flight = {int(n): int(o) for n, o in
                     self.redis.hgetall(rec.batch_in_flight(record.id)).items()}
        for number in [n for n in self._tracked if n not in in_flight]:
            del self._tracked[number]
        for number, offset in in_flight.items():
            if number in self._tracked:
                continue
            _, raw = next(self._lines(record.input_file_id, offset))
            parsed = parse_line(raw, number, record, self.models)
            if isinstance(parsed, BadLine):  # cannot happen for a line that was queued
                raise RuntimeError(f"queued line {number} of {record.id} no longer parses")
            self._tracked[number] = _Tracked(parsed, ResultAccumulator(parsed.prepared),
                                             dict.fromkeys(parsed.prepared.request_ids, "0"))

    def _collect(self, record: BatchRecord, block_s: float) -> None:
        self._track(record)
        streams: dict[str, str] = {}
        sources: dict[str, tuple[int, int]] = {}
        for number, tracked in self._tracked.items():
            for source, rid in enumerate(tracked.line.prepared.request_ids):
                if rid not in tracked.done:
                    streams[keys.result_stream(rid)] = tracked.last_ids[rid]
                    sources[keys.result_stream(rid)] = (number, source)
        if not streams:
            return
        block_ms = int(block_s * 1000)
        reply = self.redis.xread(streams, block=block_ms if block_ms > 0 else None)
        for stream_name, entries in reply or []:
            stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
            number, source = sources[stream]
            tracked = self._tracked[number]
            rid = tracked.line.prepared.request_ids[source]
            for entry_id, fields in entries:
                tracked.last_ids[rid] = entry_id
                event = decode_event(fields[keys.ENTRY_EVENT.encode()])
                if isinstance(event, DeltaEvent):
                    tracked.accumulator.add_delta(source, event)
                elif isinstance(event, FinalEvent):
                    tracked.accumulator.add_final(source, event)
                    tracked.done.add(rid)
                    break
                else:
                    tracked.error = event
                    break
        finished = [n for n, t in self._tracked.items() if t.finished]
        if finished:
            self._record_results(record, finished)

    def _record_results(self, record: BatchRecord, numbers: list[int]) -> None:
        key = rec.batch_key(record.id)
        pipe = self.redis.pipeline(transaction=True)
        for number in numbers:
            tracked = self._tracked.pop(number)
            line = tracked.line
            if tracked.error is None:
                body = msgspec.to_builtins(tracked.accumulator.response())
                pipe.rpush(rec.batch_output(record.id),
                           output_line(record.id, number, line.custom_id, status_code=200, body=body))
                pipe.hincrby(key, rec.COMPLETED, 1)
            else:
                error = tracked.error
                body = {"error": {"message": error.message, "type": error.type,
                                  "param": error.param, "code": error.code}}
                pipe.rpush(rec.batch_errors(record.id),
                           output_line(record.id, number, line.custom_id, status_code=error.status,
                                       body=body))
                pipe.hincrby(key, rec.FAILED, 1)
            pipe.hdel(rec.batch_in_flight(record.id), number)
            pipe.delete(*(keys.result_stream(rid) for rid in line.prepared.request_ids))
        pipe.execute()

    # ---- stopping and finalizing ------------------------------------------------------------

    def _stop(self, record: BatchRecord, final: str) -> None:
        """Cancel what is in flight (keeping what already finished) and move to finalizing."""
        self._track(record)
        self._collect(record, 0.0)
        pipe = self.redis.pipeline(transaction=True)
        key = rec.batch_key(record.id)
        for number, tracked in self._tracked.items():
            prepared = tracked.line.prepared
            for rid in prepared.request_ids:
                pipe.set(keys.cancel_flag(rid), 1, px=3_600_000)
                pipe.publish(keys.cancel_channel(prepared.model), rid)
            if final == "expired":
                pipe.rpush(rec.batch_errors(record.id),
                           output_line(record.id, number, tracked.line.custom_id, error=_EXPIRED))
                pipe.hincrby(key, rec.FAILED, 1)
            pipe.hdel(rec.batch_in_flight(record.id), number)
        pipe.execute()
        self._tracked = {}
        self._set_final(record.id, final)

    def _set_final(self, batch_id: str, final: str) -> None:
        now = int(time.time())

        def change(r: BatchRecord) -> BatchRecord | None:
            if r.status in rec.TERMINAL or r.final_status is not None:
                return None
            if final == "cancelled":
                return msgspec.structs.replace(r, final_status="cancelled")
            if r.status == "cancelling":  # a cancel arrived first: it wins
                return msgspec.structs.replace(r, final_status="cancelled")
            return msgspec.structs.replace(r, status="finalizing", finalizing_at=now,
                                           final_status=final)

        self._update(batch_id, change)

    def _finalize(self, record: BatchRecord) -> None:
        now = int(time.time())
        owner = record.owner
        files: list[FileRecord] = []
        outputs = ((rec.output_file_id(record.id), rec.batch_output(record.id), "output"),
                   (rec.error_file_id(record.id), rec.batch_errors(record.id), "errors"))
        num_never_queued = [0]
        for file_id, list_key, kind in outputs:
            chunks = self._list_chunks(list_key)
            if kind == "errors" and record.final_status == "expired":
                chunks = _chain(chunks, self._never_queued(record, num_never_queued))
            size = self.storage.write(file_id, chunks, max_bytes=1 << 62)
            if size:
                files.append(FileRecord(id=file_id, owner=owner, bytes=size, created_at=now,
                                        filename=f"{record.id}_{kind}.jsonl",
                                        purpose="batch_output",
                                        expires_at=now + math.ceil(self.settings.file_retention_s)))
            else:
                self.storage.delete(file_id)
        ids = {f.id for f in files}
        final = record.final_status or "completed"

        def done(r: BatchRecord) -> BatchRecord | None:
            if r.status in rec.TERMINAL:
                return None
            stamp = {"completed": "completed_at", "expired": "expired_at",
                     "cancelled": "cancelled_at"}[final]
            return msgspec.structs.replace(
                r, status=final, **{stamp: now},
                output_file_id=rec.output_file_id(r.id) if rec.output_file_id(r.id) in ids else None,
                error_file_id=rec.error_file_id(r.id) if rec.error_file_id(r.id) in ids else None)

        def publish(pipe, r: BatchRecord) -> None:
            for file in files:
                rec.index_file(pipe, file)
            pipe.delete(rec.batch_output(r.id), rec.batch_errors(r.id),
                        rec.batch_in_flight(r.id), rec.batch_duplicates(r.id))
            pipe.srem(rec.ACTIVE_BATCHES, r.id)
            if num_never_queued[0]:
                pipe.hincrby(rec.batch_key(r.id), rec.FAILED, num_never_queued[0])

        self._update(record.id, done, publish)

    def _list_chunks(self, list_key: str, size: int = 1000) -> Iterator[bytes]:
        start = 0
        while items := self.redis.lrange(list_key, start, start + size - 1):
            yield b"".join(item + b"\n" for item in items)
            start += size

    def _never_queued(self, record: BatchRecord, count: list[int]) -> Iterator[bytes]:
        """Error lines for the requests an expired batch never reached (counted in `count`)."""
        offset, number = (int(v or 0) for v in self.redis.hmget(
            rec.batch_key(record.id), rec.NEXT_OFFSET, rec.NEXT_LINE))
        for _, raw in self._lines(record.input_file_id, offset):
            number += 1
            if raw.strip():
                parsed = parse_line(raw, number, record, self.models)
                count[0] += 1
                yield output_line(record.id, number, parsed.custom_id, error=_EXPIRED) + b"\n"


def _chain(*iterables: Iterator[bytes]) -> Iterator[bytes]:
    for iterable in iterables:
        yield from iterable
