"""The offline API, shaped like vLLM's: `LLM(model=...).generate(prompts, params)`."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence as SequenceOf

from pagefleet.platform.protocol.sampling import SamplingParams
from pagefleet.workers.engine.config import DEFAULT_MODEL, EngineConfig
from pagefleet.workers.engine.llm_engine import LLMEngine, Prompt
from pagefleet.workers.engine.outputs import CompletionOutput, RequestDelta, RequestOutput


class LLM:
    """Batch generation: every prompt is queued at once and the engine batches continuously."""

    def __init__(self, model: str = DEFAULT_MODEL, **engine_args: object) -> None:
        known = {f.name for f in dataclasses.fields(EngineConfig)}
        unknown = sorted(set(engine_args) - known)
        if unknown:
            raise TypeError(f"unknown engine arguments: {', '.join(unknown)}")
        self.engine = LLMEngine(EngineConfig(model=model, **engine_args))  # type: ignore[arg-type]
        self._request_ids = itertools.count()

    def get_tokenizer(self):
        return self.engine.tokenizer

    def shutdown(self) -> None:
        """Release tensor-parallel worker processes (single-process engines hold none)."""
        self.engine.shutdown()

    def generate(
        self,
        prompts: Prompt | SequenceOf[Prompt],
        sampling_params: SamplingParams | SequenceOf[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Outputs in prompt order. Accepts a string, token ids, or a list of either."""
        if isinstance(prompts, str) or (
            isinstance(prompts, list) and prompts and isinstance(prompts[0], int)
        ):
            prompts = [prompts]  # type: ignore[list-item]
        return self._run(list(prompts), sampling_params)

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | SequenceOf[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """One conversation or a list of them, through the model's chat template."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        return self._run(list(conversations), sampling_params)  # type: ignore[arg-type]

    def _run(
        self, prompts: list[Prompt], sampling_params: SamplingParams | SequenceOf[SamplingParams] | None
    ) -> list[RequestOutput]:
        if sampling_params is None:
            sampling_params = SamplingParams()
        params_list = (
            [sampling_params] * len(prompts)
            if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        )
        if len(params_list) != len(prompts):
            raise ValueError(
                f"got {len(params_list)} sampling params for {len(prompts)} prompts"
            )
        outputs: dict[str, RequestOutput] = {}
        order = []
        for prompt, params in zip(prompts, params_list, strict=True):
            request_id = str(next(self._request_ids))
            prompt_ids = self.engine.add_request(request_id, prompt, params)
            outputs[request_id] = RequestOutput(
                request_id=request_id,
                prompt=prompt if isinstance(prompt, str) else None,
                prompt_token_ids=prompt_ids,
                outputs=[CompletionOutput(i, "", [], None) for i in range(params.n)],
            )
            order.append(request_id)
        # Each choice's text pieces, joined at the end: `+=` on a str attribute copies the
        # whole text every step, O(n^2) over a long generation.
        texts: dict[tuple[str, int], list[str]] = {}
        while self.engine.has_unfinished():
            for delta in self.engine.step():
                _merge(outputs[delta.request_id], delta)
                if delta.text:
                    texts.setdefault((delta.request_id, delta.index), []).append(delta.text)
        for (request_id, index), pieces in texts.items():
            outputs[request_id].outputs[index].text = "".join(pieces)
        return [outputs[request_id] for request_id in order]


def _merge(output: RequestOutput, delta: RequestDelta) -> None:
    """Everything of a delta but its text (`_run` joins the texts)."""
    choice = output.outputs[delta.index]
    choice.token_ids.extend(delta.token_ids)
    if delta.logprobs is not None:
        if choice.logprobs is None:
            choice.logprobs = []
        choice.logprobs.extend(delta.logprobs)
    if delta.finish_reason is not None:
        choice.finish_reason = delta.finish_reason
        choice.stop_reason = delta.stop_reason
    output.num_cached_tokens = delta.num_cached_tokens
    if delta.prompt_logprobs is not None:
        output.prompt_logprobs = [None, *delta.prompt_logprobs[1:]]
    output.finished = output.finished or delta.finished
