"""The data plane: engine, models, attention backends and the Redis worker runtime.

`from pagefleet.workers import LLM, SamplingParams` is the vLLM-compatible offline API. The
names are loaded on first use (PEP 562), so importing a torch-free part such as the worker
runtime's settings (which the CLI's `pagefleet worker` flags are built from) does not import
torch and the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pagefleet.platform.protocol.sampling import SamplingParams
    from pagefleet.workers.engine.config import EngineConfig
    from pagefleet.workers.engine.llm import LLM
    from pagefleet.workers.engine.outputs import CompletionOutput, RequestOutput

_MODULE_OF = {
    "LLM": "pagefleet.workers.engine.llm",
    "CompletionOutput": "pagefleet.workers.engine.outputs",
    "EngineConfig": "pagefleet.workers.engine.config",
    "RequestOutput": "pagefleet.workers.engine.outputs",
    "SamplingParams": "pagefleet.platform.protocol.sampling",
}

__all__ = ["LLM", "CompletionOutput", "EngineConfig", "RequestOutput", "SamplingParams"]


def __getattr__(name: str) -> object:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
