"""`freeze_startup_heap`: objects alive at the call leave the collector's generations."""

from __future__ import annotations

import gc
import subprocess
import sys


def test_frozen_objects_are_skipped_and_later_ones_are_not():
    # In a child process: freezing is process-wide and would outlive this test here.
    code = """
import gc
from pagefleet.workers.engine.gc_freeze import freeze_startup_heap

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a

old = cycle()
moved = freeze_startup_heap()
assert moved == gc.get_freeze_count() > 0
assert not any(o is old for o in gc.get_objects())  # frozen: outside every generation
new = cycle()
assert any(o is new for o in gc.get_objects())
del new
assert gc.collect() >= 2  # garbage made after the freeze is still collected
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    assert gc.get_freeze_count() == 0  # this process was left alone
