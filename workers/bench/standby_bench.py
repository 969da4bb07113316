"""`pagefleet bench engine --standby-cycles N`: how long a model takes to sleep and to wake.

Builds the engine, generates greedily from a few fixed prompts, then sleeps and wakes it N
times, timing each sleep and each wake phase (weights host-to-device, KV cache, CUDA graph
capture), the device memory held awake and asleep, and checking after every wake that the
same prompts give the same tokens. Token-id prompts, so dummy weights without a tokenizer
work (8B shapes on a GPU are the case that matters: the target is a wake within 2 s).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.llm import LLM

_PROMPTS = [[(7 * i + 13 * j) % 1000 + 10 for j in range(32 + 8 * i)] for i in range(4)]
_GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


@dataclass(frozen=True, slots=True)
class StandbyCycle:
    sleep_s: float
    wake_s: float
    weights_s: float
    kv_cache_s: float
    graphs_s: float
    device_bytes_asleep: int
    same_tokens: bool


def _generate(llm: LLM) -> list[list[int]]:
    return [list(output.outputs[0].token_ids) for output in llm.generate(_PROMPTS, _GREEDY)]


def _device_bytes(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def run_standby_bench(config: EngineConfig, num_cycles: int, json_path: Path | None = None) -> list[StandbyCycle]:
    start = time.perf_counter()
    llm = LLM(**asdict(config))
    engine = llm.engine
    device = engine.settings.device
    print(f"engine ready in {time.perf_counter() - start:.2f} s on {device}; "
          f"{engine.runner.num_params / 1e9:.2f} B parameters, {engine.settings.num_kv_blocks} KV blocks")
    reference = _generate(llm)
    awake_bytes = _device_bytes(device)
    cycles = []
    for _ in range(num_cycles):
        start = time.perf_counter()
        engine.sleep()
        sleep_s = time.perf_counter() - start
        asleep_bytes = _device_bytes(device)
        start = time.perf_counter()
        times = engine.wake()
        wake_s = time.perf_counter() - start
        cycles.append(StandbyCycle(sleep_s, wake_s, times.weights_s, times.kv_cache_s,
                                   times.graphs_s, asleep_bytes, _generate(llm) == reference))
    print(f"device memory awake {awake_bytes / 2**30:.2f} GiB")
    print(f"{'cycle':>5} {'sleep s':>8} {'wake s':>8} {'weights':>8} {'kv':>8} {'graphs':>8} "
          f"{'asleep GiB':>10} {'same tokens':>11}")
    for i, c in enumerate(cycles):
        print(f"{i:>5} {c.sleep_s:>8.3f} {c.wake_s:>8.3f} {c.weights_s:>8.3f} {c.kv_cache_s:>8.3f} "
              f"{c.graphs_s:>8.3f} {c.device_bytes_asleep / 2**30:>10.2f} {c.same_tokens!s:>11}")
    if json_path is not None:
        json_path.write_text(json.dumps({"model": config.model, "device": str(device),
                                         "awake_bytes": awake_bytes,
                                         "cycles": [asdict(c) for c in cycles]}, indent=2))
    engine.shutdown()
    return cycles
