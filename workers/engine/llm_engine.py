"""The synchronous engine: add requests, `step()` until done. One loop drives it.

`step()` is schedule -> run -> sample -> postprocess. Everything here is deterministic for a
given order of calls, which is what makes the engine testable against transformers.

With asynchronous scheduling the postprocessing of a step runs one step behind: `step()`
schedules and launches step N, whose decode inputs are step N-1's choices read on the device,
and only then reads N-1's tokens back (detokenise, stop checks, deltas) while N runs. A chosen
token the host has not read is a `PENDING_TOKEN` in its sequence: it counts for lengths and
blocks, never for hashes or text. A sequence that stopped at N-1 has one wasted token in N,
which is dropped; `max_tokens` is exact because the scheduler counts pending tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pagefleet.platform.protocol.messages import TokenLogprob, TopLogprob
from pagefleet.platform.protocol.phases import PhaseLog
from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine import tensor_parallel
from pagefleet.workers.engine.config import EngineConfig
from pagefleet.workers.engine.detokenizer import (
    IncrementalDetokenizer,
    find_stop_string,
    raw_decoder,
    stop_holdback,
)
from pagefleet.workers.engine.errors import (
    DuplicateRequestError,
    EngineAsleepError,
    EngineBusyError,
    InvalidParameterError,
    PromptTooLongError,
)
from pagefleet.workers.engine.kv_cache_manager import KVCacheManager
from pagefleet.workers.engine.model_runner import InFlightTokens, ModelRunner, WakeTimes
from pagefleet.workers.engine.outputs import EngineCounters, EngineStats, RequestDelta
from pagefleet.workers.engine.preemption import estimate_cost
from pagefleet.workers.engine.prompt_encoder import Prompt, encode_prompt
from pagefleet.workers.engine.prompt_logprobs import prompt_logprobs
from pagefleet.workers.engine.sampler import (
    DeviceSample,
    SampledLogprobs,
    Sampler,
    needs_token_values,
)
from pagefleet.workers.engine.scheduler import Scheduler, SchedulerConfig
from pagefleet.workers.engine.sequence import PENDING_TOKEN, Sequence
from pagefleet.workers.engine.structured import GrammarError, StructuredOutputs
from pagefleet.workers.models.loader import load_tokenizer, resolve_model

logger = logging.getLogger(__name__)



@dataclass(slots=True, eq=False)
class ChoiceStream:
    """One choice as the engine streams it: its sequence, the text detokenised but not yet
    handed out, and how much of the tokens and logprobs was already handed out in deltas.

    Only the unsent text is kept: a stop string can only end in the newest text and start
    at most `holdback` characters before it, which a delta never hands out, so nothing
    before them is read again. (Keeping the whole text made every token copy it: O(n^2)
    over a generation, microseconds a token past ~10k tokens.)"""

    seq: Sequence
    detokenizer: IncrementalDetokenizer | None
    unsent: str = ""
    num_ready_tokens: int = 0  # output tokens the host has read (the rest are pending)
    num_emitted_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    num_emitted_logprobs: int = 0
    final_emitted: bool = False
    holdback: int = 0  # characters held back while streaming: a stop string may be starting
    prompt: PromptReport | None = None  # sent with the choice's first delta, then cleared


@dataclass(frozen=True, slots=True)
class PromptReport:
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None


@dataclass(frozen=True, slots=True)
class LaunchedStep:
    """A step whose choices are on the device: which sequence sampled which row, and the
    position in its outputs that the row's token fills."""

    seqs: list[Sequence]
    output_positions: list[int]
    sample: DeviceSample

    def tokens(self) -> InFlightTokens:
        return InFlightTokens(self.sample.token_ids, {seq.seq_id: row for row, seq in enumerate(self.seqs)})


@dataclass(slots=True, eq=False)
class RequestState:
    request_id: str
    choices: list[ChoiceStream]
    num_unfinished: int


class LLMEngine:
    def __init__(self, config: EngineConfig, tokenizer: Any | None = None) -> None:
        """`tokenizer`: one already loaded for this config (a spare worker preloads it while it
        waits), so a cold start does not read it again."""
        self.config = config
        self.phases = PhaseLog()  # readiness phases (`protocol.phases`), for cold-start reports
        resolved = resolve_model(config.model, load_format=config.load_format)
        self.resolved = resolved
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(resolved, config.tokenizer)
        self._decode = raw_decoder(self.tokenizer) if self.tokenizer is not None else None
        self.phases.mark("tokenizer_loaded")
        self.arch = resolved.arch
        self.tp_context = tensor_parallel.launch(config) if config.tensor_parallel_size > 1 else None
        self.runner = ModelRunner(config, resolved, tp_context=self.tp_context, phases=self.phases)
        settings = self.settings = self.runner.settings
        self.max_model_len = settings.max_model_len
        num_host_blocks = self.runner.allocate_swap_space(int(config.swap_space * 2**30))
        self.kv_cache = KVCacheManager(
            settings.num_kv_blocks, settings.block_size, settings.enable_prefix_caching,
            release_window=self.arch.kv_release_window,
            num_host_blocks=num_host_blocks,
        )
        preemption_cost = None
        if num_host_blocks > 0:
            preemption_cost = estimate_cost(settings.device, self.runner.num_params,
                                            self.runner.bytes_per_block, config.preemption_mode)
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_num_seqs=settings.max_num_seqs,
                max_num_batched_tokens=settings.max_num_batched_tokens,
                block_size=settings.block_size,
                admission_batch=settings.admission_batch,
            ),
            self.kv_cache,
            preemption_cost,
        )
        self.eos_token_ids = list(self.arch.eos_token_ids)
        self.sampler = Sampler(self.eos_token_ids, settings.device, config.seed)
        self.structured = StructuredOutputs(self.tokenizer, self.arch.vocab_size, self.eos_token_ids)
        self.requests: dict[str, RequestState] = {}
        self.counters = EngineCounters()
        self.in_flight: LaunchedStep | None = None  # asynchronous scheduling only
        self.phases.mark("engine_ready")

    # ---- requests -------------------------------------------------------------------------

    def tokenize(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: ids as given, text encoded, messages through the chat template."""
        return encode_prompt(self.tokenizer, self.arch.vocab_size, prompt)

    def add_request(
        self, request_id: str, prompt: Prompt, params: SamplingParams,
        resume: dict[int, list[int]] | None = None,
    ) -> list[int]:
        """Queue a request; returns its prompt token ids. Raises ValueError for bad input."""
        if self.runner.is_sleeping:
            raise EngineAsleepError()
        if request_id in self.requests:
            raise DuplicateRequestError(f"request {request_id!r} is already running")
        prompt_ids = self.tokenize(prompt)
        if params.truncate_prompt_tokens is not None:  # -1: as much as the context holds
            keep = params.truncate_prompt_tokens if params.truncate_prompt_tokens > 0 else self.max_model_len
            prompt_ids = prompt_ids[-keep:]
        room = self.max_model_len - len(prompt_ids)
        max_tokens = params.max_tokens if params.max_tokens is not None else room
        if room < 1 or max_tokens > room:
            raise PromptTooLongError(len(prompt_ids), max_tokens, self.max_model_len)
        resume = resume or {}
        if any(i < 0 or i >= params.n for i in resume):
            raise ValueError(f"resume holds a choice index outside [0, {params.n})")
        self._check_vocabulary(params)
        if params.structured_output is not None:
            self.compile_grammar(params)  # fails the request before anything is queued
        choices = []
        for choice_index in range(params.n):
            done_ids = list(resume.get(choice_index, ()))
            seq = Sequence(
                request_id, choice_index, prompt_ids, params, max_tokens, output_token_ids=done_ids
            )
            if params.structured_output is not None:
                seq.grammar = self.structured.start(params.structured_output, done_ids)
            detokenizer = None
            if self._decode is not None:
                detokenizer = IncrementalDetokenizer(
                    self._decode, prompt_ids + done_ids, params.skip_special_tokens
                )
            choices.append(
                ChoiceStream(seq, detokenizer, num_ready_tokens=len(done_ids),
                             num_emitted_tokens=len(done_ids),
                            logprobs=[] if params.logprobs is not None else None,
                            holdback=stop_holdback(params.stop))
            )
        if not resume.get(0):  # a resumed choice 0 already reported its prompt
            choices[0].prompt = PromptReport(prompt_ids, self._prompt_logprobs(prompt_ids, params))
        self.requests[request_id] = RequestState(request_id, choices, params.n)
        self.scheduler.add([choice.seq for choice in choices])
        self.counters.prompt_tokens += len(prompt_ids)
        return prompt_ids

    def compile_grammar(self, params: SamplingParams) -> None:
        """Compile (and cache) the request's grammar; thread-safe, so the asynchronous engine
        calls it off the engine thread and `add_request` then finds it cached."""
        if params.structured_output is None:
            return
        try:
            self.structured.compile(params.structured_output)
        except GrammarError as exc:
            param = "guided_" + params.structured_output.kind if params.structured_output.kind in (
                "regex", "choice", "grammar") else "response_format"
            raise InvalidParameterError(str(exc), param) from exc

    def _prompt_logprobs(self, prompt_ids: list[int], params: SamplingParams) -> list[TokenLogprob] | None:
        if params.prompt_logprobs is None:
            return None
        if self.tp_context is not None:
            raise InvalidParameterError("prompt_logprobs is not supported with tensor parallelism",
                                        "prompt_logprobs")
        return prompt_logprobs(self.runner.forward_prompt(prompt_ids), self.runner.model.compute_logits,
                               prompt_ids, params.prompt_logprobs, self._token_text)

    def _check_vocabulary(self, params: SamplingParams) -> None:
        vocab = self.arch.vocab_size
        for name, ids in (("stop_token_ids", params.stop_token_ids or ()),
                          ("logit_bias", params.logit_bias or {})):
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise InvalidParameterError(
                    f"{name} holds token ids outside the vocabulary [0, {vocab}): {bad[:5]}", name)

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

    # ---- standby ---------------------------------------------------------------------------

    @property
    def is_sleeping(self) -> bool:
        return self.runner.is_sleeping

    def sleep(self) -> None:
        """Standby: weights to (pinned) host memory, KV cache and CUDA graphs freed, so the
        device is free for another model while this process stays. Refused while requests
        are unfinished: their KV would be lost. Idempotent."""
        if self.requests:
            raise EngineBusyError(len(self.requests))
        if self.tp_context is not None:
            raise RuntimeError("sleep needs tensor_parallel_size 1: the other ranks do not "
                               "sleep yet")
        if self.in_flight is not None:  # a wasted token of a finished sequence: drop it
            self._settle(self.in_flight)
            self.in_flight = None
        self.kv_cache.reset_prefix_cache()  # the cached blocks' contents go with the cache
        self.runner.sleep()

    def wake(self) -> WakeTimes:
        """Back from standby: weights on the device, an empty KV cache, graphs captured;
        returns how long each took (logged too: it is a cold-start phase)."""
        times = self.runner.wake()
        if times.total_s:
            logger.info("woke in %.3f s (weights %.3f s, KV cache %.3f s, graphs %.3f s)",
                        times.total_s, times.weights_s, times.kv_cache_s, times.graphs_s)
        return times

    def shutdown(self) -> None:
        """Stop the tensor-parallel worker processes, if any (idempotent)."""
        if self.tp_context is not None:
            self.tp_context.shutdown()
            self.tp_context = None

    # ---- the step -------------------------------------------------------------------------

    def step(self) -> list[RequestDelta]:
        scheduled = self.scheduler.schedule()
        self.runner.apply_swaps(scheduled)  # even for an empty step: a swap-out is owed
        previous, self.in_flight = self.in_flight, None
        if scheduled.is_empty:
            return self._settle(previous) if previous is not None else []
        sampling = [item.seq for item in scheduled.scheduled if item.needs_sample]
        deltas: list[RequestDelta] = []
        if previous is not None and any(needs_token_values(seq) for seq in sampling):
            deltas, previous = self._settle(previous), None  # penalties read token values
        logits = self.runner.execute(scheduled, previous.tokens() if previous is not None else None)
        launched = None
        if sampling:
            launched = LaunchedStep(sampling, [seq.num_output_tokens for seq in sampling],
                                    self.sampler.sample(logits, sampling))
            if self.settings.async_scheduling:  # the other ranks' next pending inputs
                self.runner.tp.broadcast_from_driver(launched.sample.token_ids)
            for seq in sampling:
                seq.output_token_ids.append(PENDING_TOKEN)
        self.scheduler.update(scheduled)
        if previous is not None:
            deltas += self._settle(previous)  # while the device runs this step
        if launched is not None and self.settings.async_scheduling:
            self.in_flight = launched
        elif launched is not None:
            deltas += self._settle(launched)
        return deltas

    def _settle(self, launched: LaunchedStep) -> list[RequestDelta]:
        """Read a launched step's tokens back and turn them into deltas. Rows of requests that
        were aborted or sequences that stopped meanwhile are dropped."""
        sampled = launched.sample.to_host()
        touched: dict[str, RequestState] = {}
        rows = zip(launched.seqs, launched.output_positions, sampled.token_ids, sampled.logprobs,
                   strict=True)
        for seq, position, token_id, logprobs in rows:
            state = self.requests.get(seq.request_id)
            if (state is None or seq.is_finished or position >= seq.num_output_tokens
                    or seq.output_token_ids[position] != PENDING_TOKEN):
                continue
            self._accept_token(state.choices[seq.choice_index], position, token_id, logprobs)
            touched[seq.request_id] = state
            self.counters.generation_tokens += 1
        return [delta for state in touched.values() for delta in self._collect(state)]

    def _accept_token(self, choice: ChoiceStream, position: int, token_id: int,
                      logprobs: SampledLogprobs | None) -> None:
        seq = choice.seq
        params = seq.params
        seq.output_token_ids[position] = token_id
        choice.num_ready_tokens = num_output = position + 1
        if choice.logprobs is not None and logprobs is not None:
            choice.logprobs.append(self._token_logprob(token_id, logprobs))
        if seq.grammar is not None and (not seq.grammar.accept(token_id) or seq.grammar.terminated):
            seq.grammar = None  # complete (or, past its end, unconstrained): masks no more rows
        can_stop = num_output >= params.min_tokens
        if can_stop and token_id in params.stop_token_ids:
            return self._finish(choice, "stop", token_id)
        if can_stop and not params.ignore_eos and token_id in self.eos_token_ids:
            return self._finish(choice, "stop", None)
        if choice.detokenizer is not None:
            new_text = choice.detokenizer.add(token_id)
            choice.unsent += new_text
            match = find_stop_string(choice.unsent, len(new_text), params.stop,
                                     params.include_stop_str_in_output) if can_stop else None
            if match is not None:
                choice.unsent = match.text
                return self._finish(choice, "stop", match.stop)
        if num_output >= seq.max_tokens or seq.num_prompt_tokens + num_output >= self.max_model_len:
            self._finish(choice, "length", None)

    def _finish(self, choice: ChoiceStream, reason: str, stop_reason: str | int | None) -> None:
        seq = choice.seq
        del seq.output_token_ids[choice.num_ready_tokens:]  # a token chosen past the end
        seq.stop_reason = stop_reason
        self.scheduler.finish(seq, reason)

    def _collect(self, state: RequestState) -> list[RequestDelta]:
        deltas = []
        for choice in state.choices:
            seq = choice.seq
            if choice.final_emitted:
                continue
            if seq.is_finished:
                deltas.append(self._delta(choice, final=True))
                state.num_unfinished -= 1
            elif choice.num_ready_tokens > choice.num_emitted_tokens:
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
        text_end = max(0, len(choice.unsent) - holdback)
        logprobs = None
        if choice.logprobs is not None:
            logprobs = choice.logprobs[choice.num_emitted_logprobs :]
            choice.num_emitted_logprobs = len(choice.logprobs)
        delta = RequestDelta(
            request_id=seq.request_id,
            index=seq.choice_index,
            offset=choice.num_emitted_tokens,
            token_ids=seq.output_token_ids[choice.num_emitted_tokens : choice.num_ready_tokens],
            text=choice.unsent[:text_end],
            logprobs=logprobs,
            finish_reason=seq.finish_reason if final else None,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_cached_tokens=seq.num_cached_prompt_tokens,
            stop_reason=seq.stop_reason if final else None,
        )
        if choice.prompt is not None:
            delta.prompt_token_ids, delta.prompt_logprobs = choice.prompt.token_ids, choice.prompt.logprobs
            choice.prompt = None
        choice.num_emitted_tokens = choice.num_ready_tokens
        choice.unsent = choice.unsent[text_end:]
        choice.final_emitted = final
        return delta

    def _token_text(self, token_id: int) -> str:
        """One token's text (logprobs name every top alternative: several a token), through
        the same direct decode as the detokeniser."""
        return self._decode([token_id], False) if self._decode is not None else ""

    def _token_logprob(self, token_id: int, logprobs: SampledLogprobs) -> TokenLogprob:
        text = self._token_text
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
            num_swapped_out_total=self.scheduler.num_swapped_out,
            is_sleeping=self.runner.is_sleeping,
        )
