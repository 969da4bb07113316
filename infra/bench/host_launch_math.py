"""Host cost of the launch arithmetic: Triton's constexpr functions against kernels/host_math.

    PYTHONPATH=. python infra/bench/host_launch_math.py

Prints, for `cdiv` and `next_power_of_2`, the best of seven batches of 20,000 Python calls
each way, measured in the same run (no GPU needed: this is host time only).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import triton

from pagefleet.kernels.host_math import cdiv, next_power_of_2


def best_us(fn: Callable[[int], int], calls: int = 20_000, batches: int = 7) -> float:
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        for i in range(1, calls + 1):
            fn(i)
        times.append((time.perf_counter() - start) / calls * 1e6)
    return min(times)


def main() -> None:
    print(f"triton {triton.__version__}")
    for name, theirs, ours in (
        ("next_power_of_2", triton.next_power_of_2, next_power_of_2),
        ("cdiv", lambda i: triton.cdiv(i, 64), lambda i: cdiv(i, 64)),
    ):
        t, o = best_us(theirs), best_us(ours)
        print(f"{name}: triton {t:.2f} us a call, host_math {o:.3f} us ({t / o:.0f}x)")


if __name__ == "__main__":
    main()
