"""The worker runtime's one config object, validated once at the entry point."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

from pagefleet.platform.protocol.connection import DEFAULT_REDIS_URL, check_redis_url


def default_worker_id() -> str:
    """Unique per process, readable in `XINFO CONSUMERS`: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How one worker talks to Redis and how it decides what to pull.

    `kv_high_water` stops pulling while the KV cache is fuller than this fraction, so new work
    stays in Redis where other workers and the controller see it. A consumer whose heartbeat is
    older than `dead_after_s` is dead and its pending entries are claimed; `claim_min_idle_ms`
    makes concurrent claimers race safely (an XCLAIM resets the entry's idle time).

    Batch work (priority 2) may hold at most `batch_share` of the engine's sequences (at least
    one): the engine never preempts a running request for a more urgent one, so an engine full
    of batch requests would make interactive requests and jobs wait for whole batch requests
    to finish; the share keeps slots for them at once.

    Webhooks are retried with jittered exponential back-off from `webhook_backoff_s` up to
    `webhook_backoff_cap_s` between attempts, for `webhook_window_s` after the job finished;
    they are signed when `webhook_secret` is set, and refused for private, loopback and other
    non-public targets unless `webhook_allow_private`.
    """

    model: str
    redis_url: str = DEFAULT_REDIS_URL
    worker_id: str = field(default_factory=default_worker_id)
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = None  # None: no HTTP endpoint; 0: a free port
    heartbeat_interval_s: float = 1.0
    dead_after_s: float = 5.0
    claim_interval_s: float = 1.0
    claim_min_idle_ms: int = 1000
    kv_high_water: float = 0.9
    batch_share: float = 0.75
    idle_block_ms: int = 1000
    retention_s: int = 3600  # of result streams; jobs keep their result in the job record
    webhook_timeout_s: float = 10.0
    webhook_window_s: float = 24 * 3600.0
    webhook_backoff_s: float = 1.0
    webhook_backoff_cap_s: float = 3600.0
    webhook_poll_s: float = 1.0
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_allow_private: bool = False

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty name")
        check_redis_url(self.redis_url)
        if not self.worker_id:
            raise ValueError("worker_id must not be empty")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ValueError(f"metrics_port must be in [0, 65535], got {self.metrics_port}")
        for name in ("heartbeat_interval_s", "claim_interval_s", "webhook_timeout_s",
                     "webhook_window_s", "webhook_poll_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dead_after_s < 2 * self.heartbeat_interval_s:
            raise ValueError(
                f"dead_after_s ({self.dead_after_s}) must be at least twice the heartbeat interval"
            )
        if not 0.0 < self.batch_share <= 1.0:
            raise ValueError(f"batch_share must be in (0, 1], got {self.batch_share}")
        if not 0.0 < self.kv_high_water <= 1.0:
            raise ValueError(f"kv_high_water must be in (0, 1], got {self.kv_high_water}")
        if not 0 < self.webhook_backoff_s <= self.webhook_backoff_cap_s:
            raise ValueError("need 0 < webhook_backoff_s <= webhook_backoff_cap_s")
        for name in ("claim_min_idle_ms", "idle_block_ms", "retention_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
