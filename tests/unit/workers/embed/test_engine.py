"""`EmbeddingEngine`: concurrent requests share forward passes and get their own vectors back;
abort, stats and the refusal of generation requests."""

from __future__ import annotations

import asyncio

import pytest

from pagefleet.platform.protocol.embeddings import unpack_vector
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.embed import Embedder, EmbeddingEngine
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.errors import InvalidParameterError
from pagefleet.workers.models.sources import DEFAULT_EMBEDDING_MODEL

TEXTS = ["red apples", "green pears and yellow bananas", "a stone bridge over a river", "x"]


class CountingEmbedder(Embedder):
    """The real model; it also records the batch sizes it ran."""

    batch_sizes: list[int]

    def embed(self, batch, dimensions):
        self.batch_sizes.append(len(batch))
        return super().embed(batch, dimensions)


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    loaded = Embedder.load(EngineConfig(model=DEFAULT_EMBEDDING_MODEL, device="cpu"))
    counting = CountingEmbedder(loaded.model, encoder=True, pooling=loaded.pooling,
                                tokenizer=loaded.tokenizer, hidden_size=loaded.hidden_size,
                                vocab_size=loaded.vocab_size, max_model_len=loaded.max_model_len,
                                device=loaded.device)
    counting.batch_sizes = []
    return counting


def test_concurrent_requests_are_batched_and_answered_in_order(embedder: CountingEmbedder) -> None:
    engine = EmbeddingEngine(embedder, max_num_seqs=8, max_num_batched_tokens=4096)
    inputs = [embedder.tokenize(t) for t in TEXTS]  # token ids queue at once (no tokenizer thread)
    singles = [embedder.embed([ids], [None])[0] for ids in inputs]
    embedder.batch_sizes.clear()

    async def main() -> list:
        return await asyncio.gather(*(engine.embed(f"r{i}", ids) for i, ids in enumerate(inputs)))

    results = asyncio.run(main())
    assert embedder.batch_sizes == [len(TEXTS)]
    for result, single in zip(results, singles, strict=True):
        assert result.num_prompt_tokens == single.num_prompt_tokens
        vector = unpack_vector(result.embedding)
        assert sum(a * b for a, b in zip(vector, single.vector.tolist(), strict=True)) >= 0.9999
    assert engine.stats().prompt_tokens_total == sum(s.num_prompt_tokens for s in singles)
    engine.shutdown()


def test_text_inputs_are_tokenized_and_embedded(embedder: CountingEmbedder) -> None:
    engine = EmbeddingEngine(embedder, max_num_seqs=8, max_num_batched_tokens=4096)
    [single] = embedder.embed([embedder.tokenize(TEXTS[1])], [None])
    result = asyncio.run(engine.embed("t", TEXTS[1]))
    vector = unpack_vector(result.embedding)
    assert sum(a * b for a, b in zip(vector, single.vector.tolist(), strict=True)) >= 0.9999
    engine.shutdown()


def test_the_token_budget_splits_batches(embedder: CountingEmbedder) -> None:
    # The budget is never below one whole input (512 here); two ~300-token inputs exceed it.
    engine = EmbeddingEngine(embedder, max_num_seqs=8, max_num_batched_tokens=1)
    long_texts = [f"{word} " * 300 for word in ("red", "green", "blue")]
    embedder.batch_sizes.clear()

    async def main() -> None:
        await asyncio.gather(*(engine.embed(f"r{i}", t) for i, t in enumerate(long_texts)))

    asyncio.run(main())
    assert embedder.batch_sizes and max(embedder.batch_sizes) == 1
    engine.shutdown()


def test_abort_of_a_waiting_request_answers_none(embedder: CountingEmbedder) -> None:
    engine = EmbeddingEngine(embedder, max_num_seqs=1, max_num_batched_tokens=4096)
    # Token ids queue in task order (text would race through two tokenizer threads).
    first_ids, second_ids = embedder.tokenize(TEXTS[1]), embedder.tokenize(TEXTS[2])

    async def main() -> list:
        first = asyncio.create_task(engine.embed("first", first_ids))
        second = asyncio.create_task(engine.embed("second", second_ids))
        while engine.stats().num_waiting + engine.stats().num_running < 2:  # both queued
            await asyncio.sleep(0)
        engine.abort("second")
        return await asyncio.gather(first, second)

    first, second = asyncio.run(main())
    assert first is not None and second is None
    assert engine.stats().num_waiting == 0
    engine.shutdown()


def test_abort_of_a_running_request_answers_none_and_the_engine_goes_on(
        embedder: CountingEmbedder) -> None:
    engine = EmbeddingEngine(embedder, max_num_seqs=1, max_num_batched_tokens=4096)
    ids = embedder.tokenize(TEXTS[1])

    async def main() -> tuple:
        running = asyncio.create_task(engine.embed("running", ids))
        while engine.stats().num_running < 1:
            await asyncio.sleep(0)
        engine.abort("running")
        aborted = await running
        return aborted, await engine.embed("next", ids)

    aborted, following = asyncio.run(main())
    assert aborted is None and following is not None
    assert engine.stats().num_running == 0
    engine.shutdown()


def test_generation_and_bad_dimensions_are_refused(embedder: CountingEmbedder) -> None:
    engine = EmbeddingEngine(embedder, max_num_seqs=4, max_num_batched_tokens=4096)
    with pytest.raises(InvalidParameterError, match="/v1/embeddings"):
        engine.add_request("g", "hello", SamplingParams())
    with pytest.raises(InvalidParameterError, match="dimensions"):
        asyncio.run(engine.embed("d", "hello", dimensions=0))
    stats = engine.stats()
    assert (stats.max_num_seqs, stats.kv_cache_usage, stats.num_running) == (4, 0.0, 0)
