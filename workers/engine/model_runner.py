"""Runs one scheduled step on the model: flatten, forward, logits of the sampling rows.

It owns the model and the KV cache tensors (one K and one V tensor per layer, shaped
`[num_blocks, block_size, num_kv_heads, head_dim]`) and sizes the cache from memory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist

from pagefleet.kernels.host_math import cdiv
from pagefleet.platform.protocol.phases import PhaseLog
from pagefleet.workers.attention import AttentionMetadata, get_attention_backend
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.cuda_graphs import DecodeGraphs
from pagefleet.workers.engine.host_memory import HostKVCache, HostWeights
from pagefleet.workers.engine.lazy_zeros import zeros
from pagefleet.workers.engine.piecewise_graphs import PiecewiseGraphs, SplittingAttention
from pagefleet.workers.engine.pinned import PinnedRing
from pagefleet.workers.engine.resolved_config import (
    ResolvedEngineConfig,
    resolve,
    resolve_device,
)
from pagefleet.workers.engine.scheduler import SchedulerOutput
from pagefleet.workers.engine.sequence import PENDING_TOKEN
from pagefleet.workers.engine.tensor_parallel import TensorParallelContext
from pagefleet.workers.models.arch import ModelArch
from pagefleet.workers.models.loader import ResolvedModel, build_model
from pagefleet.workers.models.parallel import TensorParallel

logger = logging.getLogger(__name__)

_CPU_KV_CACHE_BYTES = 1 << 30
ForwardPath = Literal["graph", "piecewise", "eager"]


@dataclass(frozen=True, slots=True)
class HostStep:
    """One step flattened on the host: small numpy arrays, cheap to broadcast to TP ranks."""

    input_ids: np.ndarray  # [num_tokens] int64
    positions: np.ndarray  # [num_tokens] int64
    slot_mapping: np.ndarray  # [num_tokens] int64
    query_start_loc: np.ndarray  # [num_seqs + 1] int32
    seq_lens: np.ndarray  # [num_seqs] int32
    block_tables: np.ndarray  # [num_seqs, max_blocks] int32
    sample_indices: np.ndarray  # [num_sampling_seqs] int64
    max_query_len: int
    # Input tokens the host does not know yet (asynchronous scheduling): their rows in
    # `input_ids`, and where the previous step's device-side choices hold them.
    pending_rows: np.ndarray  # [num_pending] int64
    pending_sources: np.ndarray  # [num_pending] int64


@dataclass(frozen=True, slots=True)
class WakeTimes:
    """Seconds a wake spent on each phase (zero when the runner was awake already)."""

    weights_s: float = 0.0  # host to device
    kv_cache_s: float = 0.0  # allocate and zero
    graphs_s: float = 0.0  # capture the decode graphs again

    @property
    def total_s(self) -> float:
        return self.weights_s + self.kv_cache_s + self.graphs_s


@dataclass(frozen=True, slots=True)
class InFlightTokens:
    """The previous step's choices, still on the device, by sequence."""

    token_ids: torch.Tensor  # [num_sampling_seqs] int64, device
    row_of: dict[tuple[str, int], int]  # seq_id -> row of token_ids


@dataclass(frozen=True, slots=True)
class StepInputs:
    input_ids: torch.Tensor  # [num_tokens] int64
    positions: torch.Tensor  # [num_tokens] int64
    metadata: AttentionMetadata
    sample_indices: torch.Tensor  # [num_sampling_seqs] int64: rows of the last tokens
    pending_rows: torch.Tensor  # [num_pending] int64 (see HostStep)
    pending_sources: torch.Tensor  # [num_pending] int64


class ModelRunner:
    """Every TP rank builds one, so this is where the engine's settings are resolved (the
    device depends on the rank): `settings` is what the scheduler and the engine read too."""

    def __init__(
        self, config: EngineConfig, resolved_model: ResolvedModel,
        tp_context: TensorParallelContext | None = None, phases: PhaseLog | None = None,
    ) -> None:
        self.config = config
        self.phases = phases if phases is not None else PhaseLog()
        self.tp_context = tp_context
        self.tp = tp_context.tp if tp_context is not None else TensorParallel(rank=0, size=1)
        self.arch: ModelArch = resolved_model.arch
        settings = resolve(config, self.arch, resolve_device(config.device, self.tp.rank))
        self.device, self.dtype = settings.device, settings.dtype
        self.kv_cache_dtype = settings.kv_cache_dtype
        self.attention = get_attention_backend(settings.attention_backend)
        if settings.piecewise_graphs:  # the model's attention calls split the captures
            self.attention = SplittingAttention(self.attention)
        self.block_size = settings.block_size
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.model = build_model(
            resolved_model, dtype=self.dtype, device=self.device, load_format=config.load_format,
            attention=self.attention, tp=self.tp,
            fused_layers=settings.fused_layers, quantization=config.quantization,
            fused_fp8_quant=config.fused_fp8_quant,
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the phase ends when the copies have landed
        self.phases.mark("weights_loaded")
        self.num_kv_heads = self.arch.num_kv_heads_per_rank(self.tp.size)
        self.num_blocks = self._agree_on_num_blocks(self._decide_num_blocks(settings))
        self.settings = settings.with_kv_cache(self.num_blocks)
        # One block more than the scheduler may hand out: the scratch "null block" that
        # padded rows of a CUDA-graph batch write to.
        self.kv_caches = self._allocate_kv_cache(self.num_blocks + 1)
        self.phases.mark("kv_allocated")
        self._staging = PinnedRing(slots=4)  # two uploads a step; used on CUDA only
        self.graphs = self._capture_graphs()
        self.piecewise = self._capture_piecewise()
        self.host_weights: HostWeights | None = None  # made by the first sleep, then kept
        self.host_kv: HostKVCache | None = None  # the swap space, see allocate_swap_space
        self.is_sleeping = False
        if self.graphs is not None:
            self.phases.mark("graphs_captured")

    def _capture_graphs(self) -> DecodeGraphs | None:
        if not self.settings.use_cuda_graphs:
            return None
        return DecodeGraphs(
            self.model, self.kv_caches, self.settings.max_graph_batch_size,
            self.settings.max_model_len, self.block_size, null_block=self.num_blocks,
            device=self.device,
        )

    def _capture_piecewise(self) -> PiecewiseGraphs | None:
        if not self.settings.piecewise_graphs:
            return None
        return PiecewiseGraphs(
            self.model, self.attention, self.kv_caches, self.settings.max_num_batched_tokens,
            self.block_size, null_block=self.num_blocks, device=self.device,
        )

    @property
    def bytes_per_block(self) -> int:
        """K and V of one block over every layer: what sizing and swapping count in."""
        return (2 * self.arch.num_layers * self.block_size * self.num_kv_heads * self.arch.head_dim
                * self.kv_cache_dtype.itemsize)

    # ---- host memory: swap space and standby ------------------------------------------

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def allocate_swap_space(self, num_bytes: int) -> int:
        """Allocate the host swap space (pinned on CUDA); returns its size in blocks."""
        num_host_blocks = num_bytes // self.bytes_per_block
        if num_host_blocks > 0:
            self.host_kv = HostKVCache(self.kv_caches, num_host_blocks, self.device)
        return num_host_blocks

    def apply_swaps(self, output: SchedulerOutput) -> None:
        """Make the step's block copies: out first (their device blocks may be handed out
        again in this very step), then in; both before the step's forward pass."""
        if self.host_kv is None:
            return
        if output.swap_out:
            self.host_kv.swap_out(self.kv_caches, [(c.device_block_id, c.host_block_id)
                                                   for c in output.swap_out])
        if output.swap_in:
            self.host_kv.swap_in(self.kv_caches, [(c.host_block_id, c.device_block_id)
                                                  for c in output.swap_in])

    def sleep(self) -> None:
        """Free the device: weights to host memory, the KV cache and the graphs dropped.
        The swap space stays (it is host memory already, and empty while nothing runs)."""
        if self.is_sleeping:
            return
        if self.host_weights is None:
            self.host_weights = HostWeights(self.model, self.device)
        self.graphs = self.piecewise = None
        self.kv_caches = []
        self.host_weights.release_device()
        self.is_sleeping = True
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake(self) -> WakeTimes:
        """Weights back, a fresh (zeroed) KV cache of the same size, graphs captured again
        (the weights and the cache have new addresses, which captured graphs bake in)."""
        if not self.is_sleeping:
            return WakeTimes()
        assert self.host_weights is not None  # sleep() made it
        start = time.perf_counter()
        self.host_weights.restore_device()  # synchronises
        weights_done = time.perf_counter()
        self.kv_caches = self._allocate_kv_cache(self.num_blocks + 1)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        kv_done = time.perf_counter()
        self.graphs = self._capture_graphs()  # synchronises
        self.piecewise = self._capture_piecewise()
        self.is_sleeping = False
        return WakeTimes(weights_done - start, kv_done - weights_done, time.perf_counter() - kv_done)

    def _decide_num_blocks(self, settings: ResolvedEngineConfig) -> int:
        if self.config.num_kv_blocks is not None:
            return self.config.num_kv_blocks
        if self.config.kv_cache_memory_bytes is not None:
            budget = self.config.kv_cache_memory_bytes
        elif self.device.type == "cuda":
            budget = self._profile_free_gpu_memory(settings.max_num_batched_tokens)
        else:
            budget = _CPU_KV_CACHE_BYTES
        num_blocks = budget // self.bytes_per_block - 1  # less the null block
        if num_blocks < 1:
            raise ValueError(f"no memory left for the KV cache (budget {budget} bytes)")
        return int(num_blocks)

    def _agree_on_num_blocks(self, num_blocks: int) -> int:
        """Every TP rank must hold the same block count: take the smallest."""
        if self.tp.size == 1:
            return num_blocks
        count = torch.tensor([num_blocks], dtype=torch.long)
        dist.all_reduce(count, op=dist.ReduceOp.MIN, group=self.tp_context.control_group)
        return int(count.item())

    def _profile_free_gpu_memory(self, num_tokens: int) -> int:
        """Memory the KV cache may take: the utilisation share of the card, less the weights
        and the activations of the largest step (measured with a dummy forward)."""
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        dummy_cache = self._allocate_kv_cache(1 + num_tokens // self.block_size)
        ids = torch.zeros(num_tokens, dtype=torch.long, device=self.device)
        positions = torch.arange(num_tokens, device=self.device) % 1024
        metadata = _single_sequence_metadata(num_tokens, self.block_size, self.device)
        with torch.inference_mode():
            hidden = self.model(ids, positions, dummy_cache, metadata)
            self.model.compute_logits(hidden[-min(num_tokens, 256):])
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        dummy_bytes = sum(k.numel() * k.element_size() * 2 for k, _ in dummy_cache)
        del dummy_cache, hidden
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(self.device)
        used_by_others = total - free - torch.cuda.memory_allocated(self.device)
        budget = int(total * self.config.gpu_memory_utilization) - used_by_others - (peak - dummy_bytes)
        logger.info("KV cache budget %.2f GiB (peak step %.2f GiB)", budget / 2**30, peak / 2**30)
        self.phases.mark("memory_profiled")
        return budget

    def _allocate_kv_cache(self, num_blocks: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        shape = (num_blocks, self.block_size, self.num_kv_heads, self.arch.head_dim)
        return [
            (zeros(shape, self.kv_cache_dtype, self.device),
             zeros(shape, self.kv_cache_dtype, self.device))
            for _ in range(self.arch.num_layers)
        ]

    def flatten(self, output: SchedulerOutput, in_flight: InFlightTokens | None = None) -> HostStep:
        """Flatten the step on the host with numpy (vectorised where it can be). A decode
        row whose input is still in flight is marked for `execute_host` to fill on the device."""
        scheduled = output.scheduled
        num_seqs = len(scheduled)
        num_new = np.fromiter((item.num_new_tokens for item in scheduled), np.int64, num_seqs)
        starts = np.fromiter((item.seq.num_computed_tokens for item in scheduled), np.int64, num_seqs)
        query_start_loc = np.zeros(num_seqs + 1, dtype=np.int64)
        np.cumsum(num_new, out=query_start_loc[1:])
        num_tokens = int(query_start_loc[-1])
        input_ids: list[int] = []
        pending_rows: list[int] = []
        pending_sources: list[int] = []
        for item in scheduled:
            seq = item.seq
            if item.num_new_tokens == 1:
                token = seq.token_id_at(seq.num_computed_tokens)
                if token == PENDING_TOKEN:
                    if in_flight is None:
                        raise RuntimeError(f"{seq.seq_id}: input token in flight but no step is")
                    pending_rows.append(len(input_ids))
                    pending_sources.append(in_flight.row_of[seq.seq_id])
                input_ids.append(token)
            else:  # chunks are prompt or settled tokens: only a decode reads a pending one
                input_ids.extend(seq.token_ids_slice(
                    seq.num_computed_tokens, seq.num_computed_tokens + item.num_new_tokens))
        seq_of_token = np.repeat(np.arange(num_seqs), num_new)
        positions = np.arange(num_tokens, dtype=np.int64) + np.repeat(starts - query_start_loc[:-1], num_new)
        tables = np.zeros((num_seqs, max(len(item.block_ids) for item in scheduled)), dtype=np.int32)
        for row, item in enumerate(scheduled):
            tables[row, : len(item.block_ids)] = item.block_ids
        bs = self.block_size
        needs_sample = np.fromiter((item.needs_sample for item in scheduled), bool, num_seqs)
        return HostStep(
            input_ids=np.asarray(input_ids, dtype=np.int64),
            positions=positions,
            slot_mapping=tables[seq_of_token, positions // bs].astype(np.int64) * bs + positions % bs,
            query_start_loc=query_start_loc.astype(np.int32),
            seq_lens=(starts + num_new).astype(np.int32),
            block_tables=tables,
            sample_indices=query_start_loc[1:][needs_sample] - 1,
            max_query_len=int(num_new.max()),
            pending_rows=np.asarray(pending_rows, dtype=np.int64),
            pending_sources=np.asarray(pending_sources, dtype=np.int64),
        )

    def upload(self, step: HostStep) -> StepInputs:
        """Two host-to-device copies per step (one of the int64 arrays, one of the int32
        ones, each packed into one pinned buffer), asynchronous on CUDA."""
        longs = (step.input_ids, step.positions, step.slot_mapping, step.sample_indices,
                 step.pending_rows, step.pending_sources)
        ints = (step.query_start_loc, step.seq_lens, step.block_tables.reshape(-1))
        input_ids, positions, slot_mapping, sample_indices, pending_rows, pending_sources = (
            self._upload_packed(longs, torch.int64))
        query_start_loc, seq_lens, block_tables = self._upload_packed(ints, torch.int32)
        seq_lens_list = step.seq_lens.tolist()
        metadata = AttentionMetadata(
            slot_mapping=slot_mapping,
            query_start_loc=query_start_loc,
            seq_lens=seq_lens,
            block_tables=block_tables.view(step.block_tables.shape),
            max_query_len=step.max_query_len,
            max_seq_len=max(seq_lens_list),
            query_start_loc_cpu=step.query_start_loc.tolist(),
            seq_lens_cpu=seq_lens_list,
        )
        return StepInputs(input_ids, positions, metadata, sample_indices,
                          pending_rows, pending_sources)

    def _upload_packed(self, arrays: tuple[np.ndarray, ...], dtype: torch.dtype) -> list[torch.Tensor]:
        if self.device.type != "cuda":  # the arrays are the inputs already: no copy
            return [torch.from_numpy(array) for array in arrays]
        return self._staging.upload(arrays, dtype, self.device)

    def execute(self, output: SchedulerOutput, in_flight: InFlightTokens | None = None) -> torch.Tensor:
        """Logits `[num_sampling_seqs, vocab]` (model dtype) of the sequences that sample; with
        tensor parallelism every rank runs the same step. Nothing here waits for the device."""
        step = self.flatten(output, in_flight)
        if self.tp.size > 1:
            self.tp_context.broadcast(step)
        return self.execute_host(step, in_flight.token_ids if in_flight is not None else None)

    @torch.inference_mode()
    def execute_host(self, step: HostStep, in_flight_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = self.upload(step)
        if step.pending_rows.size:
            inputs.input_ids[inputs.pending_rows] = in_flight_ids[inputs.pending_sources]
        md = inputs.metadata
        path = self.forward_path(md.num_seqs, inputs.input_ids.shape[0])
        if path == "graph":
            hidden = self.graphs.run(inputs.input_ids, inputs.positions, md.slot_mapping,
                                     md.seq_lens, md.block_tables)
            return self.model.compute_logits(hidden)  # every decode row samples
        if path == "piecewise":
            hidden = self.piecewise.run(inputs.input_ids, inputs.positions, md)
        else:
            hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, md)
        return self.model.compute_logits(hidden[inputs.sample_indices])

    def forward_path(self, num_seqs: int, num_tokens: int) -> ForwardPath:
        """How a step of `num_seqs` sequences and `num_tokens` tokens runs: a captured decode
        graph (decode-only: one token each), piecewise graphs, or eagerly."""
        if self.graphs is not None and num_tokens == num_seqs and self.graphs.can_run(num_seqs):
            return "graph"
        if self.piecewise is not None and self.piecewise.can_run(num_tokens):
            return "piecewise"
        return "eager"

    @torch.inference_mode()
    def forward_prompt(self, prompt_ids: list[int]) -> torch.Tensor:
        """Hidden states `[num_tokens, hidden_size]` of one prompt run alone on a scratch KV
        cache (prompt_logprobs.py says why); single rank only."""
        num_tokens = len(prompt_ids)
        cache = self._allocate_kv_cache(cdiv(num_tokens, self.block_size))
        ids = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)
        positions = torch.arange(num_tokens, device=self.device)
        metadata = _single_sequence_metadata(num_tokens, self.block_size, self.device)
        return self.model(ids, positions, cache, metadata)


def _single_sequence_metadata(num_tokens: int, block_size: int, device: torch.device) -> AttentionMetadata:
    num_blocks = cdiv(num_tokens, block_size)
    return AttentionMetadata(
        slot_mapping=torch.arange(num_tokens, device=device),
        query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([num_tokens], dtype=torch.int32, device=device),
        block_tables=torch.arange(num_blocks, dtype=torch.int32, device=device)[None, :],
        max_query_len=num_tokens,
        max_seq_len=num_tokens,
        query_start_loc_cpu=[0, num_tokens],
        seq_lens_cpu=[num_tokens],
    )
