"""The registry loads the shipped files and rejects bad ones with errors naming model and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pagefleet.platform.registry import (
    EngineSettings,
    RegistryError,
    ScalingPolicy,
    UnknownModelError,
    default_registry_path,
    load_registry,
    parse_registry,
)
from pagefleet.workers.engine.config import EngineConfig

EXAMPLE = Path(__file__).resolve().parents[4] / "examples" / "registry.yaml"
VALID = {
    "models": {
        "tiny": {
            "source": "tiny-source",
            "engine": {"max_model_len": 1024},
            "profile": {"accelerator": "nvidia.com/gpu", "count": 2, "tensor_parallel_size": 2},
            "scaling": {"min_replicas": 0, "max_replicas": 3},
        }
    }
}


def _with(path: tuple[str, ...], value: object) -> dict:
    data = copy.deepcopy(VALID)
    node = data["models"]["tiny"]
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


def test_default_registry_ships_the_embedded_model_on_cpu() -> None:
    assert default_registry_path().is_file()
    spec = load_registry().get("smollm2-135m-instruct")
    assert spec.profile.accelerator == "cpu"
    assert not spec.profile.is_gpu
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas) == (0, 2)


def test_example_registry_has_two_gpu_profiles() -> None:
    registry = load_registry(EXAMPLE)
    assert len(registry.models) >= 2
    small = registry.get("smollm2-135m-instruct")
    large = registry.get("llama-3.1-70b-instruct")
    assert small.profile.count == 1 and small.scaling.min_replicas == 0
    assert large.profile.tensor_parallel_size == 4 and large.scaling.min_replicas == 1
    assert large.profile.node_selector["nvidia.com/gpu.product"].startswith("NVIDIA-H100")
    assert large.engine_kwargs()["tensor_parallel_size"] == 4


def test_engine_kwargs_hold_only_set_values() -> None:
    assert EngineSettings().as_engine_kwargs() == {}
    settings = EngineSettings(max_num_seqs=8, enforce_eager=False, piecewise_graphs=True)
    assert settings.as_engine_kwargs() == {"max_num_seqs": 8, "enforce_eager": False,
                                           "piecewise_graphs": True}
    EngineConfig(**settings.as_engine_kwargs())  # every registry setting is an engine argument


def test_get_unknown_model_raises_key_error_listing_known() -> None:
    registry = parse_registry(VALID)
    with pytest.raises(KeyError) as info:
        registry.get("nope")
    assert isinstance(info.value, UnknownModelError)
    assert "tiny" in str(info.value) and "nope" in str(info.value)
    assert "tiny" in registry and "nope" not in registry


def test_source_defaults_to_name() -> None:
    registry = parse_registry({"models": {"m1": None}})
    assert registry.get("m1").source == "m1"


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("scaling", "min_replicas"), 5, "min_replicas (5) must not exceed max_replicas (3)"),
        (("scaling", "max_replicas"), 0, "max_replicas must be at least 1"),
        (("scaling", "panic_threshold"), 1.0, "panic_threshold must be greater than 1"),
        (("scaling", "scale_down_window_s"), -1, "scale_down_window_s must be a non-negative"),
        (("scaling", "batch_wake_after_s"), -1, "batch_wake_after_s must be a non-negative"),
        (("scaling", "bogus"), 1, "scaling: unknown key(s) ['bogus']"),
        (("scaling", "standby_after_s"), -5, "standby_after_s must be a non-negative number or null"),
        (("engine", "swap_space"), "lots", "swap_space must be a non-negative number of GiB"),
        (("profile", "tensor_parallel_size"), 4, "tensor_parallel_size 4 must divide count 2"),
        (("profile", "shm"), "lots", "shm must be a Kubernetes quantity"),
        (("profile", "tolerations"), [{"key": "k", "operator": "Sometimes"}], "tolerations[0]: operator"),
        (("profile", "node_selector"), {"gpu": 1}, "node_selector must map strings to strings"),
        (("engine", "block_size"), 12, "block_size must be a power of two"),
        (("engine", "dtype"), "int3", "dtype must be one of"),
        (("engine", "kv_cache_dtype"), "int8", "kv_cache_dtype must be one of"),
        (("engine", "piecewise_graphs"), "yes", "piecewise_graphs must be true or false"),
        (("engine", "max_num_seqs"), 0, "max_num_seqs must be an integer of at least 1"),
        (("engine", "gpu_memory_utilization"), 1.5, "gpu_memory_utilization must be in (0, 1]"),
        (("engine", "tensor_parallel_size"), 1, "disagrees with profile.tensor_parallel_size"),
        (("engine", "max_num_seq"), 1, "engine: unknown key(s) ['max_num_seq']"),
        (("weights",), "x", "unknown key(s) ['weights']"),
        (("engine_process",), "yes", "engine_process must be true, false or null"),
    ],
)
def test_invalid_values_are_rejected_precisely(path: tuple[str, ...], value: object, fragment: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_registry(_with(path, value), origin="reg.yaml")
    message = str(info.value)
    assert "reg.yaml: model 'tiny'" in message
    assert fragment in message


@pytest.mark.parametrize(
    "document",
    [None, [], {"models": {}}, {"models": {"ok": {}}, "extra": 1}, {"models": {"Bad_Name": {}}}],
)
def test_malformed_documents_are_rejected(document: object) -> None:
    with pytest.raises(RegistryError):
        parse_registry(document)


def test_load_reports_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed")
    with pytest.raises(RegistryError, match="not valid YAML"):
        load_registry(broken)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(VALID))
    assert load_registry(good).origin == str(good)


def test_standby_and_swap_space_are_read() -> None:
    spec = parse_registry(_with(("scaling", "standby_after_s"), 30)).get("tiny")
    assert spec.scaling.standby_after_s == 30
    assert ScalingPolicy().standby_after_s is None  # idle means zero unless asked
    spec = parse_registry(_with(("engine", "swap_space"), 4)).get("tiny")
    assert spec.engine_kwargs()["swap_space"] == 4


def test_kv_cache_dtype_reaches_the_engine_kwargs() -> None:
    from typing import get_args

    from pagefleet.platform.registry.spec import KV_CACHE_DTYPES
    from pagefleet.workers.engine.config import KVCacheDtype

    assert get_args(KVCacheDtype) == KV_CACHE_DTYPES  # the registry accepts what the engine does
    spec = parse_registry(_with(("engine", "kv_cache_dtype"), "fp8")).get("tiny")
    assert spec.engine_kwargs()["kv_cache_dtype"] == "fp8"
    assert "kv_cache_dtype" not in parse_registry(VALID).get("tiny").engine_kwargs()


def test_standby_example_shares_one_gpu() -> None:
    registry = load_registry(EXAMPLE.with_name("registry-standby.yaml"))
    specs = list(registry.models.values())
    assert len(specs) == 2 and all(spec.scaling.standby_after_s for spec in specs)
    assert all(spec.engine.num_kv_blocks for spec in specs)  # sized alike whoever is awake


@pytest.mark.parametrize(("accelerator", "task", "engine_process", "own_process"), [
    ("cpu", "generate", None, False),  # slow steps: a thread costs nothing
    ("nvidia.com/gpu", "generate", None, True),  # fast steps: the loop gets its own GIL
    ("nvidia.com/gpu", "generate", False, False),
    ("cpu", "generate", True, True),
    ("nvidia.com/gpu", "embed", None, False),  # embedding engines run in the worker
])
def test_engine_process_defaults_to_gpu_generation_models(accelerator: str, task: str,
                                                          engine_process: bool | None,
                                                          own_process: bool) -> None:
    data = _with(("profile", "accelerator"), accelerator)
    data["models"]["tiny"].update(task=task, engine_process=engine_process)
    spec = parse_registry(data, origin="reg.yaml").get("tiny")
    assert spec.runs_engine_process is own_process


def test_embedding_models_refuse_an_engine_process() -> None:
    data = _with(("task",), "embed")
    data["models"]["tiny"]["engine_process"] = True
    with pytest.raises(RegistryError, match="engine_process needs task: generate"):
        parse_registry(data, origin="reg.yaml")
