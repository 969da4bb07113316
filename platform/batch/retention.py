"""File retention: delete every file (content, record and index entries) once its
`expires_at` has passed.

Content goes first and the records after, so a sweep killed in between leaves a record whose
content reads as 404 and which the next sweep (finding it still in `FILES_EXPIRY`) finishes;
never bytes that nothing points at. The input file of a batch that is still running is kept
until the batch ends: the batch reads it line by line until then.
"""

from __future__ import annotations

import redis

from pagefleet.platform.batch import records as rec
from pagefleet.platform.batch.storage import FileStorage


def active_input_files(client: redis.Redis) -> set[str]:
    """Input file ids of the batches not yet terminal."""
    batch_ids = [b.decode() for b in client.smembers(rec.ACTIVE_BATCHES)]
    if not batch_ids:
        return set()
    pipe = client.pipeline(transaction=False)
    for batch_id in batch_ids:
        pipe.hget(rec.batch_key(batch_id), rec.RECORD)
    return {rec.decode_batch(raw).input_file_id for raw in pipe.execute() if raw is not None}


def expire_files(client: redis.Redis, storage: FileStorage, now: float,
                 limit: int = 1000) -> list[str]:
    """Delete up to `limit` files due at `now`; returns their ids (oldest due first)."""
    due = [f.decode() for f in client.zrangebyscore(rec.FILES_EXPIRY, "-inf", now, start=0, num=limit)]
    if not due:
        return []
    in_use = active_input_files(client)
    expired = []
    for file_id in due:
        if file_id in in_use:
            continue
        storage.delete(file_id)
        raw = client.get(rec.file_key(file_id))
        pipe = client.pipeline(transaction=True)
        if raw is None:
            pipe.zrem(rec.FILES_EXPIRY, file_id)
        else:
            rec.unindex_file(pipe, rec.decode_file(raw))
        pipe.execute()
        expired.append(file_id)
    return expired
