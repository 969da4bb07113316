"""The Redis worker runtime: pulls a model's requests, runs them on an AsyncEngine, streams results.

`run_worker(settings, engine_factory)` is the entry point; `pagefleet worker` builds the
settings from its flags and the registry. The modules split the job by concern: `streams`
(request queues and result writes), `puller` (admission-limited XREADGROUP), `executor` (one
request from envelope to final event), `recovery` (claiming work of dead workers),
`heartbeat`, `jobs` (async job records and webhooks), `metrics` (Prometheus and /health).
"""

from pagefleet.workers.runtime.config import WorkerSettings
from pagefleet.workers.runtime.main import run_worker

__all__ = ["WorkerSettings", "run_worker"]
