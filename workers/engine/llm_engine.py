"""The synchronous engine: add requests, `step()` until done. One loop drives it.

`step()` is schedule -> run -> sample -> postprocess. Everything here is deterministic for a
given order of calls, which is what makes the engine testable against transformers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pagefleet.platform.protocol.messages import TokenLogprob, TopLogprob
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine import tensor_parallel
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.detokenizer import (
    IncrementalDetokenizer,
    find_stop_string,
    stop_holdback,
)
from pagefleet.workers.engine.errors import DuplicateRequestError, PromptTooLongError
from pagefleet.workers.engine.kv_cache_manager import KVCacheManager
from pagefleet.workers.engine.model_runner import ModelRunner
from pagefleet.workers.engine.outputs import EngineCounters, EngineStats, RequestDelta
from pagefleet.workers.engine.sampler import SampledLogprobs, Sampler
from pagefleet.workers.engine.scheduler import Scheduler, SchedulerConfig
from pagefleet.workers.engine.sequence import Sequence
from pagefleet.workers.models.loader import load_tokenizer, resolve_model

logger = logging.getLogger(__name__)

Prompt = str | list[int] | list[dict]


@dataclass(slots=True, eq=False)
class ChoiceStream:
    """One choice as the engine streams it: its sequence, the text detokenised so far, and
    how much of the tokens, text and logprobs was already handed out in deltas."""

    seq: Sequence
    detokenizer: IncrementalDetokenizer | None
    text: str = ""
    num_emitted_tokens: int = 0
    num_emitted_chars: int = 0
    logprobs: list[TokenLogprob] | None = None
    num_emitted_logprobs: int = 0
    final_emitted: bool = False
    holdback: int = 0  # characters held back while streaming: a stop string may be starting


@dataclass(slots=True, eq=False)
class RequestState:
    request_id: str
    choices: list[ChoiceStream]
    num_unfinished: int


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        resolved = resolve_model(config.model, load_format=config.load_format)
        self.resolved = resolved
        self.tokenizer = load_tokenizer(resolved, config.tokenizer)
        self.arch = resolved.arch
        self.tp_context = tensor_parallel.launch(config) if config.tensor_parallel_size > 1 else None
        self.runner = ModelRunner(config, resolved, tp_context=self.tp_context)
        settings = self.settings = self.runner.settings
        self.max_model_len = settings.max_model_len
        self.kv_cache = KVCacheManager(
            settings.num_kv_blocks, settings.block_size, settings.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=settings.max_num_seqs,
                max_num_batched_tokens=settings.max_num_batched_tokens,
                block_size=settings.block_size,
                admission_batch=settings.admission_batch,
            ),
            self.kv_cache,
        )
        self.eos_token_ids = list(self.arch.eos_token_ids)
        self.sampler = Sampler(self.eos_token_ids, settings.device, config.seed)
        self.requests: dict[str, RequestState] = {}
        self.counters = EngineCounters()

    # ---- requests -------------------------------------------------------------------------

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: ids as given, text encoded, messages through the chat template."""
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            if not prompt:
                raise ValueError("prompt must not be empty")
            if any(t < 0 or t >= self.arch.vocab_size for t in prompt):
                raise ValueError(f"prompt token ids must be in [0, {self.arch.vocab_size})")
            return list(prompt)
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer: pass prompt token ids")
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must not be empty")
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
            try:
                ids = self.tokenizer.apply_chat_template(
                    prompt, add_generation_prompt=True, tokenize=True
                )
            except Exception as exc:  # jinja2 errors, missing keys: the request is at fault
                raise ValueError(f"could not apply the chat template: {exc}") from exc
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            return list(ids)
        raise ValueError("prompt must be a string, a list of token ids or a list of chat messages")

    def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> list[int]:
        """Queue a request; returns its prompt token ids. Raises ValueError for bad input."""
        if request_id in self.requests:
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        prompt_ids = self.tokenize(prompt)
        room = self.max_model_len - len(prompt_ids)
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        if room < 1 or max_tokens > room:
            raise PromptTooLongError(len(prompt_ids), max_tokens, self.max_model_len)
        resume = resume or {}
        if any(i < 0 or i >= params.n for i in resume):
            raise ValueError(f"resume holds a choice index outside [0, {params.n})")
        choices = []
        for choice_index in range(params.n):
            done_ids = list(resume.get(choice_index, ()))
            seq = Sequence(
                request_id, choice_index, prompt_ids, params, max_tokens, output_token_ids=done_ids
            )
            detokenizer = None
            if self.tokenizer is not None:
                detokenizer = IncrementalDetokenizer(
                    self.tokenizer, prompt_ids + done_ids, params.skip_special_tokens
                )
            choices.append(
                ChoiceStream(seq, detokenizer, num_emitted_tokens=len(done_ids),
                            logprobs=[] if params.logprobs is not None else None,
                            holdback=stop_holdback(params.stop))
            )
        self.requests[request_id] = RequestState(request_id, choices, params.n)
        self.scheduler.add([choice.seq for choice in choices])
        self.counters.prompt_tokens += len(prompt_ids)
        return prompt_ids

    def abort(self, request_id: str) -> list[RequestDelta]:
        state = self.requests.pop(request_id, None)
        if state is None:
            return []
        self.scheduler.abort(request_id)
        deltas = []
        for choice in state.choices:
            if not choice.final_emitted:
                choice.seq.finish_reason = "abort"
                deltas.append(self._delta(choice, final=True))
        if deltas:
            deltas[-1].finished = True
        return deltas

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def shutdown(self) -> None:
        """Stop the tensor-parallel worker processes, if any (idempotent)."""
        if self.tp_context is not None:
            self.tp_context.shutdown()
            self.tp_context = None

    # ---- the step -------------------------------------------------------------------------

    def step(self) -> list[RequestDelta]:
        scheduled = self.scheduler.schedule()
        if scheduled.is_empty:
            return []
        sampling = [item.seq for item in scheduled.scheduled if item.needs_sample]
        logits = self.runner.execute(scheduled)
        self.scheduler.update(scheduled)
        if not sampling:
            return []
        sampled = self.sampler(logits, sampling)
        touched: dict[str, RequestState] = {}
        for seq, token_id, logprobs in zip(sampling, sampled.token_ids, sampled.logprobs, strict=True):
            state = self.requests[seq.request_id]
            self._append_token(state.choices[seq.choice_index], token_id, logprobs)
            touched[seq.request_id] = state
        self.counters.generation_tokens += len(sampling)
        return [delta for state in touched.values() for delta in self._collect(state)]

    def _append_token(self, choice: ChoiceStream, token_id: int, logprobs: SampledLogprobs | None) -> None:
        seq = choice.seq
        params = seq.params
        seq.output_token_ids.append(token_id)
        if choice.logprobs is not None and logprobs is not None:
            choice.logprobs.append(self._token_logprob(token_id, logprobs))
        can_stop = seq.num_output_tokens >= params.min_tokens
        if can_stop and token_id in params.stop_token_ids:
            return self._finish(choice, "stop", token_id)
        if can_stop and not params.ignore_eos and token_id in self.eos_token_ids:
            return self._finish(choice, "stop", None)
        if choice.detokenizer is not None:
            new_text = choice.detokenizer.add(token_id)
            choice.text += new_text
            match = find_stop_string(choice.text, len(new_text), params.stop,
                                     params.include_stop_str_in_output) if can_stop else None
            if match is not None:
                choice.text = match.text
                return self._finish(choice, "stop", match.stop)
        if seq.num_output_tokens >= seq.max_tokens or seq.num_tokens >= self.max_model_len:
            self._finish(choice, "length", None)

    def _finish(self, choice: ChoiceStream, reason: str, stop_reason: str | int | None) -> None:
        choice.seq.stop_reason = stop_reason
        self.scheduler.finish(choice.seq, reason)

    def _collect(self, state: RequestState) -> list[RequestDelta]:
        deltas = []
        for choice in state.choices:
            seq = choice.seq
            if choice.final_emitted:
                continue
            if seq.is_finished:
                deltas.append(self._delta(choice, final=True))
                state.num_unfinished -= 1
            elif seq.num_output_tokens > choice.num_emitted_tokens:
                delta = self._delta(choice, final=False)
                if delta.token_ids or delta.text:
                    deltas.append(delta)
        if state.num_unfinished == 0:
            self.requests.pop(state.request_id, None)
            if deltas:
                deltas[-1].finished = True
        return deltas

    def _delta(self, choice: ChoiceStream, final: bool) -> RequestDelta:
        seq = choice.seq
        holdback = 0 if final else choice.holdback
        text_end = max(choice.num_emitted_chars, len(choice.text) - holdback)
        logprobs = None
        if choice.logprobs is not None:
            logprobs = choice.logprobs[choice.num_emitted_logprobs :]
            choice.num_emitted_logprobs = len(choice.logprobs)
        delta = RequestDelta(
            request_id=seq.request_id,
            index=seq.choice_index,
            offset=choice.num_emitted_tokens,
            token_ids=seq.output_token_ids[choice.num_emitted_tokens :],
            text=choice.text[choice.num_emitted_chars : text_end],
            logprobs=logprobs,
            finish_reason=seq.finish_reason if final else None,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_prompt_tokens,
            stop_reason=seq.stop_reason if final else None,
        )
        choice.num_emitted_tokens = seq.num_output_tokens
        choice.num_emitted_chars = text_end
        choice.final_emitted = final
        return delta

    def _token_logprob(self, token_id: int, logprobs: SampledLogprobs) -> TokenLogprob:
        def text(tid: int) -> str:
            return self.tokenizer.decode([tid]) if self.tokenizer is not None else ""

        top = [TopLogprob(t, text(t), lp) for t, lp in
               zip(logprobs.top_token_ids, logprobs.top_logprobs, strict=True)]
        return TokenLogprob(token_id, text(token_id), logprobs.logprob, top)

    # ---- stats ----------------------------------------------------------------------------

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_cache_usage=self.kv_cache.usage,
            prefix_cache_hit_rate=self.kv_cache.prefix_cache_hit_rate,
            prompt_tokens_total=self.counters.prompt_tokens,
            generation_tokens_total=self.counters.generation_tokens,
            num_preemptions_total=self.scheduler.num_preemptions,
            max_num_seqs=self.settings.max_num_seqs,
            num_kv_blocks=self.settings.num_kv_blocks,
        )
