from __future__ import annotations

import pytest

from tests.support.hf_reference import HFReference, load_hf_reference


@pytest.fixture(scope="session")
def hf_reference() -> HFReference:
    return load_hf_reference()


@pytest.fixture(scope="session")
def llm():
    """One engine on the default model for the feature tests (loading costs seconds)."""
    from pagefleet.workers import LLM

    return LLM(max_model_len=512)
