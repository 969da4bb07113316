from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from pagefleet.platform.gateway.delivery import (
    DeadlineExceeded,
    ResultHub,
    ResultsUnavailable,
    SourcedEvent,
    Subscription,
)
from pagefleet.platform.protocol import DeltaEvent, FinalEvent, Usage


@pytest.mark.parametrize(("url", "socket_timeout", "max_block_ms"), [
    ("redis://127.0.0.1:1/0", 30.0, 5_000),
    ("redis://127.0.0.1:1/0", 5.0, 2_500),  # redis-py 8's default: blocking 5 s would time out
    ("redis://127.0.0.1:1/0?socket_timeout=2", 30.0, 1_000),  # the URL wins
    ("redis://127.0.0.1:1/0", None, 5_000),
])
def test_blocking_reads_stay_under_the_socket_timeout(url: str, socket_timeout: float | None,
                                                     max_block_ms: int) -> None:
    def client() -> aioredis.Redis:
        return aioredis.Redis.from_url(url, socket_timeout=socket_timeout)  # never connects

    hub = ResultHub.connect(client, client(), num_readers=2, buffer_events=8)
    assert [reader.max_block_ms for reader in hub.readers] == [max_block_ms, max_block_ms]


class _Reader:
    """Stands in for the reader a subscription wakes when its buffer drains."""

    def __init__(self) -> None:
        self.num_wakes = 0

    def wake(self) -> None:
        self.num_wakes += 1


def _subscription(num_sources: int = 2, buffer_events: int = 8) -> Subscription:
    sources = {f"pf:r:{k}": k for k in range(num_sources)}
    return Subscription(reader=_Reader(), sources=sources, last_ids=dict.fromkeys(sources, "0"),
                        buffer_events=buffer_events)


def _delta(offset: int) -> DeltaEvent:
    return DeltaEvent(index=0, offset=offset, token_ids=[offset], text="t")


_FINAL = FinalEvent(finish_reasons=["stop"], usage=Usage(1, 1, 2))


def _batches(subscription: Subscription, fill: list, deadline: float | None = None) -> list:
    """Queue `fill` (items, or None: the batch before is taken first), then take every batch;
    an exception ends the list."""
    async def scenario() -> list:
        taken: list = []
        batches = subscription.batches(deadline or time.time() + 30)
        pending = list(fill)
        try:
            while True:
                while pending and pending[0] is not None:
                    subscription.queue.put_nowait(pending.pop(0))
                if pending:
                    pending.pop(0)
                taken.append([(s.source, s.event) for s in await anext(batches)])
        except StopAsyncIteration:
            return taken
        except Exception as exc:
            return [*taken, exc]

    return asyncio.run(scenario())


def test_a_request_that_keeps_up_takes_one_event_at_a_time() -> None:
    fill = [SourcedEvent(0, _delta(0)), None, SourcedEvent(1, _delta(0)), None,
            SourcedEvent(0, _FINAL), None, SourcedEvent(1, _FINAL)]
    assert _batches(_subscription(), fill) == [[(0, _delta(0))], [(1, _delta(0))], [(0, _FINAL)],
                                               [(1, _FINAL)]]


def test_what_is_queued_is_taken_at_once_until_every_source_ended() -> None:
    subscription = _subscription()
    fill = [SourcedEvent(0, _delta(0)), SourcedEvent(1, _delta(0)), SourcedEvent(0, _delta(1)),
            SourcedEvent(0, _FINAL), SourcedEvent(1, _FINAL),
            SourcedEvent(1, _delta(5))]  # after both finals: not this request's any more
    assert _batches(subscription, fill) == [[(0, _delta(0)), (1, _delta(0)), (0, _delta(1)),
                                             (0, _FINAL), (1, _FINAL)]]
    assert subscription.queue.qsize() == 1


def test_an_outage_comes_after_the_events_queued_before_it() -> None:
    outage = ResultsUnavailable("gone")
    taken = _batches(_subscription(), [SourcedEvent(0, _delta(0)), SourcedEvent(0, _delta(1)), outage])
    assert taken == [[(0, _delta(0)), (0, _delta(1))], outage]
    assert _batches(_subscription(), [outage]) == [outage]


def test_a_passed_deadline_ends_even_a_full_buffer() -> None:
    taken = _batches(_subscription(), [SourcedEvent(0, _delta(0))], deadline=time.time() - 1)
    assert len(taken) == 1 and isinstance(taken[0], DeadlineExceeded)


def test_a_deadline_that_passes_while_waiting_ends_the_wait() -> None:
    """Nothing arrives: the request's one timer wakes the wait at its deadline, events taken
    before it still count."""
    started = time.time()
    taken = _batches(_subscription(), [SourcedEvent(0, _delta(0)), None],
                     deadline=started + 0.2)
    assert taken[0] == [(0, _delta(0))] and isinstance(taken[1], DeadlineExceeded)
    assert time.time() - started >= 0.19


def test_an_event_put_while_waiting_ends_the_wait() -> None:
    async def scenario() -> list:
        subscription = _subscription(num_sources=1)
        batches = subscription.batches(time.time() + 30)
        taking = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0)  # the handler now waits on an empty buffer
        assert not taking.done()
        subscription.queue.put_nowait(SourcedEvent(0, _FINAL))
        taken = [(s.source, s.event) for s in await taking]
        return [taken, await anext(batches, "ended")]

    assert asyncio.run(scenario()) == [[(0, _FINAL)], "ended"]


def test_taking_a_batch_resumes_a_paused_subscription() -> None:
    subscription = _subscription(num_sources=1, buffer_events=4)
    subscription.paused = True
    fill = [SourcedEvent(0, _delta(k)) for k in range(5)]
    assert len(_batches(subscription, [*fill, None, SourcedEvent(0, _FINAL)])) == 2
    assert not subscription.paused and subscription.reader.num_wakes == 1
