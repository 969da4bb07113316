"""Result delivery that scales with streams, not connections.

Every in-flight request of this gateway process registers its result streams (`pf:r:{id}`)
with one of a few readers. Each reader owns one Redis connection and loops on a single
`XREAD BLOCK` over all the streams it serves, each at the last id it has seen, and fans the
events out to the requests' in-process buffers. So 5,000 waiting requests cost a few
connections and a few buffers, and the command pool stays free for enqueues and cancels.

A blocking XREAD cannot learn about a stream registered after it was sent, so each reader
also reads its own wake stream (`keys.gateway_wake_stream`) at its last seen id: registering
a request appends one entry there when none is outstanding, and the read returns at once.
A buffer holding `buffer_events` events pauses its streams (left out of the next XREADs;
the events wait in Redis) until its request has read half of them: a slow client never
blocks the reader or grows memory without bound.

If Redis goes away, every request then waiting gets `ResultsUnavailable` (an SSE error
event or a 503) and the reader reconnects with backoff; `healthy` reports it to readiness.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.protocol import ErrorEvent, FinalEvent, ResultEvent, decode_event, keys

log = logging.getLogger(__name__)

_MAX_BLOCK_MS = 5_000
_MIN_BLOCK_MS = 1
_READ_COUNT = 64  # entries per stream per XREAD
_WAKE_TTL_S = 3_600
_BACKOFF_START_S = 0.05
_BACKOFF_CAP_S = 2.0


class DeadlineExceeded(Exception):
    """No terminal event arrived before the request's deadline."""


class ResultsUnavailable(Exception):
    """Redis went away while the request waited for its results."""


@dataclass(frozen=True, slots=True)
class SourcedEvent:
    """A result event and which of the request's sub-requests (prompts) it belongs to."""

    source: int
    event: ResultEvent


class EventBuffer:
    """One request's events in arrival order: its reader puts, its handler waits and takes.

    Not asyncio.Queue + asyncio.timeout: those cost a Timeout object, a timer scheduled and
    cancelled, and the queue's waiter bookkeeping on every wait, which for a request that
    keeps up is every token. Here a wait is one future; the deadline is one timer per request
    (`Subscription.batches`), which calls `wake`."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: collections.deque[SourcedEvent | ResultsUnavailable] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: SourcedEvent | ResultsUnavailable) -> None:
        self._items.append(item)
        self.wake()

    def get_nowait(self) -> SourcedEvent | ResultsUnavailable:
        return self._items.popleft()

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def wake(self) -> None:
        """End the current `wait`, if any."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until an item is put or `wake` is called; at once if items are waiting."""
        if self._items:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter


@dataclass(eq=False, slots=True)
class Subscription:
    """One request's view: its streams, the last id read of each, and its event buffer."""

    reader: _Reader
    sources: dict[str, int]  # result stream -> sub-request index
    last_ids: dict[str, str]  # streams still open -> last entry id read
    buffer_events: int
    queue: EventBuffer = field(default_factory=EventBuffer)
    paused: bool = False
    closed: bool = False

    async def batches(self, deadline: float) -> AsyncIterator[list[SourcedEvent]]:
        """Events until every sub-request ended, a batch at a time; `DeadlineExceeded` /
        `ResultsUnavailable` (after the events that came before it).

        A batch is what the buffer holds when the previous one has been handled: one event
        while the request keeps up, more when it falls behind (a slow client, a busy gateway),
        so the per-event cost of waiting and of sending shrinks exactly when it matters.
        """
        remaining_streams = len(self.sources)
        # One timer for the request's whole life wakes a wait that outlasts the deadline.
        timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.time()),
                                                      self.queue.wake)
        try:
            while remaining_streams:
                if time.time() >= deadline:
                    raise DeadlineExceeded
                if self.queue.empty():
                    await self.queue.wait()
                    if self.queue.empty():  # woken by the timer, not by an event
                        raise DeadlineExceeded
                batch, remaining_streams, item = self._take(remaining_streams)
                if batch:
                    yield batch
                if isinstance(item, ResultsUnavailable):
                    raise item
        finally:
            timer.cancel()

    def _take(self, remaining_streams: int) -> tuple[list[SourcedEvent], int,
                                                     SourcedEvent | ResultsUnavailable]:
        """What the buffer holds, up to the last event of the request or an outage (returned
        as the last item), and the streams still open after it."""
        item = self.queue.get_nowait()
        batch: list[SourcedEvent] = []
        while not isinstance(item, ResultsUnavailable):
            batch.append(item)
            if isinstance(item.event, FinalEvent | ErrorEvent):
                remaining_streams -= 1
            if not remaining_streams or self.queue.empty():
                break
            item = self.queue.get_nowait()
        if self.paused and self.queue.qsize() <= self.buffer_events // 2:
            self.paused = False
            self.reader.wake()
        return batch, remaining_streams, item

    def close(self) -> None:
        """Stop reading this request's streams (idempotent)."""
        if not self.closed:
            self.closed = True
            self.reader.remove(self)


class _Reader:
    """One connection, one XREAD loop over its share of the in-flight result streams."""

    def __init__(self, client: aioredis.Redis, commands: aioredis.Redis, name: str,
                 max_block_ms: int) -> None:
        self.client = client
        # This connection only runs XREAD for this reader: take Redis's reply as it is, a
        # flat [field, value] list per entry, instead of redis-py building a dict per entry
        # and a list per stream (13 % of the gateway's busy time while streaming tokens).
        client.set_response_callback("XREAD", _raw_reply)
        self.commands = commands
        self.wake_stream = keys.gateway_wake_stream(name)
        self.max_block_ms = max_block_ms
        self.streams: dict[str, Subscription] = {}
        self.num_subscriptions = 0
        self.healthy = False
        self._wake_last_id = "0-0"
        self._wake_pending = False
        self._wake_tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()

    def add(self, subscription: Subscription) -> None:
        for stream in subscription.sources:
            self.streams[stream] = subscription
        self.num_subscriptions += 1
        self.wake()

    def remove(self, subscription: Subscription) -> None:
        for stream in subscription.sources:
            if self.streams.get(stream) is subscription:
                del self.streams[stream]
        self.num_subscriptions -= 1

    def wake(self) -> None:
        """End the current blocking read soon (one wake entry outstanding at most)."""
        if self._wake_pending or self._closing.is_set():
            return
        self._wake_pending = True
        task = asyncio.create_task(self._send_wake())
        self._wake_tasks.add(task)
        task.add_done_callback(self._wake_tasks.discard)

    async def _send_wake(self) -> None:
        try:
            async with self.commands.pipeline(transaction=False) as pipe:
                pipe.xadd(self.wake_stream, {"w": 1}, maxlen=16, approximate=True)
                pipe.expire(self.wake_stream, _WAKE_TTL_S)
                await pipe.execute()
        except RedisError as exc:  # the read loop notices an outage on its own
            log.debug("could not wake a result reader: %s", exc)
            self._wake_pending = False

    async def run(self) -> None:
        backoff = _BACKOFF_START_S
        while not self._closing.is_set():
            try:
                if not self.healthy:  # a PING says "back" at once; a quiet XREAD takes seconds
                    await self.client.ping()
                    self.healthy = True
                    backoff = _BACKOFF_START_S
                await self._read_once()
            except (RedisError, OSError) as exc:
                if self._closing.is_set():
                    return
                if self.healthy:
                    log.warning("result reader lost Redis (%s); failing %d waiting requests",
                                exc, self.num_subscriptions)
                self.healthy = False
                self._fail_all()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), backoff)
                backoff = min(_BACKOFF_CAP_S, backoff * 2)

    async def _read_once(self) -> None:
        self._wake_pending = False
        request: dict[str, str] = {self.wake_stream: self._wake_last_id}
        for stream, subscription in self.streams.items():
            if not subscription.paused:
                request[stream] = subscription.last_ids[stream]
        reply = await self.client.xread(request, count=_READ_COUNT, block=self.max_block_ms)
        for stream_name, entries in _streams_of(reply):
            stream = stream_name.decode() if isinstance(stream_name, bytes) else stream_name
            if stream == self.wake_stream:
                self._wake_last_id = _text(entries[-1][0])
                continue
            self._deliver(stream, entries)

    def _deliver(self, stream: str, entries: Sequence[tuple[bytes, list[bytes]]]) -> None:
        subscription = self.streams.get(stream)
        if subscription is None:  # the request left while the read was in flight
            return
        source = subscription.sources[stream]
        for entry_id, fields in entries:
            subscription.last_ids[stream] = _text(entry_id)
            raw = _field(fields, _EVENT_FIELD)
            if raw is None:
                continue
            event = decode_event(raw)
            subscription.queue.put_nowait(SourcedEvent(source, event))
            if isinstance(event, FinalEvent | ErrorEvent):
                del self.streams[stream]
                del subscription.last_ids[stream]
                break
        if subscription.queue.qsize() >= subscription.buffer_events:
            subscription.paused = True

    def _fail_all(self) -> None:
        failed = {id(s): s for s in self.streams.values()}
        self.streams.clear()
        for subscription in failed.values():
            subscription.queue.put_nowait(ResultsUnavailable("the result stream is unavailable"))

    async def close(self) -> None:
        self._closing.set()
        for task in list(self._wake_tasks):
            task.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self.commands.delete(self.wake_stream)
        await self.client.aclose()


class ResultHub:
    """The gateway process's result readers; `subscribe` is what a request waits on."""

    def __init__(self, reader_clients: Sequence[aioredis.Redis], commands: aioredis.Redis,
                 buffer_events: int, socket_timeout_s: float | None) -> None:
        # A blocking XREAD must return before the socket timeout fires, or a quiet moment
        # would look like a dead Redis.
        max_block_ms = _MAX_BLOCK_MS if socket_timeout_s is None else max(
            _MIN_BLOCK_MS, min(_MAX_BLOCK_MS, int(socket_timeout_s * 1000 / 2)))
        hub_id = uuid.uuid4().hex[:12]
        self.readers = [_Reader(client, commands, f"{hub_id}-{i}", max_block_ms)
                        for i, client in enumerate(reader_clients)]
        self.buffer_events = buffer_events
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def connect(cls, make_client: Callable[[], aioredis.Redis], commands: aioredis.Redis,
                num_readers: int, buffer_events: int) -> ResultHub:
        clients = [make_client() for _ in range(num_readers)]
        timeout = clients[0].connection_pool.connection_kwargs.get("socket_timeout")
        return cls(clients, commands, buffer_events, timeout)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(r.run(), name=f"result-reader-{i}")
                       for i, r in enumerate(self.readers)]

    async def close(self) -> None:
        for reader in self.readers:
            await reader.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        """Requests waiting on results now."""
        return sum(reader.num_subscriptions for reader in self.readers)

    @property
    def healthy(self) -> bool:
        """Every reader's last XREAD succeeded."""
        return all(reader.healthy for reader in self.readers)

    def subscribe(self, request_ids: Sequence[str]) -> Subscription:
        """Start reading the results of `request_ids` (from their beginning)."""
        reader = min(self.readers, key=lambda r: r.num_subscriptions)
        sources = {keys.result_stream(rid): index for index, rid in enumerate(request_ids)}
        subscription = Subscription(reader=reader, sources=sources,
                                    last_ids=dict.fromkeys(sources, "0"),
                                    buffer_events=self.buffer_events)
        reader.add(subscription)
        return subscription


_EVENT_FIELD = keys.ENTRY_EVENT.encode()


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _streams_of(reply: Any) -> Iterable[tuple[bytes | str, list]]:
    """(stream, entries) pairs of a raw XREAD reply: a list of pairs in RESP2, a map in RESP3,
    None when the block timed out."""
    if not reply:
        return ()
    return reply.items() if isinstance(reply, dict) else reply


def _field(fields: list[bytes] | dict, name: bytes) -> bytes | None:
    """One field's value of a raw entry (a flat [field, value, ...] list)."""
    if isinstance(fields, dict):
        return fields.get(name)
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
