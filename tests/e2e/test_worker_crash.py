"""`kill -9` a worker mid-generation: every stream still completes, token for token.

Runs last in the package (it leaves one worker alive). Greedy decoding makes an undisturbed
run the reference: the claimed requests resume from the tokens already in their result
streams, so each client must see exactly the reference text, nothing lost and nothing twice.
"""

from __future__ import annotations

import asyncio
import time

import openai

from pagefleet.platform.protocol import keys
from tests.e2e.conftest import MODEL, Stack, worker_logs

NUM_REQUESTS = 16
MAX_TOKENS = 24


async def _stream(client: openai.AsyncOpenAI, i: int, progress: list[int]) -> str:
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"Write a short poem about the number {i}."}],
        max_tokens=MAX_TOKENS, temperature=0, stream=True, extra_body={"ignore_eos": True})
    text = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            progress[i] += 1
    return text


def _victim_in_flight(stack: Stack, worker_id: str) -> int:
    consumers = stack.redis.xinfo_consumers(keys.request_stream(MODEL, 0), keys.CONSUMER_GROUP)
    return next((c["pending"] for c in consumers if c["name"].decode() == worker_id), 0)


def test_kill_9_mid_generation_loses_nothing_and_repeats_nothing(stack: Stack) -> None:
    assert len(stack.live_workers()) == 2, worker_logs(stack)
    victim = stack.live_workers()[0]

    async def run(kill: bool) -> list[str]:
        progress = [0] * NUM_REQUESTS
        async with stack.async_client(timeout=600) as client:
            tasks = [asyncio.create_task(_stream(client, i, progress)) for i in range(NUM_REQUESTS)]
            if kill:
                deadline = time.monotonic() + 240
                # Mid-generation: the victim holds requests and tokens are flowing, none finished.
                while not (_victim_in_flight(stack, victim.worker_id) > 0 and sum(progress) >= NUM_REQUESTS):
                    assert time.monotonic() < deadline, worker_logs(stack)
                    assert not any(t.done() for t in tasks), "a request finished before the kill"
                    await asyncio.sleep(0.02)  # polling the progress condition
                victim.kill()
            return await asyncio.gather(*tasks)

    reference = asyncio.run(run(kill=False))
    disturbed = asyncio.run(run(kill=True))
    assert victim.proc.returncode == -9
    assert all(reference), reference
    for i, (expected, got) in enumerate(zip(reference, disturbed, strict=True)):
        assert got == expected, f"request {i}: {got!r} != {expected!r}"
    consumers = stack.redis.xinfo_consumers(keys.request_stream(MODEL, 0), keys.CONSUMER_GROUP)
    assert victim.worker_id not in {c["name"].decode() for c in consumers}  # its entries were claimed
