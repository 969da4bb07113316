"""The gateway's one config object, built at the entry point (CLI or test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from pagefleet.platform.batch.settings import BatchSettings
from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.connection import DEFAULT_REDIS_URL, check_redis_url


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything `create_app` needs; invalid values raise `ValueError` at construction.

    `api_keys` empty means an open gateway (like vLLM without `--api-key`). `admin_keys` are
    accepted wherever an API key is and also open the console's fleet-wide views; with keys
    configured but no admin key, nobody sees those views. With no key of either kind the
    gateway is open and so is its console.

    Bounds, each answered with 429 + Retry-After rather than a wait that would blow the
    request's deadline anyway: `max_backlog` (interactive) and `max_job_backlog` cap the
    undelivered entries of one model's queue at that priority, so a job flood can never refuse
    an interactive request (batch lines are queued by the batch runner, under
    `batch.max_backlog`); `max_in_flight` caps the
    requests this gateway process waits on at once (each costs a buffer, not a connection).
Backlogs are read at most every `backlog_max_age_s` per queue (see `Broker.backlog`).

    Result delivery: `result_readers` connections multiplex every in-flight result stream;
    a request's buffer holds up to `result_buffer_events` events before its stream is paused
    (the events stay in Redis). Other commands share a pool of `redis_pool_size` connections
    that a request waits for (up to `redis_pool_timeout_s`) instead of failing.

    Input: JSON nested deeper than `max_json_depth` is refused before parsing; a prompt longer
    than `max_model_len * max_chars_per_token` characters cannot fit the model's context
    whatever the tokenizer does, so it is refused before it is queued.
    """

    redis_url: str = DEFAULT_REDIS_URL
    registry_path: str | None = None  # None: the registry packaged with pagefleet
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    request_timeout_s: float = 600.0
    max_backlog: int = 1024
    max_job_backlog: int = 8192
    max_in_flight: int = 10_000
    backlog_max_age_s: float = 0.05  # 0: read the backlog for every request
    retry_after_s: int = 1
    job_retention_s: float = 86_400.0
    webhook_allow_private: bool = False  # accept job webhooks to private/loopback addresses
    cancel_retention_s: float = 3_600.0
    max_body_bytes: int = 4 * 1024 * 1024
    max_choices: int = 64  # n times the number of prompts in one request
    max_embedding_inputs: int = 512  # inputs of one /v1/embeddings request (each is a queue entry)
    max_json_depth: int = 32
    max_chars_per_token: int = 32
    heartbeat_timeout_s: float = 5.0
    redis_socket_timeout_s: float = 30.0  # a `socket_timeout` in redis_url wins
    redis_pool_size: int = 64
    redis_pool_timeout_s: float = 30.0
    redis_retries: int = 3
    redis_health_check_interval_s: float = 5.0
    result_readers: int = 1
    result_buffer_events: int = 64
    batch: BatchSettings = field(default_factory=BatchSettings)  # /v1/files and /v1/batches

    def __post_init__(self) -> None:
        check_redis_url(self.redis_url)
        if not isinstance(self.api_keys, tuple) or not all(
            isinstance(key, str) and key for key in self.api_keys
        ):
            raise ValueError("api_keys must be a tuple of non-empty strings")
        if not isinstance(self.admin_keys, tuple) or not all(
            isinstance(key, str) and key for key in self.admin_keys
        ):
            raise ValueError("admin_keys must be a tuple of non-empty strings")
        positive = {
            "request_timeout_s": self.request_timeout_s,
            "max_backlog": self.max_backlog,
            "max_job_backlog": self.max_job_backlog,
            "max_in_flight": self.max_in_flight,
            "retry_after_s": self.retry_after_s,
            "job_retention_s": self.job_retention_s,
            "cancel_retention_s": self.cancel_retention_s,
            "max_body_bytes": self.max_body_bytes,
            "max_choices": self.max_choices,
            "max_embedding_inputs": self.max_embedding_inputs,
            "max_json_depth": self.max_json_depth,
            "max_chars_per_token": self.max_chars_per_token,
            "heartbeat_timeout_s": self.heartbeat_timeout_s,
            "redis_socket_timeout_s": self.redis_socket_timeout_s,
            "redis_pool_size": self.redis_pool_size,
            "redis_pool_timeout_s": self.redis_pool_timeout_s,
            "redis_health_check_interval_s": self.redis_health_check_interval_s,
            "result_readers": self.result_readers,
            "result_buffer_events": self.result_buffer_events,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.backlog_max_age_s < 0:
            raise ValueError(f"backlog_max_age_s must be >= 0, got {self.backlog_max_age_s}")
        if self.redis_retries < 0:
            raise ValueError(f"redis_retries must be >= 0, got {self.redis_retries}")

    @property
    def accepted_keys(self) -> tuple[str, ...]:
        """Every key the API accepts (empty: the gateway is open)."""
        return self.api_keys + self.admin_keys

    def backlog_bound(self, priority: int) -> int:
        """The undelivered entries one model's queue at `priority` may hold."""
        bounds = {keys.PRIORITY_INTERACTIVE: self.max_backlog,
                  keys.PRIORITY_JOB: self.max_job_backlog,
                  keys.PRIORITY_BATCH: self.batch.max_backlog}
        return bounds[priority]
