"""Reference attention over the paged cache in plain torch: any device, easy to read."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

import torch

from pagefleet.kernels.attention_mask import soft_cap, visible_keys
from pagefleet.kernels.fp8_e4m3 import FP8_DTYPE
from pagefleet.kernels.host_math import cdiv
from pagefleet.kernels.reshape_and_cache import to_cache_dtype
from pagefleet.workers.attention.metadata import AttentionMetadata


def write_kv_cache_ref(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Scatter new K/V rows into the cache slots named by `slot_mapping`; an fp8 cache gets
    them saturated to +-448 (see `to_cache_dtype`)."""
    for new, cache in ((k, k_cache), (v, v_cache)):
        rows, stored = _rows(cache), to_cache_dtype(new, cache.dtype)
        if cache.dtype == FP8_DTYPE:  # torch has no fp8 index_copy_: move the bytes instead
            rows, stored = rows.view(torch.uint8), stored.view(torch.uint8)
        rows.index_copy_(0, slot_mapping, stored)


def _rows(cache: torch.Tensor) -> torch.Tensor:
    """`[num_blocks * block_size, num_kv_heads, head_dim]`: one row per cache slot."""
    return cache.view(-1, *cache.shape[2:])


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first `seq_len` cached rows of one sequence: `[seq_len, num_kv_heads, head_dim]`."""
    block_size = cache.shape[1]
    num_blocks = cdiv(seq_len, block_size)
    rows = cache[block_table[:num_blocks].long()]  # [num_blocks, block_size, kv_heads, head_dim]
    return rows.flatten(0, 1)[:seq_len]


def paged_attention_ref(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    metadata: AttentionMetadata, scale: float,
    sliding_window: int | None = None, softcap: float | None = None,
) -> torch.Tensor:
    """Causal (optionally windowed, soft-capped) attention of every query token over its
    sequence's cached K/V, one sequence at a time."""
    num_heads = q.shape[1]
    out = torch.empty_like(q)
    starts = metadata.query_start_loc_cpu
    for s, seq_len in enumerate(metadata.seq_lens_cpu):
        q_start, q_end = starts[s], starts[s + 1]
        query_len = q_end - q_start
        if query_len == 0:
            continue
        keys = gather_kv(k_cache, metadata.block_tables[s], seq_len)
        values = gather_kv(v_cache, metadata.block_tables[s], seq_len)
        group = num_heads // keys.shape[1]
        keys = keys.repeat_interleave(group, dim=1).transpose(0, 1).float()  # [heads, seq, dim]
        values = values.repeat_interleave(group, dim=1).transpose(0, 1).float()
        queries = q[q_start:q_end].transpose(0, 1).float()  # [heads, query_len, dim]
        q_pos = torch.arange(seq_len - query_len, seq_len, device=q.device)
        k_pos = torch.arange(seq_len, device=q.device)
        mask = visible_keys(q_pos[:, None], k_pos[None, :], sliding_window)  # [query_len, seq_len]
        scores = soft_cap(queries @ keys.transpose(1, 2) * scale, softcap)
        attn = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ values
        out[q_start:q_end] = attn.transpose(0, 1).to(q.dtype)
    return out


@dataclass(slots=True)
class PaddedGroup:
    """Sequences of one step padded to one shape (`max_q` queries, `max_s` keys each): the
    step's index arithmetic, built once a step and read by every layer."""

    tokens: torch.Tensor | None  # bool [num_tokens]: the step's query rows in this group; None: all
    max_s: int
    seq_of_token: torch.Tensor  # [group tokens]
    row_of_token: torch.Tensor  # [group tokens]
    tables: torch.Tensor  # [seqs, blocks covering max_s] int64
    q_pos: torch.Tensor  # [seqs, max_q]
    seq_lens: torch.Tensor  # [seqs]
    masks: dict[int | None, torch.Tensor] = field(default_factory=dict)  # by sliding window

    @classmethod
    def build(cls, tokens: torch.Tensor | None, num_tokens: int, query_lens: torch.Tensor,
              seq_lens: torch.Tensor, block_tables: torch.Tensor, max_q: int, max_s: int,
              block_size: int) -> PaddedGroup:
        device = query_lens.device
        starts = torch.cumsum(query_lens, 0) - query_lens
        seq_of_token = torch.repeat_interleave(
            torch.arange(query_lens.shape[0], device=device), query_lens, output_size=num_tokens)
        return cls(
            tokens=tokens, max_s=max_s, seq_of_token=seq_of_token,
            row_of_token=torch.arange(num_tokens, device=device) - starts[seq_of_token],
            tables=block_tables[:, : cdiv(max_s, block_size)].long(),
            q_pos=(seq_lens - query_lens)[:, None] + torch.arange(max_q, device=device)[None, :],
            seq_lens=seq_lens,
        )

    def visible(self, sliding_window: int | None) -> torch.Tensor:
        """`[seqs, max_q, max_s]`: which padded keys each padded query sees."""
        if sliding_window not in self.masks:
            k_pos = torch.arange(self.max_s, device=self.q_pos.device)
            visible = visible_keys(self.q_pos[:, :, None], k_pos[None, None, :], sliding_window)
            self.masks[sliding_window] = visible & (k_pos[None, None, :] < self.seq_lens[:, None, None])
        return self.masks[sliding_window]


def pad_groups(metadata: AttentionMetadata, block_size: int) -> list[PaddedGroup]:
    """The step's sequences as padded groups: one, or a mixed step's decodes and prompt chunks
    apart. Padded together, one 1,024-token chunk beside 500 decodes would give every decode
    1,024 query rows (scores of 500 x heads x 1,024 x the longest sequence, gigabytes a layer)."""
    starts = metadata.query_start_loc.long()
    query_lens = starts[1:] - starts[:-1]
    seq_lens = metadata.seq_lens.long()
    num_tokens = metadata.query_start_loc_cpu[-1]
    is_decode = [end - start == 1 for start, end in pairwise(metadata.query_start_loc_cpu)]
    num_decodes = sum(is_decode)
    if num_decodes in (0, len(is_decode)):  # one shape already
        return [PaddedGroup.build(None, num_tokens, query_lens, seq_lens, metadata.block_tables,
                                  metadata.max_query_len, metadata.max_seq_len, block_size)]
    decode_seqs = torch.tensor(is_decode, device=starts.device)
    decode_tokens = torch.repeat_interleave(decode_seqs, query_lens, output_size=num_tokens)
    groups = []
    for decode, seqs, tokens, group_tokens, max_q in (
        (True, decode_seqs, decode_tokens, num_decodes, 1),
        (False, ~decode_seqs, ~decode_tokens, num_tokens - num_decodes, metadata.max_query_len),
    ):
        max_s = max(n for n, flag in zip(metadata.seq_lens_cpu, is_decode, strict=True) if flag == decode)
        groups.append(PaddedGroup.build(tokens, group_tokens, query_lens[seqs], seq_lens[seqs],
                                        metadata.block_tables[seqs], max_q, max_s, block_size))
    return groups


def paged_attention_batched(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
    metadata: AttentionMetadata, scale: float,
    sliding_window: int | None = None, softcap: float | None = None,
    groups: list[PaddedGroup] | None = None,
) -> torch.Tensor:
    """The same attention as `paged_attention_ref`, with the batch padded into a few large
    tensor ops instead of a Python loop per sequence: what makes the torch backend usable
    on a CPU, where per-call overhead dominates small attention problems. `groups` is
    `pad_groups(metadata, ...)`, passed in to build it once a step."""
    if groups is None:
        groups = pad_groups(metadata, k_cache.shape[1])
    if groups[0].tokens is None:
        return _padded_attention(q, k_cache, v_cache, groups[0], scale, sliding_window, softcap)
    out = torch.empty_like(q)
    for group in groups:
        out[group.tokens] = _padded_attention(q[group.tokens], k_cache, v_cache, group, scale,
                                              sliding_window, softcap)
    return out


def _padded_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, group: PaddedGroup,
    scale: float, sliding_window: int | None, softcap: float | None,
) -> torch.Tensor:
    """Attention of `q` (the group's query rows back to back) over the group's padded shape."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    (num_seqs, max_q), max_s = group.q_pos.shape, group.max_s
    num_kv_heads = k_cache.shape[2]
    keys = k_cache[group.tables].flatten(1, 2)[:, :max_s].float()  # [seqs, max_s, kv_heads, dim]
    values = v_cache[group.tables].flatten(1, 2)[:, :max_s].float()
    queries = q.new_zeros((num_seqs, max_q, num_heads, head_dim), dtype=torch.float32)
    queries[group.seq_of_token, group.row_of_token] = q.float()
    queries = queries.view(num_seqs, max_q, num_kv_heads, num_heads // num_kv_heads, head_dim)
    scores = soft_cap(torch.einsum("bqkgd,bskd->bkgqs", queries, keys) * scale, softcap)
    scores = scores.masked_fill(~group.visible(sliding_window)[:, None, None], float("-inf"))
    out = torch.einsum("bkgqs,bskd->bqkgd", scores.softmax(dim=-1), values)
    return out.reshape(num_seqs, max_q, num_heads, head_dim)[group.seq_of_token, group.row_of_token].to(q.dtype)


class TorchAttentionBackend:
    """Plain-torch backend over the paged cache (any device); the Triton backend is tested
    against it, and it is tested against the per-sequence `paged_attention_ref`. One instance
    serves every layer of a model: it pads a step once, at its first layer."""

    name = "torch"

    def __init__(self) -> None:
        self._step: tuple[AttentionMetadata, list[PaddedGroup]] | None = None

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        k_cache: torch.Tensor, v_cache: torch.Tensor,
        metadata: AttentionMetadata, scale: float,
        sliding_window: int | None = None, softcap: float | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        write_kv_cache_ref(k, v, k_cache, v_cache, metadata.slot_mapping)
        if self._step is None or self._step[0] is not metadata:  # a new step (held: no id reuse)
            self._step = (metadata, pad_groups(metadata, k_cache.shape[1]))
        result = paged_attention_batched(q, k_cache, v_cache, metadata, scale, sliding_window,
                                         softcap, self._step[1])
        return result if out is None else out.copy_(result)
