"""Continuous batching: which sequences run this step, and how many tokens each computes.

Every step fills a token budget: running sequences first (one token for a decode, the next
chunk for an unfinished prefill), then waiting sequences in arrival order while blocks and
sequence slots allow. When a running sequence cannot get a block, the newest running sequence
is preempted: its blocks are freed and it goes back to the head of the queue, either to be
recomputed or, when a swap space is configured and the cost model says moving its KV is
cheaper than recomputing it, with its blocks swapped out to host memory and back in on
readmission (the step's output lists the block copies; the runner makes them before the
step's forward pass).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pagefleet.workers.engine.kv_cache_manager import NO_HIT, BlockCopy, KVCacheManager
from pagefleet.workers.engine.preemption import PreemptionCost
from pagefleet.workers.engine.sequence import Sequence, SequenceStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """`admission_batch`: while sequences are decoding, wait until this many new ones can be
    admitted together (or all that wait, if fewer). Steps that mix prefills into decodes run
    eagerly, decode-only steps replay CUDA graphs; admitting in groups keeps most steps on
    graphs at the cost of a slightly fuller queue."""

    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    admission_batch: int = 1

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be at least 1")


@dataclass(slots=True)
class ScheduledSeq:
    """One sequence's share of a step: everything the runner needs, no side lookups.

    `block_ids` is the KV manager's view of the sequence's block ids (read, never modify): it
    covers this step's tokens. `needs_sample`: this step reaches the sequence's last
    token, so its logits are sampled (decided when scheduled, before the step moves
    `num_computed_tokens`)."""

    seq: Sequence
    num_new_tokens: int
    block_ids: np.ndarray  # int32
    needs_sample: bool = field(init=False)

    def __post_init__(self) -> None:
        self.needs_sample = (
            self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens
        )


@dataclass(slots=True)
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    num_preempted: int = 0
    swap_out: list[BlockCopy] = field(default_factory=list)  # copied before the step runs
    swap_in: list[BlockCopy] = field(default_factory=list)  # copied after swap_out

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager,
                 preemption_cost: PreemptionCost | None = None) -> None:
        self.config = config
        self.kv_cache = kv_cache
        self.preemption_cost = preemption_cost  # None: always recompute
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # Choices 1..n-1 of a request wait here until choice 0 has computed the prompt.
        self.pending_forks: dict[str, list[Sequence]] = {}
        self.num_preemptions = 0
        self.num_swapped_out = 0

    def add(self, seqs: list[Sequence]) -> None:
        first, *siblings = seqs
        self.waiting.append(first)
        if siblings:
            self.pending_forks[first.request_id] = siblings

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.num_output_tokens >= seq.max_tokens:
                i += 1  # its last token is still in flight (asynchronous scheduling): done
                continue
            num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.kv_cache.allocate(seq, num_new):
                victim = self.running.pop()
                self._preempt(victim, output)
                output.num_preempted += 1
                if victim is seq:
                    break
            else:
                output.scheduled.append(self._scheduled(seq, num_new))
                budget -= num_new
                i += 1
        if output.num_preempted or not self._admission_due():
            return output  # blocks are scarce, or too few slots free to be worth a prefill step
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            if self.kv_cache.is_swapped(seq.seq_id):
                num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
                copies = self.kv_cache.swap_in(seq, num_new)
                if copies is None:
                    break
                output.swap_in.extend(copies)
                self._admit(seq, num_new, output)
                budget -= num_new
                continue
            hit = self.kv_cache.find_prefix(seq) if seq.num_computed_tokens == 0 else NO_HIT
            num_hit = hit.num_tokens(self.config.block_size)
            num_new = min(seq.num_tokens - seq.num_computed_tokens - num_hit, budget)
            if not self.kv_cache.allocate(seq, num_new, hit):
                break
            if seq.num_computed_tokens == 0:
                self.kv_cache.record_prefix_lookup(seq.num_tokens, num_hit)
                if seq.num_cached_prompt_tokens == 0:
                    seq.num_cached_prompt_tokens = num_hit
            seq.num_computed_tokens += num_hit
            self._admit(seq, num_new, output)
            budget -= num_new
        return output

    def _admit(self, seq: Sequence, num_new_tokens: int, output: SchedulerOutput) -> None:
        self.waiting.popleft()
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        output.scheduled.append(self._scheduled(seq, num_new_tokens))

    def _scheduled(self, seq: Sequence, num_new_tokens: int) -> ScheduledSeq:
        return ScheduledSeq(seq, num_new_tokens, self.kv_cache.block_ids(seq.seq_id))

    def _admission_due(self) -> bool:
        if not self.running or (self.waiting and self.waiting[0].num_computed_tokens > 0):
            return True  # idle, or a forked sibling already holds blocks: take it now
        free_slots = self.config.max_num_seqs - len(self.running)
        return free_slots >= min(self.config.admission_batch, len(self.waiting))

    def update(self, output: SchedulerOutput) -> None:
        """Advance computed-token counts; fork waiting siblings off a finished prompt."""
        for item in output.scheduled:
            seq = item.seq
            seq.num_computed_tokens += item.num_new_tokens
            if seq.num_computed_tokens >= seq.num_prompt_tokens:
                siblings = self.pending_forks.pop(seq.request_id, None)
                if siblings:
                    self._fork(seq, siblings)

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        # A sequence preempted while its last token was in flight (asynchronous scheduling)
        # finishes from the queue, its blocks on the host or already freed.
        (self.running if seq in self.running else self.waiting).remove(seq)
        self.kv_cache.free(seq.seq_id)

    def abort(self, request_id: str) -> list[Sequence]:
        """Drop every sequence of a request, freeing its blocks at once."""
        aborted = self.pending_forks.pop(request_id, [])
        for queue in (self.running, self.waiting):
            mine = [seq for seq in queue if seq.request_id == request_id]
            for seq in mine:
                queue.remove(seq)
                self.kv_cache.free(seq.seq_id)
            aborted.extend(mine)
        for seq in aborted:
            seq.status = SequenceStatus.FINISHED
            seq.finish_reason = "abort"
        return aborted

    def _preempt(self, seq: Sequence, output: SchedulerOutput) -> None:
        if self._should_swap(seq):
            output.swap_out.extend(self.kv_cache.swap_out(seq))
            self.num_swapped_out += 1
        else:
            self.kv_cache.free(seq.seq_id)
            seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _should_swap(self, seq: Sequence) -> bool:
        cost = self.preemption_cost
        if cost is None or seq.num_computed_tokens == 0 or not self.kv_cache.can_swap_out(seq):
            return False
        return cost.prefers_swap(seq.num_computed_tokens, self.kv_cache.num_computed_blocks(seq))

    def _fork(self, parent: Sequence, siblings: list[Sequence]) -> None:
        for child in reversed(siblings):
            child.num_computed_tokens = self.kv_cache.fork(parent, child)
            self.waiting.appendleft(child)
