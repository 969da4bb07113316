"""Settings shared by the gateway's /v1/files and /v1/batches routes and the batch worker."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def require_positive(settings: Any, but: Iterable[str] = ()) -> None:
    """A check for settings whose numbers are all sizes, counts and durations: `ValueError`
    naming the first number field (other than those in `but`) that is not positive. Reading
    the fields rather than a list of their names keeps a new field from going unchecked."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in but or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not value > 0:
            raise ValueError(f"{field.name} must be positive, got {value!r}")


def default_files_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".pagefleet", "files")


@dataclass(frozen=True, slots=True)
class BatchSettings:
    """`files_dir` must be the same directory (a shared volume) for the gateway and every batch
    worker. `max_in_flight` bounds the requests one batch keeps queued or running, so a
    million-line file never floods Redis and many batches share the workers; `max_backlog`
    bounds a model's undelivered batch (priority 2) entries, all batches together: a runner
    stops feeding a model whose batch queue holds that many (the gateway's bounds for
    interactive and job work are its own, so batches can never refuse them). A step of the
    Celery task runs at most `step_s` and then re-queues itself, so `visibility_timeout_s`
    (after which Redis hands an unacknowledged task to another worker) must exceed it; the
    per-batch lease (`lease_s`) keeps two steps of one batch from running at once.
    Every file (uploads and batch outputs) is deleted, content and record, `file_retention_s`
    after it was made, by a sweep the batch workers run every `file_sweep_s`; a sweep period
    longer than `visibility_timeout_s` still works (a redelivered sweep finds the period taken)
    but holds a Celery message longer than needed.
    """

    files_dir: str = ""  # "" means default_files_dir()
    max_file_bytes: int = 200 * 1024 * 1024
    file_retention_s: float = 30 * 86_400.0
    file_sweep_s: float = 30.0
    max_in_flight: int = 64
    max_backlog: int = 65_536
    step_s: float = 5.0
    lease_s: float = 15.0
    visibility_timeout_s: float = 60.0
    max_completion_window_s: float = 86_400.0
    max_listed_errors: int = 100

    def __post_init__(self) -> None:
        require_positive(self)
        if self.lease_s <= self.step_s:
            raise ValueError("lease_s must exceed step_s (a step renews its lease between waits)")
        if self.visibility_timeout_s <= self.lease_s:
            raise ValueError("visibility_timeout_s must exceed lease_s, or Redis would hand a "
                             "running step to a second worker")

    @property
    def files_path(self) -> str:
        return self.files_dir or default_files_dir()
