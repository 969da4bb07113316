from __future__ import annotations

import pytest

from tests.support.hf_reference import HFReference, load_hf_reference


@pytest.fixture(scope="session")
def hf_reference() -> HFReference:
    return load_hf_reference()
