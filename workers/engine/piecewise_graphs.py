"""CUDA graphs for prefill and mixed steps, captured in pieces between the attention calls.

A decode-only step replays one captured graph (`cuda_graphs.DecodeGraphs`); any step with a
prompt chunk in it ran eagerly, every layer's ~15 kernels launched from Python. Under a
serving load most steps are such mixed steps (a new request's prompt beside the running
decodes), and on a small model launching them costs the host more than the device takes to
run them: in the engine-core profile of the 1B serve run on an H100, two thirds of the time
the core spent launching steps went to the eager model's Python (issue 13 item 7).

Attention is the only part of the forward whose work depends on how the step's tokens split
into sequences; everything else is row-wise and depends only on the token count. So, for a
few token counts, the forward is captured in pieces: embedding to the first attention's
inputs, each attention's output to the next one's inputs, the last one's output to the final
norm. A step pads its tokens to the next captured count, replays piece 0, runs attention
eagerly on its real rows with the step's own metadata (writing into the buffer the next piece
reads), replays piece 1, and so on: L + 1 replays and L attention calls instead of ~15 L
launches. vLLM's piecewise graphs do this through torch.compile's graph splitting; here the
split happens at capture time: the attention backend the model calls (`SplittingAttention`)
ends the running capture, keeps the call's inputs and starts the next piece.

Padded rows compute garbage nobody reads: every op outside attention is row-wise, and their
attention rows are never computed (the output buffer keeps whatever it held). The padded input
ids and positions keep earlier steps' values, always valid indices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from pagefleet.workers.attention import AttentionBackend, AttentionMetadata

# Token counts captured; a step with more tokens than the largest runs eagerly (its kernels
# are long enough that launching them from Python costs little beside them).
PIECEWISE_SIZES = (16, 32, 64, 128, 256, 512)


def piecewise_sizes(max_tokens: int) -> list[int]:
    """The captured token counts up to `max_tokens` (which is one of them if it is less than 512)."""
    largest = min(max_tokens, PIECEWISE_SIZES[-1])
    return [size for size in PIECEWISE_SIZES if size < largest] + [largest] if largest > 0 else []


@dataclass(slots=True)
class AttentionCall:
    """One attention call of a captured forward: its inputs where the piece before it leaves
    them, and `out`, where the piece after it reads the result."""

    q: torch.Tensor  # [padded tokens, heads, head_dim]
    k: torch.Tensor
    v: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    scale: float
    sliding_window: int | None
    softcap: float | None
    out: torch.Tensor  # like q


class SplittingAttention:
    """The attention backend a model is built with when piecewise graphs are on: every call
    goes to `backend`, except while a forward is being captured in pieces (`split` set),
    when each call ends the running piece instead and returns the buffer its result will be
    written to."""

    def __init__(self, backend: AttentionBackend) -> None:
        self.backend = backend
        self.name = backend.name
        self.split: Callable[[AttentionCall], torch.Tensor] | None = None

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
        v_cache: torch.Tensor, metadata: AttentionMetadata, scale: float,
        sliding_window: int | None = None, softcap: float | None = None,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.split is None:
            return self.backend.forward(q, k, v, k_cache, v_cache, metadata, scale,
                                        sliding_window, softcap, out=out)
        return self.split(AttentionCall(q, k, v, k_cache, v_cache, scale, sliding_window,
                                        softcap, out=torch.empty_like(q)))


class Graph(Protocol):
    """What this module uses of `torch.cuda.CUDAGraph` (tests stand in for it on the CPU)."""

    def capture_begin(self, pool: object = None) -> None: ...

    def capture_end(self) -> None: ...

    def replay(self) -> None: ...


@dataclass(slots=True)
class CapturedForward:
    """The forward at one token count: `len(calls) + 1` pieces, and the final hidden states."""

    pieces: list[Graph]
    calls: list[AttentionCall]
    hidden: torch.Tensor  # [padded tokens, hidden]

    def replay(self, num_tokens: int, metadata: AttentionMetadata,
               backend: AttentionBackend) -> torch.Tensor:
        n = num_tokens
        for piece, call in zip(self.pieces, self.calls, strict=False):
            piece.replay()
            backend.forward(call.q[:n], call.k[:n], call.v[:n], call.k_cache, call.v_cache,
                            metadata, call.scale, call.sliding_window, call.softcap,
                            out=call.out[:n])
        self.pieces[-1].replay()
        return self.hidden[:n]


class PiecewiseGraphs:
    """Captured forwards by token count for steps that are not decode-only (or decode
    batches past the decode graphs' largest); `run` replays the smallest that fits."""

    def __init__(
        self, model: torch.nn.Module, attention: SplittingAttention, kv_caches: list,
        max_tokens: int, block_size: int, null_block: int, device: torch.device,
        new_graph: Callable[[], Graph] | None = None,
    ) -> None:
        self.model = model
        self.attention = attention
        self.kv_caches = kv_caches
        self.sizes = piecewise_sizes(max_tokens)
        self.null_block = null_block
        self.null_slot = null_block * block_size
        self.device = device
        self.new_graph = new_graph or torch.cuda.CUDAGraph
        largest = self.sizes[-1]
        self.input_ids = torch.zeros(largest, dtype=torch.long, device=device)
        self.positions = torch.zeros(largest, dtype=torch.long, device=device)
        self.forwards: dict[int, CapturedForward] = {}
        self._capture_all()

    def can_run(self, num_tokens: int) -> bool:
        return 0 < num_tokens <= self.sizes[-1]

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor,
            metadata: AttentionMetadata) -> torch.Tensor:
        """Hidden states `[num_tokens, hidden]` (a view into the captured output) of the step
        whose flattened inputs these are."""
        n = input_ids.shape[0]
        size = next(size for size in self.sizes if size >= n)
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        return self.forwards[size].replay(n, metadata, self.attention.backend)

    def _warm_up_metadata(self, num_tokens: int) -> AttentionMetadata:
        """Every row a one-token sequence on the null block: the warm-up's attention runs
        (compiling kernels for this many rows outside the capture) and writes only scratch."""
        device = self.device
        return AttentionMetadata(
            slot_mapping=torch.full((num_tokens,), self.null_slot, dtype=torch.long, device=device),
            query_start_loc=torch.arange(num_tokens + 1, dtype=torch.int32, device=device),
            seq_lens=torch.ones(num_tokens, dtype=torch.int32, device=device),
            block_tables=torch.full((num_tokens, 1), self.null_block, dtype=torch.int32, device=device),
            max_query_len=1,
            max_seq_len=1,
            query_start_loc_cpu=list(range(num_tokens + 1)),
            seq_lens_cpu=[1] * num_tokens,
        )

    @torch.inference_mode()
    def _capture_all(self) -> None:
        on_cuda = self.device.type == "cuda"
        pool = torch.cuda.graph_pool_handle() if on_cuda else None
        for size in reversed(self.sizes):  # largest first: smaller ones reuse its pool
            metadata = self._warm_up_metadata(size)
            args = (self.input_ids[:size], self.positions[:size], self.kv_caches, metadata)
            self.model(*args)  # outside any capture: autotuning, lazy initialisation
            with self._capture_stream() if on_cuda else contextlib.nullcontext():
                self.forwards[size] = self._capture(args, pool)

    @contextlib.contextmanager
    def _capture_stream(self) -> Iterator[None]:
        """CUDA captures run on a side stream, after and before everything on the current one."""
        current = torch.cuda.current_stream(self.device)
        stream = torch.cuda.Stream(self.device)
        torch.cuda.synchronize(self.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            yield
        current.wait_stream(stream)
        torch.cuda.synchronize(self.device)

    def _capture(self, args: tuple, pool: object) -> CapturedForward:
        pieces = [self.new_graph()]
        calls: list[AttentionCall] = []

        def split(call: AttentionCall) -> torch.Tensor:
            pieces[-1].capture_end()
            calls.append(call)
            pieces.append(self.new_graph())
            pieces[-1].capture_begin(pool=pool)
            return call.out

        self.attention.split = split
        pieces[0].capture_begin(pool=pool)
        try:
            hidden = self.model(*args)
        finally:  # a capture left open would break every later launch on this stream
            pieces[-1].capture_end()
            self.attention.split = None
        return CapturedForward(pieces, calls, hidden)
