"""The host-side launch arithmetic matches Triton's constexpr functions it replaces."""

from __future__ import annotations

import triton

from pagefleet.kernels.host_math import cdiv, next_power_of_2


def test_next_power_of_2_matches_triton() -> None:
    for n in [*range(1, 4200), 2**20 - 1, 2**20, 2**20 + 1]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
    assert next_power_of_2(0) == 1


def test_cdiv_matches_triton() -> None:
    for a in range(0, 300):
        for b in (1, 2, 3, 16, 64, 128, 257):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)
