"""The controller's one config object, built once by the CLI and passed down."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from typing import Literal

from pagefleet.platform.protocol.connection import DEFAULT_REDIS_URL, check_redis_url

BackendName = Literal["local", "kubernetes"]
DEFAULT_WORKER_IMAGE = "ghcr.io/pagefleet/worker:0.1.0"

# `{model}`, `{registry}`, `{redis_url}` and `{worker_id}` are filled in per worker process.
DEFAULT_WORKER_COMMAND = (
    sys.executable, "-m", "pagefleet.platform.cli", "worker",
    "--model", "{model}", "--registry", "{registry}", "--redis-url", "{redis_url}",
)


@dataclass(frozen=True, slots=True)
class KubernetesSettings:
    """Where the worker Deployments live and what they are built from.

    The workers read the registry from the same ConfigMap as the controller and the Redis URL
    and Hugging Face token from Secrets, so no credential is written into a Deployment.
    """

    namespace: str = "pagefleet"
    image: str = DEFAULT_WORKER_IMAGE
    registry_configmap: str = "pagefleet-registry"
    registry_key: str = "registry.yaml"
    redis_secret: str = "pagefleet-redis"
    hf_token_secret: str = "pagefleet-hf-token"
    service_account: str = "pagefleet-worker"
    health_port: int = 8081
    drain_grace_s: int = 120
    lease_name: str = "pagefleet-controller"
    lease_duration_s: int = 15
    identity: str = field(default_factory=socket.gethostname)

    def __post_init__(self) -> None:
        if not self.namespace or not self.image:
            raise ValueError("namespace and image must not be empty")
        if not 0 < self.health_port < 65536:
            raise ValueError(f"health_port must be in [1, 65535], got {self.health_port}")
        if self.drain_grace_s < 1 or self.lease_duration_s < 2:
            raise ValueError("drain_grace_s must be >= 1 and lease_duration_s >= 2")


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """How the local backend starts worker processes on this machine.

    `spare_workers` pre-imported processes per model wait to become workers
    (`workers.runtime.spare`; the worker command must be `pagefleet worker`'s), so a scale-up
    skips the imports: the CPU cold start drops from ~8 s to ~2 s, for a few hundred MB of
    memory per model at zero. `pagefleet up` keeps one.
    """

    worker_command: tuple[str, ...] = DEFAULT_WORKER_COMMAND
    drain_timeout_s: float = 30.0
    max_restart_backoff_s: float = 30.0
    spare_workers: int = 0

    def __post_init__(self) -> None:
        if not self.worker_command:
            raise ValueError("worker_command must not be empty")
        if not 0 <= self.spare_workers <= 8:
            raise ValueError(f"spare_workers must be in [0, 8], got {self.spare_workers}")
        if self.drain_timeout_s <= 0 or self.max_restart_backoff_s <= 0:
            raise ValueError("drain_timeout_s and max_restart_backoff_s must be positive")


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Everything `pagefleet controller` needs; `registry_path` None means the packaged default."""

    redis_url: str = DEFAULT_REDIS_URL
    registry_path: str | None = None
    backend: BackendName = "local"
    interval_s: float = 1.0
    heartbeat_stale_s: float = 5.0
    metrics_port: int | None = None
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    local: LocalSettings = field(default_factory=LocalSettings)

    def __post_init__(self) -> None:
        check_redis_url(self.redis_url)
        if self.backend not in ("local", "kubernetes"):
            raise ValueError(f"backend must be 'local' or 'kubernetes', got {self.backend!r}")
        if self.interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {self.interval_s}")
        if self.heartbeat_stale_s < 2 * self.interval_s:
            raise ValueError("heartbeat_stale_s must be at least twice interval_s")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
