"""Scheduler decisions on small, hand-made situations (no model)."""

from __future__ import annotations

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.kv_cache_manager import KVCacheManager
from pagefleet.workers.engine.scheduler import Scheduler, SchedulerConfig
from pagefleet.workers.engine.sequence import Sequence, SequenceStatus

BLOCK_SIZE = 4


def _scheduler(num_blocks: int = 64, max_num_seqs: int = 8, budget: int = 64,
               admission_batch: int = 1) -> Scheduler:
    kv = KVCacheManager(num_blocks, BLOCK_SIZE, enable_prefix_caching=False)
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget,
                             block_size=BLOCK_SIZE, admission_batch=admission_batch)
    return Scheduler(config, kv)


def _seq(name: str, num_prompt: int) -> Sequence:
    return Sequence(name, 0, list(range(1, num_prompt + 1)), SamplingParams(), 32)


def _run_step(scheduler: Scheduler) -> list[tuple[str, int]]:
    """Schedule, then pretend the model ran: every sequence that reached its end gets a token."""
    output = scheduler.schedule()
    sampled = [item.seq for item in output.scheduled if item.needs_sample]
    scheduler.update(output)
    for seq in sampled:
        seq.output_token_ids.append(7)
    return [(item.seq.request_id, item.num_new_tokens) for item in output.scheduled]


def test_decodes_first_then_chunked_prefill_within_the_budget():
    scheduler = _scheduler(budget=6)
    scheduler.add([_seq("a", 3)])
    assert _run_step(scheduler) == [("a", 3)]
    scheduler.add([_seq("b", 10)])
    assert _run_step(scheduler) == [("a", 1), ("b", 5)]  # a's decode first, b's first chunk
    assert _run_step(scheduler) == [("a", 1), ("b", 5)]  # b's last chunk reaches its end
    assert _run_step(scheduler) == [("a", 1), ("b", 1)]


def test_newest_running_sequence_is_preempted_and_requeued_at_the_head():
    scheduler = _scheduler(num_blocks=3, budget=64)
    old, new = _seq("old", 4), _seq("new", 4)
    scheduler.add([old])
    scheduler.add([new])
    _run_step(scheduler)  # both prefill: one full block each
    waiting = _seq("later", 2)
    scheduler.add([waiting])
    steps = _run_step(scheduler)  # both need a second block; only one is free
    assert steps == [("old", 1)]
    assert new.status is SequenceStatus.WAITING and new.num_computed_tokens == 0
    assert list(scheduler.waiting)[:2] == [new, waiting]
    assert scheduler.num_preemptions == 1


def test_admission_waits_for_a_group_while_others_decode():
    scheduler = _scheduler(max_num_seqs=8, admission_batch=4)
    running = [_seq(f"r{i}", 2) for i in range(8)]
    for seq in running:
        scheduler.add([seq])
    _run_step(scheduler)
    for i in range(5):
        scheduler.add([_seq(f"w{i}", 2)])
    for seq in running[:3]:
        scheduler.finish(seq, "stop")  # three slots free: fewer than the group of four
    assert all(name.startswith("r") for name, _ in _run_step(scheduler))
    scheduler.finish(running[3], "stop")  # four free: the group is admitted together
    admitted = [name for name, _ in _run_step(scheduler) if name.startswith("w")]
    assert admitted == ["w0", "w1", "w2", "w3"]


def test_a_small_queue_is_admitted_at_once():
    scheduler = _scheduler(max_num_seqs=8, admission_batch=4)
    scheduler.add([_seq("r", 2)])
    _run_step(scheduler)
    scheduler.add([_seq("w", 2)])  # one waiting, seven slots free
    assert [name for name, _ in _run_step(scheduler)] == ["r", "w"]


def test_abort_frees_blocks_of_running_and_waiting_sequences():
    scheduler = _scheduler()
    scheduler.add([_seq("a", 9)])
    _run_step(scheduler)
    assert scheduler.kv_cache.pool.num_free_blocks < 64
    aborted = scheduler.abort("a")
    assert [seq.finish_reason for seq in aborted] == ["abort"]
    assert scheduler.kv_cache.pool.num_free_blocks == 64
    assert not scheduler.running and not scheduler.waiting


def test_scheduled_items_carry_block_ids_that_cover_their_tokens():
    scheduler = _scheduler(budget=6)
    scheduler.add([_seq("a", 3)])
    _run_step(scheduler)
    scheduler.add([_seq("b", 10)])
    output = scheduler.schedule()
    for item in output.scheduled:
        seq = item.seq
        assert item.block_ids.tolist() == scheduler.kv_cache.block_ids(seq.seq_id).tolist() != []
        assert len(item.block_ids) * BLOCK_SIZE >= seq.num_computed_tokens + item.num_new_tokens
    assert [item.needs_sample for item in output.scheduled] == [True, False]  # b is mid-prefill
