"""The model registry: which models a deployment serves, how each runs and how it scales.

`load_registry(path)` reads and validates a YAML file (a ConfigMap on Kubernetes);
`Registry.get(name)` raises `UnknownModelError` (a `KeyError` subclass) for names it does not
hold. The packaged `default.yaml` serves the embedded SmolLM2 model on the CPU.
"""

from pagefleet.platform.registry.loader import (
    Registry,
    UnknownModelError,
    default_registry_path,
    load_registry,
    parse_registry,
)
from pagefleet.platform.registry.spec import (
    EngineSettings,
    GpuProfile,
    ModelSpec,
    RegistryError,
    ScalingPolicy,
    Toleration,
)

__all__ = [
    "EngineSettings",
    "GpuProfile",
    "ModelSpec",
    "Registry",
    "RegistryError",
    "ScalingPolicy",
    "Toleration",
    "UnknownModelError",
    "default_registry_path",
    "load_registry",
    "parse_registry",
]
