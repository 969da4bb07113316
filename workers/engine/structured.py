"""Grammar-constrained decoding (structured outputs) with xgrammar.

A request's `StructuredOutput` compiles once per distinct grammar into a token-level automaton
(xgrammar caches compiled grammars by their text, so a repeated schema costs nothing); each
constrained sequence holds a `GrammarState`, a matcher advanced with every token the host
accepts. Before a constrained row is sampled, its matcher writes the allowed next tokens into
a bitmask that the sampler applies to that row alone, so unconstrained rows pay nothing.

Compiling can take from milliseconds to seconds for a large schema: the asynchronous engine
compiles on a worker thread before it hands the request to the engine thread, whose own
compile is then a cache hit. JSON grammars allow no free whitespace between tokens: a small
model left free to pick whitespace can fill `max_tokens` with it.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from pagefleet.platform.protocol.sampling import StructuredOutput

if TYPE_CHECKING:
    import torch


class GrammarError(ValueError):
    """The grammar, schema or regular expression of a request cannot be compiled."""


class GrammarState:
    """One sequence's position in its grammar."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def accept(self, token_id: int) -> bool:
        """Advance with a chosen token; False if the grammar does not allow it (the sequence
        then continues unconstrained rather than failing the request)."""
        if self.matcher.is_terminated():
            return False
        return bool(self.matcher.accept_token(token_id))

    @property
    def terminated(self) -> bool:
        """The grammar is complete and its stop token accepted: nothing is left to constrain."""
        return bool(self.matcher.is_terminated())

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, row)


class StructuredOutputs:
    """The compiler for one tokenizer; thread-safe (the async engine compiles off its thread)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = list(stop_token_ids)
        self._compiler: Any = None
        self._lock = threading.Lock()

    def _get_compiler(self) -> Any:
        with self._lock:  # xgrammar imports in seconds: only models that get a grammar pay
            if self._compiler is None:
                if self.tokenizer is None:
                    raise GrammarError("structured outputs need a model with a tokenizer")
                import xgrammar

                info = xgrammar.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.stop_token_ids)
                self._compiler = xgrammar.GrammarCompiler(info, max_threads=2, cache_enabled=True)
            return self._compiler

    def compile(self, spec: StructuredOutput) -> Any:
        """The compiled grammar of `spec` (cached); raises `GrammarError` for a bad spec."""
        compiler = self._get_compiler()
        try:
            if spec.kind == "json_object":
                return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False)
            if spec.kind == "json_schema":
                return compiler.compile_json_schema(spec.spec, any_whitespace=False)
            if spec.kind == "regex":
                return compiler.compile_regex(spec.spec)
            if spec.kind == "choice":
                choices = json.loads(spec.spec)
                return compiler.compile_grammar(
                    "root ::= " + " | ".join(json.dumps(choice) for choice in choices))
            return compiler.compile_grammar(spec.spec)
        except GrammarError:
            raise
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError subclasses
            raise GrammarError(f"invalid {_PARAM_OF[spec.kind]}: {exc}") from exc

    def start(self, spec: StructuredOutput, emitted: list[int]) -> GrammarState | None:
        """A matcher at the start of the output, advanced over tokens already emitted (a
        resumed request continues where its grammar was); None once nothing is left to
        constrain."""
        import xgrammar

        state = GrammarState(xgrammar.GrammarMatcher(self.compile(spec)))
        for token_id in emitted:
            if not state.accept(token_id):
                return None
        return None if state.terminated else state



def apply_grammar_masks(logits: torch.Tensor, rows: list[int], states: list[GrammarState]) -> None:
    """Mask, in place, every token each constrained row's grammar forbids next."""
    import xgrammar

    bitmask = xgrammar.allocate_token_bitmask(logits.shape[0], logits.shape[-1])
    for row, state in zip(rows, states, strict=True):
        state.fill_bitmask(bitmask, row)
    if logits.device.type != "cpu":
        bitmask = bitmask.to(logits.device, non_blocking=True)
    xgrammar.apply_token_bitmask_inplace(logits, bitmask, indices=rows)

_PARAM_OF = {
    "json_object": "response_format", "json_schema": "json schema", "regex": "guided_regex",
    "choice": "guided_choice", "grammar": "guided_grammar",
}
