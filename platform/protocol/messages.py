"""Messages on the wire: request envelopes, result events, heartbeats, job records.

msgspec structs encoded as MessagePack; the gateway and the workers import the same classes,
so a field added on one side is known to the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import msgspec

from pagefleet.platform.protocol.sampling import SamplingParams

RequestKind = Literal["completion", "chat", "embedding"]
WorkerState = Literal["starting", "ready", "draining"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE_JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running")  # may still change
TERMINAL_JOB_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")  # never change
JobEndpoint = Literal["/v1/chat/completions", "/v1/completions"]
FinishReason = Literal["stop", "length", "abort"]


def input_param(kind: RequestKind) -> str:
    """The OpenAI request field that holds a request's input, for the errors that name it."""
    return {"chat": "messages", "embedding": "input"}.get(kind, "prompt")


class ChatMessage(msgspec.Struct, forbid_unknown_fields=False):
    role: str
    content: str | list[dict] | None = None
    name: str | None = None


class RequestEnvelope(msgspec.Struct, kw_only=True):
    """One request on `pf:q:{model}:{priority}`.

    Exactly one of `prompt` (text or token ids) and `messages` is set, matching `kind`; an
    `embedding` request has a prompt (its `params` are unused) and may ask for a Matryoshka
    truncation to `dimensions`.
    `deadline` is a Unix time after which the worker answers with a timeout error instead.
    """

    request_id: str
    model: str
    kind: RequestKind
    params: SamplingParams
    prompt: str | list[int] | None = None
    messages: list[ChatMessage] | None = None
    created_at: float
    deadline: float | None = None
    owner: str | None = None
    job_id: str | None = None
    dimensions: int | None = None

    def __post_init__(self) -> None:
        if self.kind == "chat" and not self.messages:
            raise ValueError("a chat request needs a non-empty messages list")
        if self.kind != "chat" and (self.prompt is None or self.messages is not None):
            raise ValueError(f"a {self.kind} request needs a prompt and no messages")
        if self.dimensions is not None and (self.kind != "embedding" or self.dimensions < 1):
            raise ValueError("dimensions must be a positive size, on an embedding request only")


class TopLogprob(msgspec.Struct, array_like=True):
    token_id: int
    token: str
    logprob: float


class TokenLogprob(msgspec.Struct, array_like=True):
    """The sampled token's log-probability and the top alternatives at that position."""

    token_id: int
    token: str
    logprob: float
    top: list[TopLogprob] = []


class DeltaEvent(msgspec.Struct, tag_field="event", tag="delta", kw_only=True):
    """New tokens of one choice. `offset` is how many tokens of that choice came before, so a
    worker resuming a request (and a reader) can line events up without double counting."""

    index: int
    offset: int
    token_ids: list[int]
    text: str
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FinalEvent(msgspec.Struct, tag_field="event", tag="final", kw_only=True):
    """The request is done; `finish_reasons[i]` belongs to choice i.

    An embedding request has no deltas: its vector rides on the final event, packed as
    little-endian float32 (`protocol.embeddings.pack_vector`), so a claim after the final
    finds the answer in the result stream like any other."""

    finish_reasons: list[FinishReason]
    usage: Usage
    embedding: bytes | None = None


class ErrorEvent(msgspec.Struct, tag_field="event", tag="error", kw_only=True):
    """A request failed; fields follow OpenAI's error object, plus the HTTP status to use."""

    type: str
    message: str
    code: str | None = None
    param: str | None = None
    status: int = 500


ResultEvent = DeltaEvent | FinalEvent | ErrorEvent


class Heartbeat(msgspec.Struct, kw_only=True):
    """Written to `pf:w:{model}` every second by each worker; stale ones mean a dead worker."""

    worker_id: str
    model: str
    state: WorkerState
    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    capacity: int = 0  # sequences it could run at once (max_num_seqs)
    timestamp: float


class JobFields(msgspec.Struct, kw_only=True):
    """The fields of a job its owner sees: declared once, for the stored record and the view
    built from it, so the two cannot drift apart."""

    id: str
    endpoint: JobEndpoint
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    webhook: str | None = None
    result: dict | None = None
    error: dict | None = None

    def visible_fields(self) -> dict:
        return {name: getattr(self, name) for name in JobFields.__struct_fields__}


class JobRecord(JobFields, kw_only=True):
    """An async job as stored in `pf:job:{id}` (one encoded field `record`)."""

    owner: str | None
    body: dict
    status: JobStatus = "queued"


class JobView(JobFields, kw_only=True):
    """A job as its owner sees it: the `GET /v1/jobs/{id}` body and the webhook's body (the
    record without the request body and the owner)."""

    status: JobStatus
    object: Literal["job"] = "job"

    @classmethod
    def of(cls, record: JobRecord) -> JobView:
        return cls(status=record.status, **record.visible_fields())


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(RequestEnvelope)
_event_decoder = msgspec.msgpack.Decoder(ResultEvent)
_heartbeat_decoder = msgspec.msgpack.Decoder(Heartbeat)
_job_decoder = msgspec.msgpack.Decoder(JobRecord)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


def decode_envelope(data: bytes) -> RequestEnvelope:
    return _envelope_decoder.decode(data)


def decode_event(data: bytes) -> ResultEvent:
    return _event_decoder.decode(data)


def decode_heartbeat(data: bytes) -> Heartbeat:
    return _heartbeat_decoder.decode(data)


def decode_job(data: bytes) -> JobRecord:
    return _job_decoder.decode(data)


def fresh_heartbeats(raw: Iterable[bytes], now: float, max_age_s: float) -> list[Heartbeat]:
    """The heartbeats at most `max_age_s` old: the one rule for "this worker is alive" that the
    gateway (ready workers), the controller (scaling signals) and the workers (claiming a dead
    worker's entries) all apply. Undecodable entries are skipped."""
    fresh = []
    for data in raw:
        try:
            beat = _heartbeat_decoder.decode(data)
        except msgspec.DecodeError:
            continue
        if now - beat.timestamp <= max_age_s:
            fresh.append(beat)
    return fresh
