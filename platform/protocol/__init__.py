"""The wire contract between gateway and workers: msgspec structs and Redis key names."""

from pagefleet.platform.protocol.sampling import SamplingParams

__all__ = ["SamplingParams"]
