"""A dummy preset's cold start never imports transformers.

Importing transformers (and the config class it loads on first use) was most of a dummy 8B
worker's readiness on the H200 (issue 15: 7.6 of 13.9 s), and a preset needs nothing from it.
A fresh interpreter is the only place to see it: other tests import transformers.
"""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = """
import json
import sys
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.llm_engine import LLMEngine

engine = LLMEngine(EngineConfig(model="smollm2-135m", load_format="dummy", max_model_len=64,
                                max_num_seqs=2, device="cpu"))
engine.add_request("r", list(range(100, 108)),
                   SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True))
while not any(delta.token_ids for delta in engine.step()):
    pass
engine.shutdown()
print(json.dumps({"phases": [phase.name for phase in engine.phases.phases],
                  "transformers": sorted(m for m in sys.modules if m.split(".")[0] == "transformers")}))
"""


def test_preset_engine_reaches_its_first_token_without_transformers() -> None:
    done = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["phases"][:2] == ["tokenizer_loaded", "weights_loaded"]
    assert report["transformers"] == []
