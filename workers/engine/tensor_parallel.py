"""Tensor parallelism across processes: one process per GPU (NCCL), or per CPU rank (gloo).

The engine process is rank 0: it schedules, flattens each step on the host and broadcasts
that small description on a gloo control group; every rank then runs the same forward, whose
collectives (all-reduce, all-gather) go over the model group. Only rank 0 samples.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import socket
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.models.parallel import TensorParallel

_INIT_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(slots=True)
class TensorParallelContext:
    """This process's share: its `TensorParallel` slice, the control group for step
    broadcasts, and (on rank 0) the worker processes it started."""

    tp: TensorParallel
    control_group: Any
    processes: list[Any] = field(default_factory=list)

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
            dist.barrier(group=self.control_group)  # gloo aborts a rank whose peer hangs up first
            for process in self.processes:
                process.join(timeout=60)
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _init(config: EngineConfig, rank: int, init_method: str) -> TensorParallelContext:
    size = config.tensor_parallel_size
    use_cuda = config.device.startswith("cuda") or (config.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method, rank=rank,
                            world_size=size, timeout=_INIT_TIMEOUT)
    control = dist.new_group(backend="gloo") if use_cuda else dist.group.WORLD
    return TensorParallelContext(TensorParallel(rank, size, dist.group.WORLD), control)


def launch(config: EngineConfig) -> TensorParallelContext:
    """Start ranks 1..N-1 and join them as rank 0."""
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    ctx = mp.get_context("spawn")
    processes = [
        ctx.Process(target=_worker_main, args=(config, rank, init_method), daemon=True,
                    name=f"pagefleet-tp{rank}")
        for rank in range(1, config.tensor_parallel_size)
    ]
    for process in processes:
        process.start()
    context = _init(config, 0, init_method)
    context.processes = processes
    return context


def _worker_main(config: EngineConfig, rank: int, init_method: str) -> None:
    """A non-driver rank: build the same runner, then replay whatever steps rank 0 sends."""
    from pagefleet.workers.engine.model_runner import ModelRunner
    from pagefleet.workers.models.loader import resolve_model

    context = _init(config, rank, init_method)
    runner = ModelRunner(config, resolve_model(config.model, load_format=config.load_format),
                         tp_context=context)
    while (step := context.broadcast(None)) is not None:
        runner.execute_host(step)
    dist.barrier(group=context.control_group)
    dist.destroy_process_group()
