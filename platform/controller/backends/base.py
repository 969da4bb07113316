"""What a backend does for the controller: report and set each model's replicas.

Failures are typed the way kopf types them: a temporary one (`BackendError`: the API server
is down or busy, a conflict, the network) is retried next tick; a permanent one
(`PermanentBackendError`: forbidden, invalid, a quota or admission refusal) would fail the
same way every tick, so the controller reports it once and stops repeating the request.
"""

from __future__ import annotations

from typing import Protocol

from pagefleet.platform.registry import ModelSpec


class BackendError(Exception):
    """A temporary failure applying a decision; the controller logs it and tries next tick."""


class BackendConflict(BackendError):
    """Someone else changed the object first (HTTP 409); the next tick re-reads and retries."""


class PermanentBackendError(Exception):
    """A failure that retrying the same request cannot fix (HTTP 4xx other than 409 and 429).

    Not a `BackendError`, so no handler of temporary failures retries it by accident. The
    controller reports it once (log, metric, `Backend.report_failure`) and tries that model
    again only when what it would send changes or `permanent_retry_s` has passed.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    def current_replicas(self, model: str) -> int | None:
        """Replicas asked of this model's workers so far; None if it is not deployed at all."""
        ...

    def apply(self, spec: ModelSpec, replicas: int, current: int | None) -> None:
        """Make `replicas` workers of `spec` run (create or update what is needed)."""
        ...

    def remove_except(self, models: set[str]) -> list[str]:
        """Remove the workers of every model not in `models`; return the removed names."""
        ...

    def close(self) -> None:
        """Stop whatever this backend runs in-process (local workers); leaves clusters alone."""
        ...

    def report_failure(self, spec: ModelSpec, error: PermanentBackendError) -> None:
        """Show a permanent failure where operators of this backend look (a Kubernetes Event
        on the Deployment); called once per distinct failure. Must not raise."""
        ...
