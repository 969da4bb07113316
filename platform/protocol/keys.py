"""Redis key and stream names; every key starts with `pf:`.

Kept in one place so the gateway, the workers and the controller can never disagree on a name.
"""

from __future__ import annotations

CONSUMER_GROUP = "workers"
PRIORITIES = (0, 1, 2)  # 0 interactive HTTP, 1 async jobs, 2 batch; lower is served first
PRIORITY_INTERACTIVE, PRIORITY_JOB, PRIORITY_BATCH = PRIORITIES

# Field names inside stream entries.
ENTRY_REQUEST_ID = "id"
ENTRY_ENVELOPE = "env"
ENTRY_EVENT = "ev"
JOB_RECORD_FIELD = "record"  # the encoded `JobRecord` inside `job_hash(id)`


def request_stream(model: str, priority: int) -> str:
    """The queue of one model at one priority."""
    if priority not in PRIORITIES:
        raise ValueError(f"priority must be one of {PRIORITIES}, got {priority}")
    return f"pf:q:{model}:{priority}"


def result_stream(request_id: str) -> str:
    """Events of one request, in order: the durable record of what was generated."""
    return f"pf:r:{request_id}"


def heartbeat_hash(model: str) -> str:
    """Hash of worker id -> encoded `Heartbeat` for every worker of a model."""
    return f"pf:w:{model}"


CANCEL_FLAG_PREFIX = "pf:c:"


def cancel_flag(request_id: str) -> str:
    """Set when a request is cancelled, so a worker that pulls it later skips it."""
    return CANCEL_FLAG_PREFIX + request_id


def cancel_channel(model: str) -> str:
    """Pub/sub channel on which the gateway announces cancellations to a model's workers."""
    return f"pf:cancel:{model}"


def stream_priority(stream: str) -> int:
    """The priority of a `request_stream` name (its last field)."""
    return int(stream.rsplit(":", 1)[1])


def ttft_samples(model: str, priority: int, bucket: int) -> str:
    """List of recent TTFT samples (seconds) of one model and priority in one time bucket
    (`protocol.ttft`)."""
    return f"pf:ttft:{model}:{priority}:{bucket}"


def job_hash(job_id: str) -> str:
    """Hash holding one async job's record."""
    return f"pf:job:{job_id}"


def owner_jobs(owner: str) -> str:
    """Sorted set (score: created_at) of the job ids an API key made."""
    return f"pf:jobs:{owner}"


def stored_response(response_id: str) -> str:
    """A stored /v1/responses answer and the conversation it ends (JSON), kept with a TTL."""
    return f"pf:resp:{response_id}"


def gateway_wake_stream(reader_id: str) -> str:
    """A gateway result reader's own stream: an entry here ends its blocking XREAD early, so a
    newly registered request joins the next read at once."""
    return f"pf:gw:wake:{reader_id}"


SCALING_EVENTS = "pf:scaling:events"
"""Stream of the controller's scaling decisions (fields: model, from, to, direction, reason,
at, trigger (tick | wake), tick (periodic ticks so far)), capped near `SCALING_EVENTS_MAXLEN`
entries; the console shows it newest first."""
SCALING_EVENTS_MAXLEN = 1000
DESIRED_REPLICAS = "pf:scaling:desired"
"""Hash of model -> the replicas the controller last asked for (its latest decision)."""


def phase_stream(model: str) -> str:
    """Cold-start phases of a model's workers (`protocol.phases.PhaseEvent`), capped."""
    return f"pf:phases:{model}"


PHASE_STREAM_MAXLEN = 1000
WAKE_CHANNEL = "pf:wake"
"""Pub/sub channel on which the gateway names a model that needs workers now (at zero or
saturated); the controller reconciles that model at once instead of at its next tick."""
SPARE_WORKERS = "pf:spares"
"""Hash of worker id -> model for pre-imported spare workers waiting to be started (local backend)."""
