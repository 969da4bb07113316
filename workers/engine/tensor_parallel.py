"""Tensor parallelism across processes: one process per GPU (NCCL), or per CPU rank (gloo).

The engine process is rank 0: it schedules, flattens each step on the host and broadcasts
that small description on a gloo control group; every rank then runs the same forward, whose
collectives (all-reduce, all-gather) go over the model group. Only rank 0 samples; with
asynchronous scheduling it broadcasts the sampled ids over the model group (on the device, no
host wait), since the next step's decode inputs are those ids before the host has seen them.

Teardown is collective: NCCL communicators are destroyed by every rank together (a rank that
exits first leaves its peers waiting forever in `destroy_process_group`), so all ranks meet at
a barrier, destroy, and only then does rank 0 join the processes. Every wait has a deadline
and a hang is logged loudly instead of blocking the engine's shutdown.
"""

from __future__ import annotations

import datetime
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.models.parallel import TensorParallel

logger = logging.getLogger(__name__)

# Group creation and every collective fail after this (NCCL's watchdog aborts the rank), so a
# lost peer is an error in minutes, never a silent hang.
_COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=5)
_TEARDOWN_TIMEOUT_S = 60.0
# What a rank must see exactly as the engine process does (NVLink multicast stays off where the
# machine turns it off; NCCL tuning, visible devices).
_INHERITED_ENV_PREFIXES = ("NCCL_", "TORCH_NCCL_", "TORCH_SYMM_MEM_", "NVSHMEM_", "CUDA_")


@dataclass(slots=True)
class TensorParallelContext:
    """This process's share: its `TensorParallel` slice, the control group for step
    broadcasts, and (on rank 0) the worker processes it started and the rendezvous folder."""

    tp: TensorParallel
    control_group: Any
    processes: list[Any] = field(default_factory=list)
    rendezvous_dir: str | None = None

    @property
    def is_driver(self) -> bool:
        return self.tp.rank == 0

    def broadcast(self, payload: object | None) -> object | None:
        """Rank 0 sends `payload` (None means stop); the other ranks receive it."""
        box = [payload]
        dist.broadcast_object_list(box, src=0, group=self.control_group)
        return box[0]

    def shutdown(self) -> None:
        if self.is_driver and self.tp.size > 1:
            self.broadcast(None)
        teardown(self.control_group)
        for process in self.processes:
            process.join(timeout=_TEARDOWN_TIMEOUT_S)
            if process.is_alive():
                logger.error("tensor-parallel rank %s did not exit; killing it", process.name)
                process.kill()
                process.join(timeout=10)
        if self.rendezvous_dir is not None:
            shutil.rmtree(self.rendezvous_dir, ignore_errors=True)


def teardown(control_group: Any) -> None:
    """Every rank: finish device work, meet the others, destroy the groups together."""
    if not dist.is_initialized():
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    if dist.get_world_size() > 1:
        dist.barrier(group=control_group)  # gloo aborts a rank whose peer hangs up first
    done = threading.Event()

    def destroy() -> None:
        dist.destroy_process_group()
        done.set()

    threading.Thread(target=destroy, name="pagefleet-tp-teardown", daemon=True).start()
    if not done.wait(_TEARDOWN_TIMEOUT_S):
        logger.error("destroy_process_group did not return within %.0f s: abandoning the "
                     "communicators (a peer rank is gone or stuck)", _TEARDOWN_TIMEOUT_S)


def _init(config: EngineConfig, rank: int, init_method: str) -> TensorParallelContext:
    size = config.tensor_parallel_size
    use_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method, rank=rank,
                            world_size=size, timeout=_COLLECTIVE_TIMEOUT)
    control = (dist.new_group(backend="gloo", timeout=_COLLECTIVE_TIMEOUT) if use_cuda
               else dist.group.WORLD)
    return TensorParallelContext(TensorParallel(rank, size, dist.group.WORLD), control)


def launch(config: EngineConfig) -> TensorParallelContext:
    """Start ranks 1..N-1 and join them as rank 0.

    The ranks meet through a file in a private folder rather than a TCP port: a port picked by
    bind-then-release can be taken by another process before rank 0 binds it again.
    """
    rendezvous_dir = tempfile.mkdtemp(prefix="pagefleet-tp-")
    init_method = Path(rendezvous_dir, "rendezvous").as_uri()
    ctx = mp.get_context("spawn")
    inherited = {k: v for k, v in os.environ.items() if k.startswith(_INHERITED_ENV_PREFIXES)}
    processes = [
        ctx.Process(target=_worker_main, args=(config, rank, init_method, inherited), daemon=True,
                    name=f"pagefleet-tp{rank}")
        for rank in range(1, config.tensor_parallel_size)
    ]
    for process in processes:
        process.start()
    context = _init(config, 0, init_method)
    context.processes = processes
    context.rendezvous_dir = rendezvous_dir
    return context


def _worker_main(config: EngineConfig, rank: int, init_method: str, env: dict[str, str]) -> None:
    """A non-driver rank: build the same runner, then replay whatever steps rank 0 sends."""
    os.environ.update(env)
    from pagefleet.workers.engine.model_runner import ModelRunner
    from pagefleet.workers.models.loader import resolve_model

    context = _init(config, rank, init_method)
    runner = ModelRunner(config, resolve_model(config.model, load_format=config.load_format),
                         tp_context=context)
    sampled = None  # the previous step's choices (asynchronous scheduling), as rank 0 sent them
    while (step := context.broadcast(None)) is not None:
        runner.execute_host(step, sampled)
        if runner.settings.async_scheduling and step.sample_indices.size:
            sampled = runner.tp.broadcast_from_driver(
                torch.empty(step.sample_indices.size, dtype=torch.long, device=runner.device))
    teardown(context.control_group)
