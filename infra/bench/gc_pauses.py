"""Garbage-collection pauses inside an engine's generate calls, with and without the start-up
heap frozen (`workers/engine/gc_freeze.py`). CPU, a tiny random Llama, 256 sequences:
    python infra/bench/gc_pauses.py plain|freeze
"""

from __future__ import annotations

import gc
import random
import sys
import tempfile
import time
from pathlib import Path

from pagefleet.workers import LLM, SamplingParams
from pagefleet.workers.engine.gc_freeze import freeze_startup_heap
from tests.unit.workers.models.tiny import write_tiny_checkpoint


def main(mode: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = write_tiny_checkpoint(Path(folder), "llama3-tied", weights=False)
        llm = LLM(model=str(checkpoint), load_format="dummy", max_num_seqs=256, max_model_len=256,
                  dtype="float32")
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 100) for _ in range(32)] for _ in range(256)]
    params = SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
    llm.generate(prompts[:8], params)
    if mode == "freeze":
        freeze_startup_heap()
    counts, seconds, started = [0, 0, 0], [0.0, 0.0, 0.0], [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            counts[info["generation"]] += 1
            seconds[info["generation"]] += time.perf_counter() - started[0]

    gc.callbacks.append(on_gc)
    print(f"{mode}: objects the collector tracks {len(gc.get_objects())}")
    for run in range(3):
        counts[:], seconds[:] = [0, 0, 0], [0.0, 0.0, 0.0]
        start = time.perf_counter()
        llm.generate(prompts, params)
        print(f"{mode} run {run}: {time.perf_counter() - start:.3f} s; collections by generation "
              f"{counts}, seconds {[round(s, 3) for s in seconds]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "plain")
