"""Publishing the controller's decisions to Redis, where the console reads them.

Every tick writes the desired replicas of each model (`keys.DESIRED_REPLICAS`); a decision that
changes replicas is also appended, with its reason, to the capped `keys.SCALING_EVENTS` stream.
Holds are not appended: one per model per tick would push the decisions that matter out of the
cap within minutes. Publishing is best effort: a Redis failure is already reported by the
signals read of the same tick, and must never stop scaling.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pagefleet.platform.controller.policy import Decision
from pagefleet.platform.protocol import keys

log = logging.getLogger(__name__)


async def publish_decision(client: aioredis.Redis, model: str, current: int | None,
                           decision: Decision, now: float, trigger: str = "tick",
                           tick: int = 0) -> None:
    """Record `decision` for `model` (replicas were `current`; None: unknown to the backend),
    made by a periodic tick or a wake (`trigger`) after `tick` periodic ticks."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(keys.DESIRED_REPLICAS, model, decision.desired_replicas)
            if decision.direction != "hold":
                pipe.xadd(keys.SCALING_EVENTS, {
                    "model": model, "from": current or 0, "to": decision.desired_replicas,
                    "direction": decision.direction, "reason": decision.reason, "at": f"{now:.3f}",
                    "trigger": trigger, "tick": tick,
                }, maxlen=keys.SCALING_EVENTS_MAXLEN, approximate=True)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        log.debug("model %s: decision not published: %s", model, exc)
