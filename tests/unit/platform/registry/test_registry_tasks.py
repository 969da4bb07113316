"""`task` and `matryoshka` in the registry: embedding models beside generation models."""

from __future__ import annotations

import pytest

from pagefleet.platform.registry import RegistryError, load_registry, parse_registry


def _one(**entry) -> dict:
    return {"models": {"m": {"source": "s", **entry}}}


def test_task_defaults_to_generate() -> None:
    spec = parse_registry(_one()).get("m")
    assert (spec.task, spec.matryoshka) == ("generate", False)


def test_an_embedding_model_may_allow_matryoshka_dimensions() -> None:
    spec = parse_registry(_one(task="embed", matryoshka=True)).get("m")
    assert (spec.task, spec.matryoshka) == ("embed", True)


@pytest.mark.parametrize(("entry", "message"), [
    ({"task": "classify"}, "task must be one of"),
    ({"matryoshka": True}, "matryoshka needs task: embed"),
    ({"task": "embed", "matryoshka": "yes"}, "matryoshka must be true or false"),
])
def test_bad_tasks_name_model_and_key(entry, message) -> None:
    with pytest.raises(RegistryError, match=f"model 'm'.*{message}"):
        parse_registry(_one(**entry))


def test_default_registry_serves_the_embedding_model_beside_the_chat_model() -> None:
    registry = load_registry()
    chat, embed = registry.get("smollm2-135m-instruct"), registry.get("all-minilm-l6-v2")
    assert chat.task == "generate" and embed.task == "embed" and not embed.matryoshka
    assert next(iter(registry.models)) == "smollm2-135m-instruct"  # still the CLI's default model
    # No worker until the first embeddings request: `make up` and the tests pay nothing for it.
    assert embed.scaling.min_replicas == 0 and embed.profile.accelerator == "cpu"
