"""Embedding models: a batched, cache-free forward pass, pooling and normalisation.

An embedding request is one forward pass over its input and nothing after it, so none of the
generation machinery (KV cache, scheduler, sampler) is used: `EmbeddingEngine` batches whole
inputs, `Embedder` runs an encoder (BERT family, mean pooling) or a decoder embedding model
(Qwen3-Embedding style, last-token pooling) and returns L2-normalised vectors.
"""

from pagefleet.workers.embed.embedder import Embedder, EmbeddingOutput
from pagefleet.workers.embed.engine import EmbeddingEngine, EmbeddingResult

__all__ = ["Embedder", "EmbeddingEngine", "EmbeddingOutput", "EmbeddingResult"]
