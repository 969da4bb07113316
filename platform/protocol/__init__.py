"""The wire contract between gateway, workers and controller: msgspec structs and Redis key names."""

from pagefleet.platform.protocol import keys
from pagefleet.platform.protocol.messages import (
    ChatMessage,
    DeltaEvent,
    ErrorEvent,
    FinalEvent,
    Heartbeat,
    JobRecord,
    RequestEnvelope,
    ResultEvent,
    TokenLogprob,
    TopLogprob,
    Usage,
    decode_envelope,
    decode_event,
    decode_heartbeat,
    decode_job,
    encode,
    fresh_heartbeats,
)
from pagefleet.platform.protocol.sampling import SamplingParams

__all__ = [
    "ChatMessage", "DeltaEvent", "ErrorEvent", "FinalEvent", "Heartbeat", "JobRecord",
    "RequestEnvelope", "ResultEvent", "SamplingParams", "TokenLogprob", "TopLogprob", "Usage",
    "decode_envelope", "decode_event", "decode_heartbeat", "decode_job", "encode", "fresh_heartbeats", "keys",
]
