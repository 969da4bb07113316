"""merge_delta: the one rule by which a worker's flusher and the gateway fold deltas."""

from __future__ import annotations

from pagefleet.platform.protocol import DeltaEvent, ErrorEvent, FinalEvent, TokenLogprob, Usage
from pagefleet.platform.protocol.deltas import merge_delta


def delta(index: int, offset: int, ids: list[int], text: str, finish: str | None = None,
          logprobs: list[TokenLogprob] | None = None) -> DeltaEvent:
    return DeltaEvent(index=index, offset=offset, token_ids=ids, text=text, logprobs=logprobs,
                      finish_reason=finish)


def lp(token: str) -> TokenLogprob:
    return TokenLogprob(token_id=0, token=token, logprob=-1.0)


def merged(*deltas: DeltaEvent) -> list:
    events: list = []
    for d in deltas:
        merge_delta(events, d)
    return events


def test_contiguous_deltas_of_a_choice_fold_past_other_choices() -> None:
    events = merged(delta(0, 0, [1], "a"), delta(1, 0, [7], "x"), delta(0, 1, [2, 3], "bc", "stop"),
                    delta(1, 1, [8], "y"))
    assert events == [delta(0, 0, [1, 2, 3], "abc", "stop"), delta(1, 0, [7, 8], "xy")]


def test_logprobs_concatenate_and_absent_stays_absent() -> None:
    assert merged(delta(0, 0, [1], "a", logprobs=[lp("a")]), delta(0, 1, [2], "b", logprobs=[lp("b")])
                  )[0].logprobs == [lp("a"), lp("b")]
    assert merged(delta(0, 0, [1], "a"), delta(0, 1, [2], "b"))[0].logprobs is None


def test_a_gap_a_repeat_or_a_finished_choice_is_not_folded() -> None:
    assert len(merged(delta(0, 0, [1], "a"), delta(0, 2, [3], "c"))) == 2  # a gap
    assert len(merged(delta(0, 0, [1], "a"), delta(0, 0, [1], "a"))) == 2  # a repeat
    assert len(merged(delta(0, 0, [1], "a", "length"), delta(0, 1, [2], "b"))) == 2


def test_a_final_or_an_error_between_stops_folding() -> None:
    final = FinalEvent(finish_reasons=["stop"], usage=Usage(1, 1, 2))
    events = [delta(0, 0, [1], "a"), final]
    merge_delta(events, delta(0, 1, [2], "b"))
    assert len(events) == 3
    events = [delta(0, 0, [1], "a"), ErrorEvent(type="x", message="y")]
    merge_delta(events, delta(0, 1, [2], "b"))
    assert len(events) == 3


def test_the_queued_structs_are_not_mutated() -> None:
    first = delta(0, 0, [1], "a")
    events = [first]
    merge_delta(events, delta(0, 1, [2], "b"))
    assert first == delta(0, 0, [1], "a") and events[0] is not first
