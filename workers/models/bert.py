"""The BERT family encoder (BERT, MiniLM, the sentence-transformers models built on them).

Unlike the decoders in this folder it attends bidirectionally and keeps no KV cache: a batch
of whole inputs, padded to the longest, goes through once and comes back as one hidden state
per token. Pooling is the embedder's job (workers/embed), not the model's. Weights load by
Hugging Face's `BertModel` names (a `bert.` prefix, as in `BertForMaskedLM` checkpoints, is
dropped); the pooler and the masked-LM head are not used for embeddings and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_UNUSED_PREFIXES = ("pooler.", "cls.")
_UNUSED_BUFFERS = ("embeddings.position_ids",)


@dataclass(frozen=True, slots=True)
class BertArch:
    """The numbers of a BERT config.json that the forward pass needs."""

    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported")

    @classmethod
    def from_hf_config(cls, config: Any) -> BertArch:
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"only absolute position embeddings are supported, got "
                             f"{config.position_embedding_type!r}")
        return cls(num_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                   num_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
                   vocab_size=config.vocab_size, max_position_embeddings=config.max_position_embeddings,
                   type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
                   hidden_act=config.hidden_act)


def _activation(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "relu":
        return F.relu(x)
    return F.gelu(x, approximate="none" if name == "gelu" else "tanh")


class BertEmbeddings(nn.Module):
    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(arch.vocab_size, arch.hidden_size)
        self.position_embeddings = nn.Embedding(arch.max_position_embeddings, arch.hidden_size)
        self.token_type_embeddings = nn.Embedding(arch.type_vocab_size, arch.hidden_size)
        self.LayerNorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.LayerNorm(x + self.token_type_embeddings.weight[0])  # one segment: type 0


class BertSelfAttention(nn.Module):
    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.num_heads = arch.num_heads
        self.query = nn.Linear(arch.hidden_size, arch.hidden_size)
        self.key = nn.Linear(arch.hidden_size, arch.hidden_size)
        self.value = nn.Linear(arch.hidden_size, arch.hidden_size)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, L, H] -> [B, heads, L, head_dim]
            return t.view(batch, length, self.num_heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)),
                                             heads(self.value(x)), attn_mask=key_mask)
        return out.transpose(1, 2).reshape(batch, length, hidden)


class BertDense(nn.Module):
    """A projection, then residual add and LayerNorm: BERT's `*.output` blocks."""

    def __init__(self, in_features: int, arch: BertArch) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, arch.hidden_size)
        self.LayerNorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.self = BertSelfAttention(arch)
        self.output = BertDense(arch.hidden_size, arch)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, key_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.act = arch.hidden_act
        self.dense = nn.Linear(arch.hidden_size, arch.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activation(self.act, self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.attention = BertAttention(arch)
        self.intermediate = BertIntermediate(arch)
        self.output = BertDense(arch.intermediate_size, arch)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, key_mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Module):
    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(arch) for _ in range(arch.num_layers))


class BertModel(nn.Module):
    """`forward(input_ids [B, L], attention_mask [B, L])` -> hidden states `[B, L, hidden]`."""

    def __init__(self, arch: BertArch) -> None:
        super().__init__()
        self.arch = arch
        self.embeddings = BertEmbeddings(arch)
        self.encoder = BertEncoder(arch)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.arch.max_position_embeddings:
            raise ValueError(f"{input_ids.shape[1]} tokens exceed the model's "
                             f"{self.arch.max_position_embeddings} positions")
        key_mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: padding is never a key
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return x

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors in; every parameter must be loaded exactly once."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for hf_name, tensor in weights:
            name = hf_name.removeprefix("bert.")
            if name.startswith(_UNUSED_PREFIXES) or name in _UNUSED_BUFFERS:
                continue
            name = name.replace(".gamma", ".weight").replace(".beta", ".bias")  # old TF names
            if name not in params:
                raise ValueError(f"checkpoint tensor {hf_name!r} has no place in BertModel")
            params[name].data.copy_(tensor)
            loaded.add(name)
        missing = sorted(set(params) - loaded)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:5]}")
