"""Load an embedding model and turn batches of inputs into unit vectors (synchronous).

Two families: BERT-style encoders (`BertModel`, padded batch, bidirectional attention) and the
decoders of workers/models (Llama, Qwen2/3, ...) run cache-free over the batch laid back to
back, as decoder embedding models such as Qwen3-Embedding are. The pooling mode comes from
the folder's sentence-transformers config when it has one, else from the family (mean for
encoders, last token for decoders). transformers is used for the config and the tokenizer only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pagefleet.workers.embed.attention import CacheFreeCausalAttention, whole_sequences
from pagefleet.workers.embed.pooling import Pooling, finish, pool_flat, pool_padded, pooling_of
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.errors import InvalidParameterError, PromptTooLongError
from pagefleet.workers.engine.resolved_config import resolve_device, resolve_dtype
from pagefleet.workers.models.bert import BertArch, BertModel
from pagefleet.workers.models.loader import (
    _default_dtype,
    dummy_weights,
    iter_safetensors,
    model_class,
)
from pagefleet.workers.models.parallel import TensorParallel
from pagefleet.workers.models.sources import embedding_folder, resolve_model

_ENCODER_TYPES = ("bert",)


class InputTooLongError(PromptTooLongError):
    """An input longer than the model's context; embeddings have no completion to shorten."""

    def __init__(self, num_tokens: int, max_model_len: int) -> None:
        self.num_prompt_tokens = num_tokens
        self.max_tokens = 0
        self.max_model_len = max_model_len
        ValueError.__init__(self, f"This model's maximum context length is {max_model_len} tokens. "
                                  f"However, your input has {num_tokens} tokens. Please reduce it.")


@dataclass(frozen=True, slots=True)
class EmbeddingOutput:
    vector: torch.Tensor  # [dimensions] float32, unit length, on the CPU
    num_prompt_tokens: int


class Embedder:
    """One embedding model on one device: `tokenize` checks an input, `embed` runs a batch."""

    def __init__(self, model: nn.Module, *, encoder: bool, pooling: Pooling, tokenizer: Any,
                 hidden_size: int, vocab_size: int, max_model_len: int, device: torch.device) -> None:
        self.model = model
        self.encoder = encoder
        self.pooling = pooling
        self.tokenizer = tokenizer
        self.hidden_size = hidden_size
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.device = device

    @classmethod
    def load(cls, config: EngineConfig) -> Embedder:
        """Build the model `config.model` names (the packaged all-MiniLM-L6-v2, a folder or a
        hub id) with `config`'s dtype, device, load format and `max_model_len`; the KV-cache
        and scheduling settings do not apply, and quantization is refused rather than ignored."""
        if config.quantization is not None:
            raise ValueError(f"quantization {config.quantization!r} is not supported for embedding models")
        folder = embedding_folder(config.model, config.load_format)
        from transformers import AutoConfig, AutoTokenizer

        hf_config = AutoConfig.from_pretrained(folder)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        tokenizer_source = config.tokenizer or (folder if _has_tokenizer(folder) else None)
        tokenizer = None if tokenizer_source is None else AutoTokenizer.from_pretrained(tokenizer_source)
        if hf_config.model_type in _ENCODER_TYPES:
            arch = BertArch.from_hf_config(hf_config)
            with _default_dtype(dtype), device:
                torch.manual_seed(config.seed)
                model: nn.Module = BertModel(arch)
            if config.load_format == "auto":
                with torch.no_grad():
                    model.load_weights(iter_safetensors(folder))
            hidden, vocab, positions, default_pooling = (
                arch.hidden_size, arch.vocab_size, arch.max_position_embeddings, "mean")
        else:
            resolved = resolve_model(str(folder), config.load_format)
            # Never computes logits: tying the head to the embedding loads checkpoints that
            # have no head (Qwen3-Embedding) and costs no memory.
            arch = dataclasses.replace(resolved.arch, tie_word_embeddings=True)
            with _default_dtype(dtype), device:
                model = model_class(arch)(arch, TensorParallel(), CacheFreeCausalAttention())
            weights = (dummy_weights(arch, config.seed, dtype, device) if config.load_format == "dummy"
                       else _decoder_names(iter_safetensors(folder)))
            with torch.no_grad():
                model.load_weights(weights)
            hidden, vocab, positions, default_pooling = (
                arch.hidden_size, arch.vocab_size, arch.max_position_embeddings, "last")
        return cls(model.eval(), encoder=hf_config.model_type in _ENCODER_TYPES,
                   pooling=pooling_of(folder, default_pooling), tokenizer=tokenizer,
                   hidden_size=hidden, vocab_size=vocab,
                   max_model_len=min(config.max_model_len or positions, positions), device=device)

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        """Token ids of one input, or ValueError (empty, out of vocabulary, too long)."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise InvalidParameterError("this model has no tokenizer; send token ids", "input")
            token_ids = list(self.tokenizer(prompt)["input_ids"])
        else:
            token_ids = list(prompt)
            if any(not 0 <= t < self.vocab_size for t in token_ids):
                raise InvalidParameterError(
                    f"token ids must be in [0, {self.vocab_size}) for this model", "input")
        if not token_ids:
            raise InvalidParameterError("an input must not be empty", "input")
        if len(token_ids) > self.max_model_len:
            raise InputTooLongError(len(token_ids), self.max_model_len)
        return token_ids

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= self.hidden_size:
            raise InvalidParameterError(
                f"dimensions must be between 1 and {self.hidden_size} for this model, got {dimensions}",
                "dimensions")

    @torch.inference_mode()
    def embed(self, batch: list[list[int]], dimensions: list[int | None]) -> list[EmbeddingOutput]:
        """One forward pass over `batch` (tokenized inputs) -> a unit vector per input."""
        pooled = self._encode(batch) if self.encoder else self._decode(batch)
        vectors = finish(pooled, dimensions)
        return [EmbeddingOutput(v.cpu(), len(ids)) for v, ids in zip(vectors, batch, strict=True)]

    def _encode(self, batch: list[list[int]]) -> torch.Tensor:
        length = max(len(ids) for ids in batch)
        input_ids = torch.zeros((len(batch), length), dtype=torch.int64)
        mask = torch.zeros((len(batch), length), dtype=torch.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        return pool_padded(self.model(input_ids, mask), mask, self.pooling)

    def _decode(self, batch: list[list[int]]) -> torch.Tensor:
        lengths = [len(ids) for ids in batch]
        metadata = whole_sequences(lengths, self.device)
        input_ids = torch.tensor([t for ids in batch for t in ids], dtype=torch.int64, device=self.device)
        positions = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        no_cache = torch.empty(0, device=self.device)
        kv_caches = [(no_cache, no_cache)] * len(self.model.model.layers)
        hidden = self.model(input_ids, positions, kv_caches, metadata)  # [T, hidden]
        return pool_flat(hidden, metadata.query_start_loc_cpu, self.pooling)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json",
                                                       "tokenizer.model", "vocab.txt"))


def _decoder_names(weights: Iterator[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Decoder embedding checkpoints are often saved from the bare model (`layers.0...`, no
    `model.` prefix, no head); give them the causal-LM names the decoders load."""
    for name, tensor in weights:
        if name.startswith("lm_head."):
            continue
        yield (name if name.startswith("model.") else f"model.{name}"), tensor
