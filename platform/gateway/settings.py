"""The gateway's one config object, built at the entry point (CLI or test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.protocol.connection import DEFAULT_REDIS_URL, check_redis_url


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything `create_app` needs; invalid values raise `ValueError` at construction.

    `api_keys` empty means an open gateway (like vLLM without `--api-key`). `max_backlog` caps
    the undelivered entries of one model's queues: past it, requests get 429 rather than
    waiting behind a backlog that would blow their deadline anyway.
    """

    redis_url: str = DEFAULT_REDIS_URL
    registry_path: str | None = None  # None: the registry packaged with pagefleet
    api_keys: tuple[str, ...] = ()
    request_timeout_s: float = 600.0
    max_backlog: int = 1024
    retry_after_s: int = 1
    job_retention_s: float = 86_400.0
    cancel_retention_s: float = 3_600.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_choices: int = 64  # n times the number of prompts in one request
    heartbeat_timeout_s: float = 5.0
    redis_socket_timeout_s: float = 30.0  # a `socket_timeout` in redis_url wins
    batch: BatchSettings = field(default_factory=BatchSettings)  # /v1/files and /v1/batches

    def __post_init__(self) -> None:
        check_redis_url(self.redis_url)
        if not isinstance(self.api_keys, tuple) or not all(
            isinstance(key, str) and key for key in self.api_keys
        ):
            raise ValueError("api_keys must be a tuple of non-empty strings")
        positive = {
            "request_timeout_s": self.request_timeout_s,
            "max_backlog": self.max_backlog,
            "retry_after_s": self.retry_after_s,
            "job_retention_s": self.job_retention_s,
            "cancel_retention_s": self.cancel_retention_s,
            "max_body_bytes": self.max_body_bytes,
            "max_choices": self.max_choices,
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
            "redis_socket_timeout_s": self.redis_socket_timeout_s,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
