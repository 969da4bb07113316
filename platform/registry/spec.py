"""The registry's data model: one frozen, validated spec per model.

These structs are the contract between the controller (which builds Deployments and scales
them), the worker runtime (which builds its engine from `EngineSettings`) and operators (who
write the YAML). Every check happens in `__post_init__`, so an invalid spec cannot exist; the
loader adds the model name and key path to each message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from pagefleet.platform.protocol.tools import DEFAULT_TOOL_PARSER, TOOL_PARSERS

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_LOAD_FORMATS = ("auto", "dummy")
_ATTENTION_BACKENDS = ("torch", "triton")
_QUANTIZATIONS = (None, "fp8", "int4", "int8")  # = workers.engine.config.QUANTIZATIONS
KV_CACHE_DTYPES = ("auto", "fp8")  # EngineConfig's too (a unit test holds them equal)
_TOLERATION_OPERATORS = ("Exists", "Equal")
TASKS = ("generate", "embed")  # /v1/completions + /v1/chat/completions, or /v1/embeddings
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# A Kubernetes resource quantity such as 16Gi, 500m, 4 or 1.5e3 (the API server's grammar).
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE]|[un])?$")
# Model names become Deployment names (`pf-worker-<name>`), label values and Redis keys.
MODEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,50}[a-z0-9])?$")
CPU = "cpu"


class RegistryError(ValueError):
    """A registry file that cannot be used; the message names the model and key."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_quantity(key: str, value: str | None) -> None:
    _require(value is None or (isinstance(value, str) and bool(_QUANTITY.match(value))),
             f"{key} must be a Kubernetes quantity such as '16Gi' or '500m', got {value!r}")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Engine arguments by vLLM's names; unset ones (None) keep the engine's defaults."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    dtype: str | None = None
    block_size: int | None = None
    gpu_memory_utilization: float | None = None
    enable_prefix_caching: bool | None = None
    enforce_eager: bool | None = None
    tensor_parallel_size: int | None = None
    num_kv_blocks: int | None = None
    attention_backend: str | None = None
    load_format: str | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    swap_space: float | None = None
    piecewise_graphs: bool | None = None

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens",
                     "tensor_parallel_size", "num_kv_blocks"):
            value = getattr(self, name)
            _require(value is None or (_is_int(value) and value >= 1),
                     f"{name} must be an integer of at least 1, got {value!r}")
        for name in ("enable_prefix_caching", "enforce_eager", "piecewise_graphs"):
            value = getattr(self, name)
            _require(value is None or isinstance(value, bool), f"{name} must be true or false, got {value!r}")
        _require(self.block_size is None or (_is_int(self.block_size) and self.block_size >= 1
                                             and self.block_size & (self.block_size - 1) == 0),
                 f"block_size must be a power of two, got {self.block_size!r}")
        _require(self.gpu_memory_utilization is None
                 or (_is_number(self.gpu_memory_utilization) and 0.0 < self.gpu_memory_utilization <= 1.0),
                 f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        _require(self.swap_space is None or (_is_number(self.swap_space) and self.swap_space >= 0),
                 f"swap_space must be a non-negative number of GiB, got {self.swap_space!r}")
        _require(self.dtype is None or self.dtype in _DTYPES,
                 f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        _require(self.load_format is None or self.load_format in _LOAD_FORMATS,
                 f"load_format must be one of {_LOAD_FORMATS}, got {self.load_format!r}")
        _require(self.quantization in _QUANTIZATIONS,
                 f"quantization must be one of {_QUANTIZATIONS}, got {self.quantization!r}")
        _require(self.kv_cache_dtype is None or self.kv_cache_dtype in KV_CACHE_DTYPES,
                 f"kv_cache_dtype must be one of {KV_CACHE_DTYPES}, got {self.kv_cache_dtype!r}")
        _require(self.attention_backend is None or self.attention_backend in _ATTENTION_BACKENDS,
                 f"attention_backend must be one of {_ATTENTION_BACKENDS}, got {self.attention_backend!r}")

    def as_engine_kwargs(self) -> dict[str, Any]:
        """Only the settings the registry sets, ready for `EngineConfig(model=..., **kwargs)`."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod toleration, in Kubernetes' field names (snake_case)."""

    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def __post_init__(self) -> None:
        _require(self.operator in _TOLERATION_OPERATORS,
                 f"operator must be one of {_TOLERATION_OPERATORS}, got {self.operator!r}")
        _require(self.effect is None or self.effect in _TOLERATION_EFFECTS,
                 f"effect must be one of {_TOLERATION_EFFECTS}, got {self.effect!r}")
        _require(not (self.operator == "Exists" and self.value is not None),
                 "a toleration with operator Exists must not have a value")
        _require(self.key is not None or self.operator == "Exists",
                 "a toleration without a key must use operator Exists")

    def as_manifest(self) -> dict[str, Any]:
        names = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
                 "toleration_seconds": "tolerationSeconds"}
        return {names[f.name]: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class GpuProfile:
    """Where and how a model's worker pod runs.

    `accelerator` is `cpu` or an extended resource name such as `nvidia.com/gpu`; `count` GPUs
    are requested per pod and split into `tensor_parallel_size` shards (one pod = one replica).
    `model_cache_pvc` names a PersistentVolumeClaim mounted at `model_cache_path` so a cold
    start reads weights from a warm cache instead of the network.
    """

    accelerator: str = CPU
    count: int = 1
    tensor_parallel_size: int = 1
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()
    cpu: str | None = None
    memory: str | None = None
    shm: str | None = None
    model_cache_pvc: str | None = None
    model_cache_path: str = "/models"
    image: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.accelerator, str) and bool(self.accelerator),
                 f"accelerator must be 'cpu' or a resource name like 'nvidia.com/gpu', got {self.accelerator!r}")
        _require(_is_int(self.count) and self.count >= 1, f"count must be at least 1, got {self.count!r}")
        _require(_is_int(self.tensor_parallel_size) and self.tensor_parallel_size >= 1,
                 f"tensor_parallel_size must be at least 1, got {self.tensor_parallel_size!r}")
        if self.accelerator != CPU:
            _require(self.count % self.tensor_parallel_size == 0,
                     f"tensor_parallel_size {self.tensor_parallel_size} must divide count {self.count}")
        _require(all(isinstance(k, str) and isinstance(v, str) for k, v in self.node_selector.items()),
                 "node_selector must map strings to strings (quote numbers and booleans)")
        _check_quantity("cpu", self.cpu)
        _check_quantity("memory", self.memory)
        _check_quantity("shm", self.shm)
        _require(self.model_cache_path.startswith("/"),
                 f"model_cache_path must be absolute, got {self.model_cache_path!r}")

    @property
    def is_gpu(self) -> bool:
        return self.accelerator != CPU


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """How one model scales; the defaults suit LLM workers (slow cold starts, costly GPUs).

    Compared with the usual anchors (Knative: 60 s stable window, 6 s panic window; KEDA: 30 s
    polling, 300 s cooldown; Ray Serve: 30 s upscale delay) scale-up reacts within a tick or two
    because a queued LLM request waits for a whole cold start; scale-down stays slow because
    bringing a GPU worker back costs a model load.

    Idle means zero or standby: with `standby_after_s` set, a worker idle that long sleeps
    (weights to pinned host memory, KV cache and graphs freed, the process kept), so the GPU
    is free for other models and the next request wakes it in seconds instead of a cold
    start; the replica still goes to zero after `scale_to_zero_after_s` (which may be much
    longer, or the standby kept with `min_replicas: 1`). None: idle means zero only.
    """

    min_replicas: int = 0
    max_replicas: int = 1
    target_in_flight: int = 16
    scale_to_zero_after_s: float = 300.0
    scale_up_window_s: float = 2.0
    scale_down_window_s: float = 60.0
    max_scale_up_step: int = 4
    panic_threshold: float = 2.0
    batch_wake_after_s: float = 0.0  # how long batch-only work waits before waking from zero
    standby_after_s: float | None = None

    def __post_init__(self) -> None:
        _require(_is_int(self.min_replicas) and self.min_replicas >= 0,
                 f"min_replicas must be a non-negative integer, got {self.min_replicas!r}")
        _require(_is_int(self.max_replicas) and self.max_replicas >= 1,
                 f"max_replicas must be at least 1, got {self.max_replicas!r}")
        _require(self.min_replicas <= self.max_replicas,
                 f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})")
        _require(_is_int(self.target_in_flight) and self.target_in_flight >= 1,
                 f"target_in_flight must be at least 1, got {self.target_in_flight!r}")
        _require(_is_int(self.max_scale_up_step) and self.max_scale_up_step >= 1,
                 f"max_scale_up_step must be at least 1, got {self.max_scale_up_step!r}")
        for name in ("scale_to_zero_after_s", "scale_up_window_s", "scale_down_window_s",
                     "batch_wake_after_s"):
            value = getattr(self, name)
            _require(_is_number(value) and value >= 0, f"{name} must be a non-negative number, got {value!r}")
        _require(self.standby_after_s is None
                 or (_is_number(self.standby_after_s) and self.standby_after_s >= 0),
                 f"standby_after_s must be a non-negative number or null, got {self.standby_after_s!r}")
        _require(_is_number(self.panic_threshold) and self.panic_threshold > 1.0,
                 f"panic_threshold must be greater than 1, got {self.panic_threshold!r}")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One servable model: what to load, with which engine settings, where, and how it scales.

    `task: embed` serves `/v1/embeddings` (an encoder or a decoder embedding model) instead of
    generation; `matryoshka` says its vectors may be cut to a requested `dimensions` (models
    trained with Matryoshka representation learning, e.g. Qwen3-Embedding), which is refused
    for any other model because a cut vector of those is not a meaningful embedding.
    `tool_parser` names the format its tool calls come in (`hermes` or `llama3_json`).

    `synthetic_step_ms` makes the model a benchmark device: the worker builds no model (no
    torch, `source` unused) but `SyntheticEngine` (workers/bench/synthetic_engine.py), which
    emits one token per running request every that many milliseconds, within `engine`'s
    `max_num_seqs` and `max_model_len`. It measures the platform at GPU step rates on any
    machine (`pagefleet bench serve --overhead --synthetic-step-ms 3`); it serves no answers.

    `engine_process` runs a generation engine's loop in its own process (an engine core,
    workers/engine/core_process.py) instead of a thread of the worker, so the engine and the
    worker's Redis and HTTP work do not share one GIL. Null (the default) means: in its own
    process on a GPU profile, where the engine steps in milliseconds and the worker's share of
    the GIL costs throughput; in a thread on a CPU profile, where steps are slow and a second
    process would only add start-up time and memory. Embedding models always run in a thread.
    """

    name: str
    source: str
    engine: EngineSettings = field(default_factory=EngineSettings)
    profile: GpuProfile = field(default_factory=GpuProfile)
    scaling: ScalingPolicy = field(default_factory=ScalingPolicy)
    tool_parser: str = DEFAULT_TOOL_PARSER
    task: str = "generate"
    matryoshka: bool = False
    synthetic_step_ms: float | None = None
    engine_process: bool | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and bool(MODEL_NAME.match(self.name)),
                 f"name must be lower-case letters, digits, '-' or '.' (at most 52), got {self.name!r}")
        _require(isinstance(self.source, str) and bool(self.source), f"source must be a non-empty string, got {self.source!r}")
        _require(self.tool_parser in TOOL_PARSERS,
                 f"tool_parser must be one of {TOOL_PARSERS}, got {self.tool_parser!r}")
        _require(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        _require(isinstance(self.matryoshka, bool), f"matryoshka must be true or false, got {self.matryoshka!r}")
        _require(not self.matryoshka or self.task == "embed", "matryoshka needs task: embed")
        _require(self.synthetic_step_ms is None
                 or (_is_number(self.synthetic_step_ms) and self.synthetic_step_ms > 0),
                 f"synthetic_step_ms must be a positive number or null, got {self.synthetic_step_ms!r}")
        _require(self.synthetic_step_ms is None or self.task == "generate",
                 "synthetic_step_ms needs task: generate")
        _require(self.engine_process is None or isinstance(self.engine_process, bool),
                 f"engine_process must be true, false or null, got {self.engine_process!r}")
        _require(not self.engine_process or self.task == "generate",
                 "engine_process needs task: generate (embedding models run in the worker)")
        tp = self.engine.tensor_parallel_size
        _require(tp is None or tp == self.profile.tensor_parallel_size,
                 f"engine.tensor_parallel_size ({tp}) disagrees with profile.tensor_parallel_size "
                 f"({self.profile.tensor_parallel_size}); set it in the profile only")

    @property
    def runs_engine_process(self) -> bool:
        """Whether the worker runs this model's engine loop in its own process (see above)."""
        if self.task != "generate":
            return False
        if self.engine_process is not None:
            return self.engine_process
        return self.profile.accelerator != CPU

    def engine_kwargs(self) -> dict[str, Any]:
        """Engine arguments including the profile's tensor parallel size."""
        kwargs = self.engine.as_engine_kwargs()
        if self.profile.tensor_parallel_size > 1:
            kwargs["tensor_parallel_size"] = self.profile.tensor_parallel_size
        return kwargs


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
