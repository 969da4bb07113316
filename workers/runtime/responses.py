"""OpenAI response objects for finished async jobs, built from a request's transcript.

The shapes and builders are the protocol's (`pagefleet.platform.protocol.openai`), the same
the gateway answers synchronous requests with, so a job's `result` equals what
`/v1/chat/completions` or `/v1/completions` would have answered for the same request.
"""

from __future__ import annotations

from functools import partial

import msgspec

from pagefleet.platform.protocol import FinalEvent, RequestEnvelope
from pagefleet.platform.protocol.openai import chat_completion, completion, prompt_part
from pagefleet.platform.protocol.tool_parsers import finished_choice
from pagefleet.platform.protocol.tools import call_id
from pagefleet.workers.runtime.transcript import Transcript


def openai_response(envelope: RequestEnvelope, transcript: Transcript, final: FinalEvent) -> dict:
    """The `chat.completion` or `text_completion` object for a finished request, as plain
    data for the job record."""
    build = chat_completion if envelope.kind == "chat" else completion
    response_id = envelope.job_id or envelope.request_id  # the gateway's response id for a job
    prompt = prompt_part(envelope, transcript.prompt_token_ids, transcript.prompt_logprobs)
    choices = [finished_choice(choice.text, choice.logprobs, reason, envelope.tools,
                               partial(call_id, response_id, i),
                               choice.token_ids if envelope.return_token_ids else None, prompt)
               for i, (choice, reason) in enumerate(zip(transcript.choices, final.finish_reasons,
                                                        strict=True))]
    response = build(response_id, int(envelope.created_at), envelope.model, choices, final.usage)
    return msgspec.to_builtins(response)
