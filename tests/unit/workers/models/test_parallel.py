"""Tensor parallelism: two gloo ranks must produce the logits of the unsharded model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pagefleet.workers.models.loader import build_model, resolve_model
from pagefleet.workers.models.parallel import TensorParallel
from tests.unit.workers.models.paged import PagedCache
from tests.unit.workers.models.tiny import write_tiny_checkpoint

# llama3-tied: vocab 101 is odd, so the vocabulary shards are padded; qwen2-bias: sharded q/k/v
# biases and an untied head; qwen3: whole per-head q/k norms on every rank; phi3: fused
# checkpoint tensors split into per-rank shards, partial rotary.
VARIANTS = ("llama3-tied", "qwen2-bias", "qwen3", "phi3")
PROMPTS = {0: [5, 17, 42, 8, 95, 3, 64, 2, 11], 1: [7, 7, 1, 90]}


def logits_of(folder: Path, tp: TensorParallel) -> torch.Tensor:
    """Dummy weights (same seed on every rank), one prefill step of two sequences."""
    resolved = resolve_model(str(folder), "dummy")
    model = build_model(resolved, load_format="dummy", tp=tp, seed=7)
    cache = PagedCache(resolved.arch, num_blocks=16, block_size=4, tp_size=tp.size)
    step = cache.step(PROMPTS)
    with torch.no_grad():
        hidden = model(step.input_ids, step.positions, cache.kv_caches, step.metadata)
        return model.compute_logits(hidden)


def tp_worker(rank: int, rendezvous: Path, folders: list[Path], out_dir: Path) -> None:
    torch.set_num_threads(1)
    # A file rendezvous, not a TCP port: a port picked by bind-then-release can be taken by
    # another test before rank 0 binds it again, which made this test flaky in full runs.
    dist.init_process_group("gloo", init_method=rendezvous.as_uri(), rank=rank, world_size=2)
    try:
        tp = TensorParallel(rank=rank, size=2, group=dist.group.WORLD)
        for folder in folders:
            torch.save(logits_of(folder, tp), out_dir / f"{folder.name}-rank{rank}.pt")
        dist.barrier()  # leave together: gloo aborts a rank whose peer hangs up first
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_single_process(tmp_path: Path) -> None:
    folders = [write_tiny_checkpoint(tmp_path / v, v, weights=False) for v in VARIANTS]
    try:
        mp.spawn(tp_worker, args=(tmp_path / "rendezvous", folders, tmp_path), nprocs=2, join=True)
    except mp.ProcessExitedException:
        # gloo's teardown can abort a rank after the work ("terminate called without an active
        # exception", seen once in a full CI run): what is compared are the logits both ranks
        # saved before it, so only a rank that died before saving them fails the test.
        if not all((tmp_path / f"{f.name}-rank{r}.pt").exists() for f in folders for r in range(2)):
            raise
    for folder in folders:
        expected = logits_of(folder, TensorParallel())
        assert expected.shape == (sum(map(len, PROMPTS.values())), int(expected.shape[1]))
        assert expected.std() > 0.1  # weights large enough that a wrong shard would show
        for rank in range(2):
            got = torch.load(tmp_path / f"{folder.name}-rank{rank}.pt")
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_size_one_never_calls_collectives(tmp_path: Path, monkeypatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("collective called with tensor-parallel size 1")

    monkeypatch.setattr(dist, "all_reduce", forbidden)
    monkeypatch.setattr(dist, "all_gather", forbidden)
    folder = write_tiny_checkpoint(tmp_path / "c", "qwen2-bias", weights=False)
    assert torch.isfinite(logits_of(folder, TensorParallel())).all()


def test_tensor_parallel_validates_rank() -> None:
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        TensorParallel(rank=2, size=2)
