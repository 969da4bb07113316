"""One freshness rule for heartbeats, which the gateway, the controller and the workers share."""

from __future__ import annotations

from pagefleet.platform.protocol import Heartbeat, encode, fresh_heartbeats


def _beat(worker_id: str, timestamp: float) -> bytes:
    return encode(Heartbeat(worker_id=worker_id, model="m", state="ready", timestamp=timestamp))


def test_a_heartbeat_is_fresh_up_to_and_including_its_max_age() -> None:
    raw = [_beat("new", 99.0), _beat("edge", 95.0), _beat("old", 94.9), b"\x00not msgpack"]
    assert [beat.worker_id for beat in fresh_heartbeats(raw, now=100.0, max_age_s=5.0)] == ["new", "edge"]
