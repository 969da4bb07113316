"""An embeddings request body -> one envelope per input (pure), refusing what the gateway can
judge without the model: empty inputs, too many of them, `dimensions` for a model that is not
an embedding model or not trained for truncation (Matryoshka)."""

from __future__ import annotations

from pagefleet.platform.gateway.completions.params import (
    PreparedRequest,
    RequestContext,
    prompt_list,
)
from pagefleet.platform.gateway.embeddings.schemas import EmbeddingRequest
from pagefleet.platform.gateway.errors import bad_request
from pagefleet.platform.protocol import RequestEnvelope, SamplingParams
from pagefleet.platform.registry import ModelSpec


def input_list(body: EmbeddingRequest, max_inputs: int) -> list[str | list[int]]:
    """The inputs one by one; OpenAI refuses empty strings and empty lists, and so do we."""
    inputs = prompt_list(body.input, "input")
    if any(not item for item in inputs):
        raise bad_request("input must not contain empty strings", param="input")
    if len(inputs) > max_inputs:
        raise bad_request(f"input may hold at most {max_inputs} items, got {len(inputs)}", param="input")
    if any(t < 0 for item in inputs if isinstance(item, list) for t in item):
        raise bad_request("token ids must be non-negative", param="input")
    return inputs


def check_model(body: EmbeddingRequest, spec: ModelSpec) -> None:
    if spec.task != "embed":
        raise bad_request(f"The model `{body.model}` does not support embeddings; it serves "
                          "/v1/completions and /v1/chat/completions.", param="model",
                          code="model_not_embedding")
    if body.dimensions is None:
        return
    if not spec.matryoshka:
        raise bad_request(f"The model `{body.model}` does not support `dimensions` (it was not "
                          "trained for Matryoshka truncation).", param="dimensions")
    if body.dimensions < 1:
        raise bad_request(f"dimensions must be at least 1, got {body.dimensions}", param="dimensions")


def prepare_embedding(body: EmbeddingRequest, spec: ModelSpec, context: RequestContext,
                      max_inputs: int) -> PreparedRequest:
    check_model(body, spec)
    inputs = input_list(body, max_inputs)
    params = SamplingParams()
    envelopes = [
        RequestEnvelope(
            request_id=f"{context.response_id}-{k}", model=body.model, kind="embedding",
            params=params, prompt=item, created_at=context.created_at, deadline=context.deadline,
            owner=context.owner, job_id=context.job_id, dimensions=body.dimensions,
        )
        for k, item in enumerate(inputs)
    ]
    return PreparedRequest(
        response_id=context.response_id, model=body.model, kind="embedding", envelopes=envelopes,
        n=1, created=int(context.created_at), stream=False, include_usage=False, logprobs=False,
        encoding_format=body.encoding_format or "float",
    )
