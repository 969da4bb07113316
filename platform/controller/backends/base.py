"""What a backend does for the controller: report and set each model's replicas."""

from __future__ import annotations

from typing import Protocol

from pagefleet.platform.registry import ModelSpec


class BackendError(Exception):
    """A retryable failure applying a decision; the controller logs it and tries next tick."""


class BackendConflict(BackendError):
    """Someone else changed the object first (HTTP 409); the next tick re-reads and retries."""


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
