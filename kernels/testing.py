"""Random paged-attention batches for the kernel tests and benchmarks.

Blocks are handed out from a random permutation, so every block table is shuffled and
non-contiguous, as it is in an engine after some allocation churn; the caches hold random
values (never zeros, which hide unwritten or misindexed reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

import torch

from pagefleet.kernels.attention_mask import first_visible_key


@dataclass(frozen=True, slots=True)
class PagedBatch:
    """One step's layout: sequence `s` adds `query_lens[s]` tokens at the end of `seq_lens[s]`."""

    seq_lens: torch.Tensor  # [num_seqs] int32
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32
    block_tables: torch.Tensor  # [num_seqs, max_blocks_per_seq] int32, padded with 0
    slot_mapping: torch.Tensor  # [num_tokens] int64: where each new token's K/V goes
    positions: torch.Tensor  # [num_tokens] int64
    seq_lens_cpu: list[int]
    query_start_loc_cpu: list[int]
    num_blocks: int

    @property
    def num_tokens(self) -> int:
        return self.query_start_loc_cpu[-1]

    @property
    def max_query_len(self) -> int:
        starts = self.query_start_loc_cpu
        return max((b - a for a, b in pairwise(starts)), default=0)

    @property
    def max_seq_len(self) -> int:
        return max(self.seq_lens_cpu, default=0)


def make_paged_batch(
    seq_lens: Sequence[int], query_lens: Sequence[int], block_size: int,
    generator: torch.Generator, device: torch.device | str, extra_blocks: int = 3,
) -> PagedBatch:
    """Lay out sequences over a shuffled pool holding `extra_blocks` more than they need."""
    if len(seq_lens) != len(query_lens):
        raise ValueError("seq_lens and query_lens differ in length")
    if any(q > s or q < 0 for q, s in zip(query_lens, seq_lens, strict=True)):
        raise ValueError("every query_len must be between 0 and its seq_len")
    blocks_per_seq = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_seq) + extra_blocks
    pool = torch.randperm(num_blocks, generator=generator, device=generator.device).tolist()
    width = max(blocks_per_seq, default=1) or 1
    tables = torch.zeros((len(seq_lens), width), dtype=torch.int32)
    slots: list[int] = []
    positions: list[int] = []
    for s, (seq_len, query_len) in enumerate(zip(seq_lens, query_lens, strict=True)):
        table, pool = pool[: blocks_per_seq[s]], pool[blocks_per_seq[s]:]
        tables[s, : len(table)] = torch.tensor(table, dtype=torch.int32)
        for pos in range(seq_len - query_len, seq_len):
            slots.append(table[pos // block_size] * block_size + pos % block_size)
            positions.append(pos)
    starts = [0, *accumulate(query_lens)]
    return PagedBatch(
        seq_lens=torch.tensor(list(seq_lens), dtype=torch.int32, device=device),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        block_tables=tables.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        positions=torch.tensor(positions, dtype=torch.int64, device=device),
        seq_lens_cpu=list(seq_lens), query_start_loc_cpu=starts, num_blocks=num_blocks,
    )


def random_tensor(
    shape: Sequence[int], dtype: torch.dtype, generator: torch.Generator,
    device: torch.device | str,
) -> torch.Tensor:
    """Standard normal values drawn with `generator` (on its device), cast to `dtype`."""
    gen_device = generator.device
    values = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32)
    return values.to(device=device, dtype=dtype)


def nan_like(tensor: torch.Tensor) -> torch.Tensor:
    """A poisoned output buffer: any element a kernel forgets to write stays NaN."""
    return torch.full_like(tensor, float("nan"))


def poison_unused_slots(cache: torch.Tensor, batch: PagedBatch, sliding_window: int | None = None) -> None:
    """Fill every cache slot outside the batch's sequences with NaN, so a kernel that reads
    past a sequence's end (or through the block table's padding) returns NaN. With a window,
    the keys before any query's window are poisoned too: a windowed kernel never reads them."""
    num_blocks, block_size = cache.shape[:2]
    keep = torch.zeros(num_blocks * block_size, dtype=torch.bool, device=cache.device)
    starts = batch.query_start_loc_cpu
    for s, seq_len in enumerate(batch.seq_lens_cpu):
        first = first_visible_key(seq_len, starts[s + 1] - starts[s], sliding_window)
        pos = torch.arange(first, seq_len, device=cache.device)
        blocks = batch.block_tables[s, pos // block_size].long()
        keep[blocks * block_size + pos % block_size] = True
    cache.view(num_blocks * block_size, -1)[~keep] = float("nan")


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64; NaN anywhere in `out` gives NaN (which fails `<`)."""
    diff = (out.double() - ref.double()).norm()
    return (diff / ref.double().norm().clamp_min(1e-30)).item()


# Bounds on `relative_error` by input dtype: float32 runs IEEE dots, half types round P and V.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 2e-2}


def rows_with_outliers(
    shape: Sequence[int], dtype: torch.dtype, generator: torch.Generator,
    device: torch.device | str, outlier: float,
) -> torch.Tensor:
    """Standard normal rows `[..., cols]` for per-row quantisation tests: the first row holds a
    few values `outlier` times larger (they set its scale), the last row (of two or more) is
    all zero, and the rows between span magnitudes from 1e-2 to 1e2."""
    x = random_tensor(shape, torch.float32, generator, device)
    rows = x.view(-1, x.shape[-1])
    rows *= torch.logspace(-2, 2, rows.shape[0], device=rows.device)[:, None]
    picks = torch.randperm(rows.shape[1], generator=generator, device=generator.device)[:3]
    rows[0, picks.to(rows.device)] *= outlier
    if rows.shape[0] > 1:
        rows[-1] = 0.0
    return x.to(dtype)


def fp8_code_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many e4m3 codes apart two fp8 tensors are, elementwise (e4m3 is sign-magnitude, so
    its bytes order magnitudes; +0 and -0 count as the same code)."""
    def ordinal(values: torch.Tensor) -> torch.Tensor:
        bits = values.view(torch.uint8).to(torch.int16)
        return torch.where(bits >= 0x80, -(bits & 0x7F), bits)

    return (ordinal(a) - ordinal(b)).abs()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise bit equality of two float tensors of one dtype (unlike `==`, -0 is not 0)."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[a.element_size()]
    return a.contiguous().view(ints) == b.contiguous().view(ints)
# Attention over an fp8 e4m3 cache against the same attention over the unrounded cache: e4m3
# keeps 3 mantissa bits (a relative rounding error up to 2^-4 per value), which the softmax
# and the weighted sum average down; a misread cache (zeros, garbage bytes) errs near 1.
FP8_KV_TOLERANCE = 0.1  # measured 0.03-0.05 (decode, 17 to 4097 keys)
