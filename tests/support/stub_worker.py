"""A stand-in for `pagefleet worker` that speaks the Redis protocol without loading a model.

It heartbeats (`starting` for `--start-delay` seconds, then `ready`, `draining` on SIGTERM),
pulls from the model's streams in the `workers` group, "serves" each request in `--service`
seconds by writing a `final` event to its result stream, then acks it. Entries left pending by
a dead consumer for longer than `--claim-idle-ms` are claimed, as the real runtime does. Tests
of the controller's local backend start it as a subprocess; run it as a script, not a module.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
import uuid

import redis

from pagefleet.platform.protocol import FinalEvent, Heartbeat, Usage, encode, keys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--registry", default=None)
    parser.add_argument("--start-delay", type=float, default=0.0)
    parser.add_argument("--service", type=float, default=0.1)
    parser.add_argument("--claim-idle-ms", type=int, default=2000)
    args = parser.parse_args()
    worker_id = os.environ.get("PAGEFLEET_WORKER_ID") or f"stub-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(args.redis_url)
    stop = threading.Event()
    gone = threading.Event()
    state = {"state": "starting", "running": 0}

    def on_sigterm(*_: object) -> None:
        state["state"] = "draining"
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)

    def beat() -> None:
        while True:
            heartbeat = Heartbeat(worker_id=worker_id, model=args.model, state=state["state"],
                                  running=state["running"], capacity=1, timestamp=time.time())
            client.hset(keys.heartbeat_hash(args.model), worker_id, encode(heartbeat))
            if gone.wait(0.5):
                return

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    streams = [keys.request_stream(args.model, p) for p in keys.PRIORITIES]
    for stream in streams:
        try:
            client.xgroup_create(stream, keys.CONSUMER_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
    if not stop.wait(args.start_delay):
        state["state"] = "ready"
    while not stop.is_set():
        entries = _claim(client, streams, worker_id, args.claim_idle_ms) or _pull(client, streams, worker_id)
        for stream, entry_id, fields in entries:
            state["running"] = 1
            time.sleep(args.service)  # the stand-in for generation
            request_id = fields[keys.ENTRY_REQUEST_ID.encode()].decode()
            final = FinalEvent(finish_reasons=["stop"], usage=Usage(1, 1, 2))
            client.xadd(keys.result_stream(request_id), {keys.ENTRY_EVENT: encode(final), "worker": worker_id})
            client.xack(stream, keys.CONSUMER_GROUP, entry_id)
            state["running"] = 0
    gone.set()
    beater.join()
    client.hdel(keys.heartbeat_hash(args.model), worker_id)
    return 0


def _pull(client: redis.Redis, streams: list[str], worker_id: str) -> list[tuple[str, bytes, dict]]:
    reply = client.xreadgroup(keys.CONSUMER_GROUP, worker_id, dict.fromkeys(streams, ">"),
                              count=1, block=200)
    return [(name.decode(), entry_id, fields) for name, items in reply or [] for entry_id, fields in items][:1]


def _claim(client: redis.Redis, streams: list[str], worker_id: str, idle_ms: int) -> list[tuple[str, bytes, dict]]:
    for stream in streams:
        _, claimed, *_ = client.xautoclaim(stream, keys.CONSUMER_GROUP, worker_id, idle_ms, count=1)
        if claimed:
            return [(stream, claimed[0][0], claimed[0][1])]
    return []


if __name__ == "__main__":
    raise SystemExit(main())
