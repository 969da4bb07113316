"""The data plane: engine, models, attention backends and the Redis worker runtime.

`from pagefleet.workers import LLM, SamplingParams` is the vLLM-compatible offline API.
"""

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.llm import LLM
from pagefleet.workers.engine.outputs import CompletionOutput, RequestOutput

__all__ = ["LLM", "CompletionOutput", "EngineConfig", "RequestOutput", "SamplingParams"]
