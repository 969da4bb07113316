"""Piecewise graphs on the CPU: the capture splits at every attention call, and replays,
with attention run eagerly between the pieces, compute what the eager forward does.

CUDA graphs need a GPU (tests/gpu has the engine-level test); here `EmulatedGraph` stands in
with a graph's semantics: a replay recomputes its piece from the tensors the capture read
and writes the tensors the capture wrote. It does so by running the forward again in a
thread on the captured inputs, paused at each attention call, so the orchestration under test
(padding, the pieces' order, attention on the real rows with the step's metadata, the output
buffers) is the production code.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
import torch

from pagefleet.workers.attention import TorchAttentionBackend
from pagefleet.workers.engine.piecewise_graphs import (
    AttentionCall,
    CapturedForward,
    PiecewiseGraphs,
    SplittingAttention,
    piecewise_sizes,
)
from pagefleet.workers.models.loader import build_model, resolve_model
from tests.unit.workers.models.paged import PagedCache, Step
from tests.unit.workers.models.tiny import write_tiny_checkpoint


class EmulatedGraph:
    """One piece. Capturing does nothing (the forward runs eagerly meanwhile); replaying
    piece i resumes its forward's thread up to attention call i, or to the end."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.forward: EmulatedForward | None = None
        self.index = 0

    def capture_begin(self, pool: object = None) -> None:
        self.log.append("begin")

    def capture_end(self) -> None:
        self.log.append("end")

    def replay(self) -> None:
        assert self.forward is not None, "bind() the captured forwards first"
        self.forward.replay_piece(self.index)


class EmulatedForward:
    """Re-runs one captured forward piece by piece, copying what each piece produces into
    the tensors the capture kept (the addresses a graph would have written)."""

    def __init__(self, graphs: PiecewiseGraphs, size: int, captured: CapturedForward) -> None:
        self.graphs, self.size, self.captured = graphs, size, captured
        self.reached: queue.Queue[object] = queue.Queue()
        self.resume: queue.Queue[None] = queue.Queue()
        self._calls_seen = 0
        for index, piece in enumerate(captured.pieces):
            piece.forward, piece.index = self, index

    def replay_piece(self, index: int) -> None:
        if index == 0:
            threading.Thread(target=self._forward, daemon=True).start()
        else:
            self.resume.put(None)
        result = self.reached.get(timeout=60)
        if isinstance(result, BaseException):
            raise result

    def _split(self, call: AttentionCall) -> torch.Tensor:
        index = self._calls_seen
        self._calls_seen += 1
        kept = self.captured.calls[index]
        for name in ("q", "k", "v"):
            getattr(kept, name).copy_(getattr(call, name))
        self.reached.put(index)
        self.resume.get(timeout=60)
        return kept.out

    def _forward(self) -> None:
        self._calls_seen = 0
        g = self.graphs
        g.attention.split = self._split
        try:
            with torch.inference_mode():
                hidden = g.model(g.input_ids[: self.size], g.positions[: self.size], g.kv_caches,
                                 g._warm_up_metadata(self.size))
                self.captured.hidden.copy_(hidden)
            self.reached.put("done")
        except BaseException as error:  # handed to the replaying thread
            self.reached.put(error)
        finally:
            g.attention.split = None


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory):
    return resolve_model(str(write_tiny_checkpoint(tmp_path_factory.mktemp("m"), "qwen3")))


def _piecewise(resolved, max_tokens: int) -> tuple[PiecewiseGraphs, PagedCache, list[str]]:
    attention = SplittingAttention(TorchAttentionBackend())
    model = build_model(resolved, attention=attention)
    cache = PagedCache(resolved.arch, num_blocks=40, block_size=4, seed=3)
    log: list[str] = []
    graphs = PiecewiseGraphs(model, attention, cache.kv_caches, max_tokens, cache.block_size,
                             null_block=0, device=torch.device("cpu"),
                             new_graph=lambda: EmulatedGraph(log))
    for size, captured in graphs.forwards.items():
        EmulatedForward(graphs, size, captured)
    return graphs, cache, log


def test_capture_splits_at_every_attention_call(resolved) -> None:
    graphs, cache, log = _piecewise(resolved, max_tokens=32)
    layers = resolved.arch.num_layers
    assert sorted(graphs.forwards) == [16, 32]
    for size, captured in graphs.forwards.items():
        assert len(captured.pieces) == layers + 1 and len(captured.calls) == layers
        assert all(call.q.shape[0] == size and call.out.shape == call.q.shape for call in captured.calls)
        assert [call.k_cache for call in captured.calls] == [k for k, _ in cache.kv_caches]
        assert captured.hidden.shape == (size, resolved.arch.hidden_size)
    assert log == ["begin", "end"] * (2 * (layers + 1))  # pieces never overlap
    assert graphs.attention.split is None


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory: pytest.TempPathFactory):
    """Gemma 2 shrunk: sliding and global layers, attention soft-caps (per-call arguments)."""
    from tests.unit.workers.models.test_gemma import build_hf

    folder = tmp_path_factory.mktemp("gemma2")
    build_hf("gemma2").save_pretrained(folder)
    return resolve_model(str(folder))


@pytest.mark.parametrize("family", ["qwen3", "gemma2"])
def test_replays_compute_the_eager_forward(request: pytest.FixtureRequest, family: str) -> None:
    """Two mixed steps (prompt chunks beside decodes) of different token counts: the hidden
    states and the KV cache after each equal the eager forward's on a twin cache."""
    resolved = request.getfixturevalue("resolved" if family == "qwen3" else "gemma2")
    graphs, cache, _ = _piecewise(resolved, max_tokens=32)
    eager_cache = PagedCache(resolved.arch, num_blocks=40, block_size=4, seed=3)
    generator = torch.Generator().manual_seed(11)

    def ids(n: int) -> list[int]:
        return torch.randint(3, resolved.arch.vocab_size, (n,), generator=generator).tolist()

    steps = [{0: ids(20), 1: ids(7)}, {0: ids(1), 1: ids(1), 2: ids(9)}]  # 27 and 11 tokens
    for chunks in steps:
        step: Step = cache.step(chunks)
        eager_step = eager_cache.step(chunks)
        with torch.inference_mode():
            ours = graphs.run(step.input_ids, step.positions, step.metadata).clone()
            reference = graphs.model(eager_step.input_ids, eager_step.positions,
                                     eager_cache.kv_caches, eager_step.metadata)
        assert ours.shape == reference.shape
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
        for (k, v), (k_ref, v_ref) in zip(cache.kv_caches, eager_cache.kv_caches, strict=True):
            torch.testing.assert_close(k[1:], k_ref[1:], rtol=1e-5, atol=1e-5)  # block 0: scratch
            torch.testing.assert_close(v[1:], v_ref[1:], rtol=1e-5, atol=1e-5)


def test_sizes_and_what_runs_eagerly(resolved) -> None:
    assert piecewise_sizes(8192) == [16, 32, 64, 128, 256, 512]
    assert piecewise_sizes(100) == [16, 32, 64, 100]
    assert piecewise_sizes(16) == [16]
    graphs, _, _ = _piecewise(resolved, max_tokens=16)
    assert graphs.can_run(16) and not graphs.can_run(17) and not graphs.can_run(0)


def test_splitting_attention_passes_through_outside_a_capture(resolved) -> None:
    """Built into the model, the wrapper leaves eager forwards as they were."""
    plain = build_model(resolved)
    wrapped = build_model(resolved, attention=SplittingAttention(TorchAttentionBackend()))
    caches = [PagedCache(resolved.arch, num_blocks=40, block_size=4, seed=3) for _ in range(2)]
    chunks = {0: list(range(3, 15)), 1: list(range(20, 25))}
    with torch.inference_mode():
        outs = [m(s.input_ids, s.positions, c.kv_caches, s.metadata)
                for m, c in zip((plain, wrapped), caches, strict=True) for s in [c.step(chunks)]]
    assert torch.equal(outs[0], outs[1])


def test_a_failed_capture_is_closed(resolved, tmp_path: Path) -> None:
    """An error inside the forward still ends the running capture (an open one would break
    every later launch on its stream) and leaves the attention passing through."""
    attention = SplittingAttention(TorchAttentionBackend())
    model = build_model(resolved, attention=attention)
    cache = PagedCache(resolved.arch, num_blocks=40, block_size=4, seed=3)
    log: list[str] = []
    calls = 0

    def failing_forward(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > 1:  # the warm-up passes, the capture fails
            raise RuntimeError("boom")
        return type(model).forward(model, *args, **kwargs)

    model.forward = failing_forward
    with pytest.raises(RuntimeError, match="boom"):
        PiecewiseGraphs(model, attention, cache.kv_caches, 16, cache.block_size, null_block=0,
                        device=torch.device("cpu"), new_graph=lambda: EmulatedGraph(log))
    assert log == ["begin", "end"] and attention.split is None
